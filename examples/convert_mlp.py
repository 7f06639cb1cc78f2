"""Convert an MLP to a parameter graph, inspect it, and go back exactly.

    python examples/convert_mlp.py
"""
import torch
import torch.nn as nn

import converters

model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
graph = converters.to_graph(model)
print(graph)
print(graph.arch.summary())        # per layer: size, role, symmetry group, activation

x = torch.randn(8, 2)
back = converters.to_module(graph)  # exact inverse: same parameters, bitwise equal outputs
assert torch.equal(back(x), model(x))

dense = converters.to_dense(graph)  # per-layer W: (B, out, in, Fe), b: (B, n, Fx)
print([tuple(W.shape) for W in dense.W])
assert torch.allclose(converters.functional_forward(dense, x)[0], model(x), atol=1e-6)
print("round trip exact; functional_forward matches")
