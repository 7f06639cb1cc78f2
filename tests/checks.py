"""Small helpers the converter tests share."""
import torch

#: relative error under which an action "keeps the function" (float64)
TOL = 1e-9


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b all zero: the absolute error)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def nodes_of(g, name: str) -> torch.Tensor:
    """Global node ids of the node set called ``name`` in graph ``g``."""
    k = [ns["name"] for ns in g.arch.nodesets].index(name)
    return (g.layer == k).nonzero().squeeze(1)
