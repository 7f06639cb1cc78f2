"""``scalegmn quickstart``: convert small models, check their symmetries, draw their graphs."""
from __future__ import annotations

from pathlib import Path

import torch

import converters
from converters.draw import draw_graph
from converters.models import Siren, cnn_zoo


def run(out_dir="quickstart_out") -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    models = {"siren": (Siren((2, 16, 16, 1), output_offset=0.5), torch.rand(64, 2) * 2 - 1),
              "cnn_zoo": (cnn_zoo(channels=8), torch.randn(8, 1, 28, 28))}
    for name, (model, x) in models.items():
        model = model.double().eval()
        x = x.double()
        graph = converters.to_graph(model, x)
        print(f"== {name}")
        print(graph.arch.summary())
        back = converters.to_module(graph)
        exact = torch.equal(back(x), model(x))
        action = converters.sample_action(graph)
        moved = action.apply_module(model, x)
        err = ((moved(x) - model(x)).abs().max() / model(x).abs().max()).item()
        print(f"round trip exact: {exact}; a random symmetry action keeps the function "
              f"(relative error {err:.1e})")
        converters.save_graph(out / f"{name}.pt", graph)
        draw_graph(graph, out / f"{name}.png")
        print(f"wrote {out / (name + '.pt')} and {out / (name + '.png')}")
        if not exact or err > 1e-9:
            return 1
    return 0
