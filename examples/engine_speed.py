"""Sparse vs dense engine at the MNIST-INR workload (SIREN 2-32-32-1, hidden 128, 4 layers,
batch 128), forward and forward+backward, in one run so the ratio is meaningful.

    python examples/engine_speed.py [--backend scalegmn] [--repeats 5] [--profile]
"""
import argparse
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
    args = p.parse_args()
    torch.manual_seed(0)
    graphs = [converters.to_graph(converters.models.Siren((2, 32, 32, 1), output_offset=0.5))
              for _ in range(args.batch)]
    batch = Batch.from_data_list(graphs)
    net = scalegmn.build(args.backend, "invariant", spec=batch, out_dim=10, hidden=args.hidden,
                         layers=args.layers)
    print(f"{args.backend}: {scalegmn.count_parameters(net)['trainable']:,} parameters; "
          f"batch {args.batch} x ({graphs[0].num_nodes} nodes, {graphs[0].num_edges} edges); "
          f"{torch.get_num_threads()} threads")
    res = {}
    for engine in ("sparse", "dense"):
        net.cfg.engine = engine

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
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for engine in ("sparse", "dense"):
            net.cfg.engine = engine
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                net.zero_grad()
                net(batch).sum().backward()
            print(f"--- {engine}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
