"""Sparse vs dense engine at the MNIST-INR workload (SIREN 2-32-32-1, hidden 128, 4 layers,
batch 128): ``scalegmn bench --preset engine-speed``, which this script runs with its options
(each engine measured in its own process, in one run so the ratio is meaningful; counted FLOPs
and their fraction of the matmul peak measured in the same run).

    python examples/engine_speed.py [--repeats 5] [--profile]   # forwarded to the preset
    python examples/engine_speed.py --malloc default --no-prune  # without two of the speed-ups
    python examples/engine_speed.py --rss [--checkpoint] [--engine dense]
                                          # one forward+backward only; peak RSS of this process

See docs/performance.md and ``scalegmn bench -h``.
"""
import argparse
import resource
import sys
import time

import torch

import converters
import scalegmn
from scalegmn.bench import main as bench_main


def one_step(argv):
    """``--rss``: build, then one forward+backward step in this process; its time and the
    process's peak RSS before and after it."""
    p = argparse.ArgumentParser(prog="engine_speed.py --rss")
    p.add_argument("--rss", action="store_true")
    p.add_argument("--backend", default="scalegmn")
    p.add_argument("--engine", default="dense")
    p.add_argument("--checkpoint", action="store_true", help="memory-lean mode")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--readout", default="last_layer")
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("--malloc", default="auto", choices=scalegmn.allocator.SETTINGS,
                   help="auto (as scalegmn train): lean with --checkpoint, else keep")
    args = p.parse_args(argv)
    scalegmn.allocator.apply(scalegmn.allocator.resolve(args.malloc, args.checkpoint))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = converters.batch_graphs([
        converters.to_graph(converters.models.Siren((2, 32, 32, 1), output_offset=0.5))
        for _ in range(args.batch)])
    net = scalegmn.build(args.backend, "invariant", spec=batch, out_dim=10, hidden=args.hidden,
                         layers=args.layers, checkpoint=args.checkpoint, readout=args.readout,
                         prune_last_layer=not args.no_prune, engine=args.engine)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    net(batch).sum().backward()
    print(f"{args.engine} checkpoint={args.checkpoint}: one forward+backward "
          f"{time.perf_counter() - t0:.1f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"({before:.0f} MB before the step)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--rss" in argv:
        return one_step(argv)
    return bench_main(["--preset", "engine-speed"] + argv)


if __name__ == "__main__":
    sys.exit(main())
