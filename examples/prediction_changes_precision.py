"""How much of a trained model's prediction change under random group actions is float32
round-off: the same checkpoint, the same test networks and the same random actions, evaluated
in float32 and in float64 (docs/methods.md section 7.7).

    python examples/prediction_changes_precision.py CHECKPOINT [N] [SCALES...]
    python examples/prediction_changes_precision.py --backward-edges CHECKPOINT [N]

CHECKPOINT: a run's ``checkpoints/best.pt`` (e.g. ``runs/benchmark/zoo_relu/scalegmn-b/seed0/
checkpoints/best.pt`` after ``scalegmn benchmark --suite cpu``); N test networks (default 200);
SCALES: the largest factors r of the rescalings in [1/r, r] (default 10 1000; for sine and tanh
networks the permutation and sign-flip actions are used instead). Prints, per precision and
action, the largest and the median absolute change of the prediction, and the share of networks
counted as changed by ``scalegmn.train.robustness.prediction_changes``.

``--backward-edges`` (a ScaleGMN-B checkpoint): the prediction changes in float32 of *untrained*
models of the checkpoint's config with each ``model.backward_edges`` mode (``reciprocal``:
backward edges carry 1/W; ``division_free``: no reciprocals), seed 0, on its first N test
networks.
"""
from __future__ import annotations

import sys

import torch

from scalegmn.train import robustness as R
from scalegmn.train.loop import Runner


def main(path: str, n: int = 200, scales=(10.0, 1000.0)):
    runner = Runner.from_checkpoint(path)
    runner.cfg.train.progress = False
    test = runner.data["test"][:n]
    settings = [s for s in R.settings_for(test) if s[1] is not None]
    if any(name.startswith("scale") for name, _ in settings):
        settings = [(f"scale {r:g}", (1.0 / r, r)) for r in scales]
    for dtype in (torch.float32, torch.float64):
        runner.model.to(dtype)
        runner.dtype = dtype
        base = R.predictions(runner, test)
        for name, rng in settings:
            d = R.change_sizes(base, R.predictions(runner, test, R._transform(rng, 0)))
            changed = float((d > R.change_tolerance(base)).double().mean())
            print(f"{str(dtype):14s} {name:10s} max |change| {d.max():.2e}  median "
                  f"{d.median():.2e}  changed {100 * changed:.1f} %")


def backward_edge_modes(path: str, n: int = 200):
    import dataclasses
    base = Runner.from_checkpoint(path)
    for mode in ("reciprocal", "division_free"):
        cfg = dataclasses.replace(base.cfg, model=dataclasses.replace(base.cfg.model,
                                                                      backward_edges=mode))
        cfg.train.progress = False
        torch.manual_seed(0)
        runner = Runner(cfg, base.out, dry_run=True, log=lambda *a: None)
        runner.data = {**runner.data, "test": runner.data["test"][:n]}
        changes = R.prediction_changes(runner)
        print(f"backward_edges={mode:14s} untrained, float32: "
              + ", ".join(f"{k} {100 * v:.1f} %" for k, v in changes.items()))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--backward-edges":
        backward_edge_modes(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
        sys.exit(0)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200,
         tuple(float(x) for x in sys.argv[3:]) or (10.0, 1000.0))
