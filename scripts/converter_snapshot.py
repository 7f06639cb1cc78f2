"""Snapshot every conversion the test zoo and ``converters.models`` make, and compare snapshots.

Used to check that a refactor of ``converters/`` changes no output: run ``dump`` with the old tree
first on ``PYTHONPATH``, then with the new one, then ``compare``::

    git worktree add /tmp/conv_base HEAD
    PYTHONPATH=/tmp/conv_base:/tmp/conv_base/tests python scripts/converter_snapshot.py dump base.pt
    PYTHONPATH=.:tests python scripts/converter_snapshot.py dump new.pt
    python scripts/converter_snapshot.py compare base.pt new.pt

A snapshot holds, per model: the ``ArchSpec`` JSON, every graph tensor, the rebuilt module's
output on a fixed input, the dense view's ``functional_forward`` and a sampled action's graph.
``compare`` requires each to be bitwise equal (and of the same dtype).
"""
from __future__ import annotations

import sys

import torch

FIELDS = ("x", "edge_index", "edge_attr", "edge_mask", "edge_type", "layer", "role", "io_index",
          "group", "perm_class", "tie", "act")


def _models():
    """name -> (model, example input); float64 zoo models, float32 and float64 reference models."""
    import converters as C
    from zoo import ZOO, make
    out = {}
    for name in ZOO:
        for dt in (torch.float64, torch.float32):
            out[f"zoo/{name}/{dt}"] = make(name, dt)
    gen = torch.Generator().manual_seed(0)

    def init(m):
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        return m.eval()

    for act in ("relu", "tanh", "gelu", "silu", "sigmoid", "leaky_relu", "identity"):
        out[f"models/mlp/{act}"] = (init(C.models.mlp([3, 9, 7, 2], act)),
                                    torch.randn(4, 3, generator=gen))
    out["models/siren/dwsnets"] = (init(C.models.Siren((2, 32, 32, 1), 30.0, 0.5, "dwsnets")),
                                   torch.rand(4, 2, generator=gen))
    out["models/siren/nfn"] = (init(C.models.Siren((2, 16, 16, 3), 20.0, 0.0, "nfn")),
                               torch.rand(4, 2, generator=gen))
    out["models/cnn_zoo/relu"] = (init(C.models.cnn_zoo()),
                                  torch.randn(2, 1, 28, 28, generator=gen))
    out["models/cnn_zoo/tanh1"] = (init(C.models.cnn_zoo(stride=1, activation="tanh")),
                                   torch.randn(2, 1, 28, 28, generator=gen))
    torch.manual_seed(0)
    out["models/resnet18"] = (C.models.ResNet18(10).eval(),
                              torch.randn(1, 3, 32, 32, generator=gen))
    return out


def dump(path: str) -> None:
    import converters as C
    snap = {"converters": C.__file__}
    for name, (model, x) in _models().items():
        g = C.to_graph(model, x)
        rec = {"json": g.arch.to_json(), "hash": g.arch.hash}
        for f in FIELDS:
            rec[f] = g[f]
        with torch.no_grad():
            rec["module_out"] = C.to_module(g)(x)
            if g.num_nodes < 5000:
                rec["dense_out"] = C.functional_forward(C.to_dense(g), x)
                a = C.sample_action(g, torch.Generator().manual_seed(1))
                rec["action_perm"], rec["action_q"] = a.perm, a.q
                moved = a.apply(g)
                rec["moved_x"], rec["moved_edge_attr"] = moved.x, moved.edge_attr
        snap[name] = rec
        print(f"{name}: {g.arch.hash} {g.num_nodes} nodes {g.num_edges} edges", flush=True)
    for name, spec in (("arch/mlp", C.arch.mlp([2, 8, 1])), ("arch/siren", C.arch.siren()),
                       ("arch/cnn_zoo", C.arch.cnn_zoo())):
        snap[name] = {"json": spec.to_json(), "hash": spec.hash}
    torch.save(snap, path)


def compare(a_path: str, b_path: str) -> int:
    a, b = torch.load(a_path, weights_only=False), torch.load(b_path, weights_only=False)
    print(f"A: {a.pop('converters')}\nB: {b.pop('converters')}")
    bad = 0
    if set(a) - set(b):
        print("missing in B:", sorted(set(a) - set(b)))
        bad += 1
    if set(b) - set(a):
        print("new in B (not compared):", sorted(set(b) - set(a)))
    n_tensors = 0
    for name in sorted(set(a) & set(b)):
        for key in sorted(set(a[name]) | set(b[name])):
            va, vb = a[name].get(key), b[name].get(key)
            if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
                n_tensors += 1
                same = va.dtype == vb.dtype and va.shape == vb.shape and torch.equal(va, vb)
            else:
                same = va == vb
            if not same:
                print(f"DIFFERENT: {name} {key}")
                bad += 1
    print(f"{len(set(a) & set(b))} models, {n_tensors} tensors compared: "
          f"{'all bitwise equal' if not bad else f'{bad} differences'}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
