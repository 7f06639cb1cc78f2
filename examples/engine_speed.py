"""Sparse vs dense engine at the MNIST-INR workload (SIREN 2-32-32-1, hidden 128, 4 layers,
batch 128), forward and forward+backward, in one run so the ratio is meaningful.

    python examples/engine_speed.py [--backend scalegmn] [--repeats 5] [--profile]
    python examples/engine_speed.py --flops          # + GFLOP per step, GFLOP/s, matmul peak
    python examples/engine_speed.py --rss [--checkpoint] [--engine dense]
                                                     # one step only; peak RSS (own process)
    python examples/engine_speed.py --malloc default --no-prune   # without two of the speed-ups

See docs/performance.md.
"""
import argparse
import resource
import statistics
import time

import torch
from torch_geometric.data import Batch

import converters
import scalegmn


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="scalegmn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--flops", action="store_true", help="count FLOPs; measure the mm peak")
    p.add_argument("--checkpoint", action="store_true", help="memory-lean mode")
    p.add_argument("--rss", action="store_true", help="one forward+backward; peak RSS")
    p.add_argument("--engine", default="dense", help="with --rss")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--readout", default="last_layer",
                   help="last_layer (the published MNIST-INR config) or full_graph")
    p.add_argument("--no-prune", action="store_true",
                   help="evaluate the last layer's messages into hidden nodes too")
    p.add_argument("--malloc", default="auto", choices=scalegmn.allocator.SETTINGS,
                   help="scalegmn.allocator policy; auto (as scalegmn train): lean with "
                   "--checkpoint, else keep")
    args = p.parse_args()
    args.malloc = scalegmn.allocator.resolve(args.malloc, args.checkpoint)
    scalegmn.allocator.apply(args.malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    graphs = [converters.to_graph(converters.models.Siren((2, 32, 32, 1), output_offset=0.5))
              for _ in range(args.batch)]
    batch = Batch.from_data_list(graphs)
    net = scalegmn.build(args.backend, "invariant", spec=batch, out_dim=10, hidden=args.hidden,
                         layers=args.layers, checkpoint=args.checkpoint, readout=args.readout,
                         prune_last_layer=not args.no_prune)
    if args.rss:
        net.set_engine(args.engine)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        net(batch).sum().backward()
        print(f"{args.engine} checkpoint={args.checkpoint}: one forward+backward "
              f"{time.perf_counter() - t0:.1f} s; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
              f"({before:.0f} MB before the step)")
        return
    print(f"{args.backend}: {scalegmn.count_parameters(net)['trainable']:,} parameters; "
          f"batch {args.batch} x ({graphs[0].num_nodes} nodes, {graphs[0].num_edges} edges); "
          f"{torch.get_num_threads()} threads; readout {args.readout}"
          f"{'' if args.no_prune else ' (pruned last layer)'}; malloc {args.malloc}")
    res = {}
    for engine in ("sparse", "dense"):
        net.set_engine(engine)

        def fwd():
            with torch.no_grad():
                net(batch)

        def fwd_bwd():
            net.zero_grad()
            net(batch).sum().backward()
        res[engine] = (timed(fwd, args.repeats), timed(fwd_bwd, args.repeats))
        print(f"  {engine:6s} forward {res[engine][0] * 1e3:8.1f} ms   forward+backward "
              f"{res[engine][1] * 1e3:8.1f} ms")
    print(f"  sparse/dense ratio: forward {res['sparse'][0] / res['dense'][0]:.2f}x, "
          f"forward+backward {res['sparse'][1] / res['dense'][1]:.2f}x")
    print(f"  dense forward+backward: {args.batch / res['dense'][1]:.2f} graphs/s")
    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode
        net.set_engine("dense")
        with FlopCounterMode(display=False) as fc:
            net.zero_grad()
            net(batch).sum().backward()
        flops = fc.get_total_flops()
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        peak = 2 * 2048 ** 3 / timed(lambda: torch.mm(a, b), args.repeats) / 1e9
        print(f"  {flops / 1e9:.1f} GFLOP per forward+backward; dense "
              f"{flops / res['dense'][1] / 1e9:.1f} GFLOP/s = "
              f"{flops / res['dense'][1] / 1e9 / peak:.0%} of the 2048^2 float32 mm "
              f"({peak:.1f} GFLOP/s)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for engine in ("sparse", "dense"):
            net.set_engine(engine)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                net.zero_grad()
                net(batch).sum().backward()
            print(f"--- {engine}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
