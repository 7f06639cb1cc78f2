"""``scalegmn bench``: speed and memory of each backend and engine on the same inputs.

Every measurement runs in its own subprocess (peak RSS is per process), after warm-up; times are
medians of repeats. Ratios are meaningful only within one run (machines are noisy).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

WORKLOADS = {
    "siren": "SIREN 2-32-32-1 INRs (the MNIST-INR workload)",
    "cnn_zoo": "Small-CNN-Zoo CNNs (4,970 parameters)",
}


def _batch(workload, batch_size, seed=0):
    import converters
    torch.manual_seed(seed)
    if workload == "siren":
        make = lambda: converters.models.Siren((2, 32, 32, 1), output_offset=0.5)
    elif workload == "cnn_zoo":
        make = lambda: converters.models.cnn_zoo()
    else:
        raise ValueError(f"unknown workload {workload!r}; choose from {sorted(WORKLOADS)}")
    return converters.batch_graphs([converters.to_graph(make()) for _ in range(batch_size)])


def measure(backend, engine, workload, batch_size, hidden, layers, repeats, threads) -> dict:
    """One measurement (run inside its own process)."""
    import scalegmn
    if threads:
        torch.set_num_threads(threads)
    batch = _batch(workload, batch_size)
    net = scalegmn.build(backend, "invariant", spec=batch, out_dim=10, hidden=hidden,
                         layers=layers, engine=engine if backend != "mlp" else "auto")

    def fwd():
        with torch.no_grad():
            net(batch)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        net(batch).sum().backward()

    out = {"backend": backend, "engine": engine, "workload": workload, "batch": batch_size,
           "hidden": hidden, "layers": layers, "threads": torch.get_num_threads(),
           **scalegmn.count_parameters(net)}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = statistics.median(times)
        out[f"{name}_graphs_per_s"] = batch_size / out[f"{name}_s"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(backends, engines, workload, batch_size, hidden, layers, repeats, threads, out=None):
    rows = []
    for backend in backends:
        for engine in (engines if backend != "mlp" else ["-"]):
            args = json.dumps([backend, engine, workload, batch_size, hidden, layers, repeats,
                               threads])
            proc = subprocess.run([sys.executable, "-m", "scalegmn.bench", "--one", args],
                                  capture_output=True, text=True, env={**os.environ})
            if proc.returncode != 0:
                rows.append({"backend": backend, "engine": engine,
                             "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines = [f"{WORKLOADS[workload]}, batch {batch_size}, hidden {hidden}, layers {layers}",
             f"{'backend':<12s} {'engine':<7s} {'params':>10s} {'fwd ms':>9s} {'f+b ms':>9s} "
             f"{'graphs/s':>9s} {'peak MiB':>9s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<12s} {r['engine']:<7s} failed: {r['error']}")
            continue
        lines.append(f"{r['backend']:<12s} {r['engine']:<7s} {r['trainable']:>10,d} "
                     f"{r['forward_s'] * 1e3:>9.1f} {r['forward_backward_s'] * 1e3:>9.1f} "
                     f"{r['forward_backward_graphs_per_s']:>9.1f} {r['peak_rss_mib']:>9.0f}")
    table = "\n".join(lines)
    if out:
        from pathlib import Path
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(rows, indent=1))
    return table, rows


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="scalegmn bench")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--backends", nargs="+", default=["scalegmn", "scalegmn-b", "gmn", "mlp"])
    p.add_argument("--engines", nargs="+", default=["sparse", "dense"])
    p.add_argument("--workload", default="siren", choices=sorted(WORKLOADS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return 0
    table, _ = run(args.backends, args.engines, args.workload, args.batch, args.hidden,
                   args.layers, args.repeats, args.threads, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
