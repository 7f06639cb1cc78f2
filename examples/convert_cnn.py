"""Convert a small CNN (strides, padding, groups, pooling, flatten) and check a symmetry.

    python examples/convert_cnn.py
"""
import torch
import torch.nn as nn

import converters

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(),
    nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Tanh(),
    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10),
).double().eval()
x = torch.randn(4, 1, 14, 14, dtype=torch.float64)

graph = converters.to_graph(model, x)   # the example input fixes the flatten size
print(graph.arch.summary())
# conv kernels are edge features (3x3 = 9 slots); the flatten gives each channel a 3x3 block

action = converters.sample_action(graph)  # permutations within conv groups, scales, signs
moved = action.apply_module(model, x)
err = (moved(x) - model(x)).abs().max() / model(x).abs().max()
print(f"a random symmetry action changes the outputs by {err:.1e} (relative)")
assert err < 1e-9
