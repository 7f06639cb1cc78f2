"""How much of a trained model's prediction change under random group actions is float32
round-off: the same checkpoint, the same test networks and the same random actions, evaluated
in float32 and in float64 (docs/methods.md section 7.7).

    python examples/prediction_changes_precision.py CHECKPOINT [N] [SCALES...]

CHECKPOINT: a run's ``checkpoints/best.pt`` (e.g. ``runs/benchmark/zoo_relu/scalegmn-b/seed0/
checkpoints/best.pt`` after ``scalegmn benchmark --suite cpu``); N test networks (default 200);
SCALES: the largest factors r of the rescalings in [1/r, r] (default 10 1000; for sine and tanh
networks the permutation and sign-flip actions are used instead). Prints, per precision and
action, the largest and the median absolute change of the prediction, and the share of networks
counted as changed by ``scalegmn.train.robustness.prediction_changes``.
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
    task = runner.task
    for dtype in (torch.float32, torch.float64):
        runner.model.to(dtype)
        runner.dtype = dtype
        base = torch.cat([task.predictions(o, b) for o, b in zip(*runner.outputs(test))])
        tol = R.CHANGE_TOLERANCE * float(base.double().std())
        for name, rng in settings:
            outs, bs = runner.outputs(test, R._transform(rng, 0))
            moved = torch.cat([task.predictions(o, b) for o, b in zip(outs, bs)])
            d = (moved - base).double().abs().reshape(len(base), -1).amax(1)
            print(f"{str(dtype):14s} {name:10s} max |change| {d.max():.2e}  median "
                  f"{d.median():.2e}  changed {100 * float((d > tol).double().mean()):.1f} %")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200,
         tuple(float(x) for x in sys.argv[3:]) or (10.0, 1000.0))
