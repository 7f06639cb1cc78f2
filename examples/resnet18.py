"""ResNet-18 (11,689,512 parameters) to a parameter graph and back: time and memory.

    python examples/resnet18.py
"""
import resource
import time

import torch

import converters
from converters.models import ResNet18


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
