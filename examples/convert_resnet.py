"""Convert a small ResNet-style model with BatchNorm and residual additions.

Eval-mode BatchNorm becomes its own node set (gamma on a diagonal edge, running statistics as node
features); residual additions tie the neurons of a stream (one permutation, one factor).

    python examples/convert_resnet.py
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class SmallResNet(nn.Module):
    def __init__(self, c=8, n_classes=10):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.head(x.mean((2, 3)))


if __name__ == "__main__":
    torch.manual_seed(0)
    model = SmallResNet().double()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    graph = converters.to_graph(model, x)
    print(graph.arch.summary())
    assert torch.equal(converters.to_module(graph)(x), model(x))
    for _ in range(5):
        moved = converters.sample_action(graph).apply_module(model, x)
        assert (moved(x) - model(x)).abs().max() < 1e-9 * model(x).abs().max()
    print("round trip exact; 5 random symmetry actions keep the function")
