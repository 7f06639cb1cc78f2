"""MAGEP-NFN forward time against depth: our prefix/suffix path products against forming every
pair product W_(s,t) (what the published layer computes), at batch 32, 16 channels, networks
2-64^(L-1)-10 (docs/methods.md 4.4).

    python examples/magep_depth.py [--depths 3 6 12 24] [--repeats 5]
"""
import argparse

import torch
from torch.utils.benchmark import Timer

from scalegmn.nfn import PolyLinear, WeightSpace


def weight_space(L, B=32, C=16, width=64, n0=2, nL=10):
    widths = [n0] + [width] * (L - 1) + [nL]
    W = tuple(torch.randn(B, widths[l + 1], widths[l], C) / widths[l] ** 0.5 for l in range(L))
    b = tuple(torch.randn(B, widths[l + 1], C) for l in range(L))
    return WeightSpace(W, b)


def all_pairs(ws):
    """Every W_(s,t) for 0 <= t < s <= L (the published layer's quadratic work)."""
    M = [None] + [w.permute(0, 3, 1, 2) for w in ws.weights]
    out = {}
    for s in range(1, ws.L + 1):
        out[(s, s - 1)] = M[s]
        for t in range(s - 2, -1, -1):
            out[(s, t)] = out[(s, t + 1)] @ M[t + 1]
    return out


def median_time(fn, repeats):
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.1 * repeats).median


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--depths", type=int, nargs="+", default=[3, 6, 12, 24])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{'L':>3s} {'PolyLinear ms':>14s} {'ms per layer':>13s} {'all-pairs products ms':>22s}")
    for L in args.depths:
        ws = weight_space(L)
        layer = PolyLinear(2, 10, L, 16, 16)
        with torch.no_grad():
            t = median_time(lambda: layer(ws), args.repeats)
            tp = median_time(lambda: all_pairs(ws), args.repeats)
        print(f"{L:>3d} {t * 1e3:>14.1f} {t * 1e3 / L:>13.2f} {tp * 1e3:>22.1f}")


if __name__ == "__main__":
    main()
