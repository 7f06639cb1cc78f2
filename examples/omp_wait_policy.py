"""OpenMP wait policy: a training step and a SIREN fit with ``OMP_WAIT_POLICY`` unset (the
OpenMP runtime's default: idle threads spin), ``ACTIVE`` and ``PASSIVE`` (idle threads sleep;
the ``scalegmn`` command's default), on an idle machine and with CPU-bound background processes.

    python examples/omp_wait_policy.py [--load 2] [--steps 10] [--fit-steps 100]
    python examples/omp_wait_policy.py --work train --policies unset PASSIVE

Each measurement runs in a fresh process (the policy is read once, when torch loads its OpenMP
runtime). Workloads: one training step (forward, backward, AdamW) of ScaleGMN at the quickstart
config (``mnist_inr_scalegmn``: hidden 32, 3 layers, batch 32) on 32 random SIRENs 2-32-32-1,
median of ``--steps`` after 3 warm-up steps; and fitting 32 SIRENs to MNIST-sized images for
``--fit-steps`` Adam steps (``scalegmn.data.generate.fit_sirens``, as ``scalegmn data`` does).
The load: ``--load`` processes running ``while True: pass``, killed afterwards. See
docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r'''
import json, statistics, sys, time
import numpy as np
import torch
import converters, scalegmn
from scalegmn.train import load_config
work, steps, fit_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
if work == "train":
    cfg = load_config("mnist_inr_scalegmn")
    graphs = [converters.to_graph(converters.models.Siren((2, 32, 32, 1)))
              for _ in range(cfg.data.batch_size)]
    batch = converters.batch_graphs(graphs)
    mcfg = dict(cfg.model.__dict__)
    mcfg.pop("backend"), mcfg.pop("task")
    mcfg["out_dim"] = 10
    model = scalegmn.build(cfg.model.backend, "invariant", spec=batch, **mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.randint(0, 10, (cfg.data.batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(batch), y).backward()
        opt.step()
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": statistics.median(times)}))
else:
    from scalegmn.data.conventions import DWSNETS
    from scalegmn.data.generate import fit_sirens
    images = np.random.default_rng(0).random((32, 28, 28)).astype(np.float32)
    t0 = time.perf_counter()
    fit_sirens(images, list(range(32)), DWSNETS, steps=fit_steps, lr=3e-3, init="dwsnets")
    print(json.dumps({"seconds": time.perf_counter() - t0}))
'''


def measure(work: str, policy: str | None, steps: int, fit_steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, work, str(steps), str(fit_steps)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", type=int, default=2, help="busy background processes")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (median)")
    p.add_argument("--fit-steps", type=int, default=100, help="Adam steps of the SIREN fit")
    p.add_argument("--policies", nargs="+", default=["unset", "ACTIVE", "PASSIVE"])
    p.add_argument("--work", nargs="+", default=["train", "fit"], choices=["train", "fit"])
    args = p.parse_args(argv)
    rows = []
    for loaded in (False, True):
        hogs = []
        if loaded:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.load)]
            time.sleep(1.0)
        try:
            for work in args.work:
                for policy in args.policies:
                    s = measure(work, None if policy == "unset" else policy, args.steps,
                                args.fit_steps)
                    rows.append((f"{args.load} busy" if loaded else "idle", work, policy, s))
                    print(f"{rows[-1][0]:>8s}  {work:<5s}  OMP_WAIT_POLICY={policy:<7s}  "
                          f"{s:8.3f} s", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
