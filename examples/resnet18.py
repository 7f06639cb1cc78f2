"""ResNet-18 (11.2M parameters) to a parameter graph and back: time and memory.

    python examples/resnet18.py
"""
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import converters


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, n_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, c = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    torch.manual_seed(0)
    model = ResNet18().eval()
    n = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, 64, 64)
    before = rss_mb()
    t0 = time.perf_counter()
    graph = converters.to_graph(model, x)
    t1 = time.perf_counter()
    back = converters.to_module(graph)
    t2 = time.perf_counter()
    graph_mb = sum(t.numel() * t.element_size() for _, t in graph if isinstance(t, torch.Tensor))
    print(f"ResNet-18: {n:,} parameters -> {graph.num_nodes:,} nodes, {graph.num_edges:,} edges, "
          f"edge features {graph.edge_attr.shape[1]} (kernel grid {graph.arch.kernel_shape})")
    print(f"to_graph {t1 - t0:.2f} s, to_module {t2 - t1:.2f} s, graph tensors "
          f"{graph_mb / 2**20:.0f} MiB, peak RSS {rss_mb():.0f} MiB (model alone {before:.0f} MiB)")
    assert torch.equal(back(x), model(x))
    print("round trip exact")
