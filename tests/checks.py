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


def assert_round_trip(model, x):
    """``to_module(to_graph(model, x))`` equals ``model`` bitwise (every state-dict entry, its
    dtype, and the output on ``x``). Returns ``(graph, rebuilt module)``."""
    import converters as C
    g = C.to_graph(model, x)
    back = C.to_module(g)
    sd, sd2 = model.state_dict(), back.state_dict()
    assert set(sd) == set(sd2)
    for k, v in sd.items():
        assert torch.equal(sd2[k], v) and sd2[k].dtype == v.dtype, k
    assert torch.equal(back(x), model(x))
    return g, back


def acted_by_graph(model, g, action):
    """A copy of ``model`` holding the parameters of ``action`` applied to its graph ``g``."""
    import copy

    import converters as C
    moved = copy.deepcopy(model)
    moved.load_state_dict(C.to_state_dict(action.apply(g)))
    return moved
