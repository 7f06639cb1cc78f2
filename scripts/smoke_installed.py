"""Smoke test of an installed toolkit (a wheel in a fresh virtual environment).

Run from a folder outside the source tree; fails unless the packages imported are the installed
ones. Converts a model, builds and runs every backend once, loads a shipped config, converts
ResNet-18 and runs ``scalegmn --help``.

    python smoke_installed.py SOURCE_TREE    # outside the checkout, after `pip install *.whl`
"""
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn

import converters
import scalegmn
from scalegmn.train.config import list_configs, load_config


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1]).resolve()
    for pkg in (converters, scalegmn):
        where = Path(pkg.__file__).resolve()
        if source in where.parents:
            raise SystemExit(f"{pkg.__name__} was imported from the source tree ({where}), "
                             "not from the installed wheel: run this from outside the checkout")
    print(f"scalegmn {scalegmn.__version__} from {Path(scalegmn.__file__).parent}")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    graph = converters.to_graph(model)
    x = torch.randn(4, 2)
    assert torch.equal(converters.to_module(graph)(x), model(x)), "round trip not exact"
    batch = converters.batch_graphs([graph, converters.sample_action(graph).apply(graph)])
    for name in scalegmn.backends():
        net = scalegmn.build(name, "invariant", spec=graph, out_dim=3, hidden=8, layers=1)
        out = net(batch)
        assert out.shape == (2, 3) and torch.isfinite(out).all(), (name, out)
        print(f"  backend {name:13s} ok, output {tuple(out.shape)}")

    names = list_configs()
    cfg = load_config(names[0])
    print(f"  {len(names)} shipped configs; loaded {names[0]!r} (backend {cfg.model.backend})")
    big = converters.to_graph(converters.models.ResNet18().eval(), torch.randn(1, 3, 32, 32))
    print(f"  ResNet-18: {big.num_nodes} nodes, {big.num_edges} edges")

    exe = Path(sys.executable).with_name("scalegmn")
    help_text = subprocess.run([str(exe), "--help"], check=True, capture_output=True,
                               text=True).stdout
    assert "usage" in help_text.lower(), help_text
    print("  scalegmn --help ok")
    print("installed package: smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
