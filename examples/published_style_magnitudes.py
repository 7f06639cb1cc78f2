"""Magnitudes at initialisation of ScaleGMN with our options and with the published-style ones
(docs/methods.md section 7.5): the embedded inputs and the states per node set after every
layer, how much the readout's sign invariant and the logits depend on the input network, and the
gradient norms of the first training steps.

    python examples/published_style_magnitudes.py [DATA]

DATA: a folder holding ``mnist-inrs/`` (default: the cached data set of ``scalegmn benchmark``,
``~/.cache/scalegmn/benchmark/mnist-inrs-5000``). Reads 32 training INRs; about 20 s on one core.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import converters
import scalegmn
from converters.groups import ROLES
from scalegmn.train import load_config
from scalegmn.train.loop import load_splits

VARIANTS = {
    "ours": {},
    "ours + init: torch_default": {"init": "torch_default"},
    "ours + data_scale: false": {"data_scale": False},
    "published style": {"layer_scales": False, "data_scale": False, "init": "torch_default"},
}


def rms(t: torch.Tensor) -> float:
    return float(t.detach().pow(2).mean().sqrt())


def main(data: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config("mnist_inr_scalegmn", [f"data.path={data}", "data.limit=32"])
    train = load_splits(cfg, progress=False)["train"]
    example, b = converters.batch_graphs(train[:2]), converters.batch_graphs(train[:32])
    b.x, b.edge_attr = b.x.float(), b.edge_attr.float()
    sets = int(b.layer.max()) + 1
    dst = b.layer[b.edge_index[1]]
    hidden = b.role == ROLES.index("hidden")
    print("raw median |bias| per node set:",
          " ".join(f"{float(b.x[b.layer == k, 0].abs().median()):.3g}" for k in range(sets)))
    print("raw median |W| per node set entered:",
          " ".join(f"{float(b.edge_attr[dst == k][b.edge_mask[dst == k]].abs().median()):.3g}"
                   for k in range(1, sets)))
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        net = scalegmn.build("scalegmn", "invariant", spec=example, out_dim=10, hidden=32,
                             layers=3, **options)
        print(f"\n{name}")
        out, states = net(b, return_states=True)
        for t, (h, e, _) in enumerate(states):
            print(f"  {'embedded' if t == 0 else f'layer {t}':8s} h rms per node set "
                  + " ".join(f"{rms(h[b.layer == k]):.3g}" for k in range(sets))
                  + " | e rms per node set entered "
                  + " ".join(f"{rms(e[dst == k]):.3g}" for k in range(1, sets)))
        with torch.no_grad():
            inv = net.readout.read_inv["sign"]
            h = states[-1][0][hidden]
            r, r0 = inv(h), inv(torch.zeros_like(h[:1]))
            rel = float(((r - r0).norm(dim=1) / r0.norm()).median())
        print(f"  readout sign invariant of hidden nodes: |inv(h) - inv(0)| / |inv(0)| = "
              f"{rel:.2e} (median; |h| median {float(h.norm(dim=1).median()):.3g})")
        print(f"  logits: std over networks {float(out.detach().std(0).mean()):.3g} "
              f"(rms {rms(out):.3g})")
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
        for step in range(2):
            bb = converters.batch_graphs(train[16 * step:16 * step + 16])
            bb.x, bb.edge_attr = bb.x.float(), bb.edge_attr.float()
            opt.zero_grad()
            loss = F.cross_entropy(net(bb), bb.y.view(-1).long())
            loss.backward()
            norm = {part: sum(float(p.grad.pow(2).sum()) for p in getattr(net, part).parameters()
                              if p.grad is not None) ** 0.5
                    for part in ("embedding", "layers", "readout")}
            print(f"  step {step}: loss {loss.item():.4f}, gradient norms "
                  + ", ".join(f"{k} {v:.2g}" for k, v in norm.items()))
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1
         else Path.home() / ".cache" / "scalegmn" / "benchmark" / "mnist-inrs-5000")
