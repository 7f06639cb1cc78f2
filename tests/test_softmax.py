"""Softmax and log-softmax over the features or over tokens: every fx form, the neurons they read
are ``perm`` (permutations pass, no factor), bitwise round trips, 20 random float64 actions,
negative controls, refusals naming the node."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters as C
from zoo import make
from checks import TOL, rel_err, nodes_of


class _One(nn.Module):
    """Linear(3, 5) -> ``fn`` -> Linear(5, 2); ``fn`` is a softmax in one of its forms."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.a, self.b = fn, nn.Linear(3, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


FORMS = {
    "nn.Softmax": (lambda: nn.Softmax(dim=-1), False),
    "nn.LogSoftmax": (lambda: nn.LogSoftmax(1), True),
    "F.softmax": (lambda: (lambda h: F.softmax(h, dim=1)), False),
    "F.log_softmax": (lambda: (lambda h: F.log_softmax(h, -1)), True),
    "torch.softmax": (lambda: (lambda h: torch.softmax(h, 1)), False),
    "torch.log_softmax": (lambda: (lambda h: torch.log_softmax(h, dim=-1)), True),
    "method softmax": (lambda: (lambda h: h.softmax(-1)), False),
    "method log_softmax": (lambda: (lambda h: h.log_softmax(dim=1)), True),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_converts_with_a_perm_group_and_round_trips(form):
    factory, log = FORMS[form]
    torch.manual_seed(0)
    model = _One(factory()).double().eval()
    x = torch.randn(6, 3, dtype=torch.float64)
    g = C.to_graph(model, x)
    [op] = [op for op in g.arch.ops if op["op"] == "softmax"]
    assert op["log"] is log and op["dim"] == 1 and op["over"] == "features"
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "perm", "fixed"]
    assert g.arch.nodesets[1]["act"] == ("log_softmax" if log else "softmax")
    assert torch.equal(C.to_module(g)(x), model(x))


@pytest.mark.parametrize("name, groups", [
    ("softmax_mlp", ["fixed", "perm", "scale", "fixed"]),
    ("softmax_tokens", ["fixed", "perm", "perm", "perm", "fixed"]),
])
def test_groups(name, groups):
    g = C.to_graph(*make(name))
    assert [ns["group"] for ns in g.arch.nodesets] == groups
    overs = {op["over"] for op in g.arch.ops if op["op"] == "softmax"}
    assert overs == ({"features"} if name == "softmax_mlp" else {"features", "tokens"})


@pytest.mark.parametrize("name", ["softmax_mlp", "softmax_tokens"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise(name, dtype):
    model, x = make(name, dtype)
    back = C.to_module(C.to_graph(model, x))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("name", ["softmax_mlp", "softmax_tokens"])
def test_twenty_random_actions_keep_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    moved_perm = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        moved = copy.deepcopy(model)
        moved.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
        assert rel_err(moved(x), y) < TOL
        l1 = nodes_of(g, "l1")
        moved_perm |= not torch.equal(a.perm[l1], l1)
    assert moved_perm                      # the softmax's neurons were permuted


@pytest.mark.parametrize("name, layer", [("softmax_mlp", "l1"), ("softmax_tokens", "l1"),
                                         ("softmax_tokens", "l2"), ("softmax_tokens", "l3")])
@pytest.mark.parametrize("q", [2.0, 0.5, -1.0])
def test_controls_a_factor_on_a_softmax_neuron_changes_the_function(name, layer, q):
    """Over the features (l1, l3) and over the tokens (l2): no factor passes."""
    model, x = make(name)
    g = C.to_graph(model, x)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, layer)[0]] = q
    moved = copy.deepcopy(model)
    moved.load_state_dict(C.Action(torch.arange(g.num_nodes), f).apply_state_dict(
        g.arch, model.state_dict()))
    assert rel_err(moved(x), model(x)) > 1e-6


def test_control_a_common_factor_changes_the_function_too():
    """softmax(q z) is not softmax(z) even for one q shared by every neuron (a temperature)."""
    model, x = make("softmax_mlp")
    g = C.to_graph(model, x)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, "l1")] = 2.0
    moved = copy.deepcopy(model)
    moved.load_state_dict(C.Action(torch.arange(g.num_nodes), f).apply_state_dict(
        g.arch, model.state_dict()))
    assert rel_err(moved(x), model(x)) > 1e-6


class _Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x).view(x.shape[0], x.shape[1], 2, 2).softmax(-1)
        return self.b(h.flatten(2))


class _Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.b = nn.Conv1d(1, 2, 1), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.softmax(self.c(x).flatten(1), 1))


@pytest.mark.parametrize("model, shape, where, msg", [
    (_One(nn.Softmax()), (2, 3), "fn", "dim=None"),
    (_One(lambda h: F.softmax(h, 0)), (2, 3), "softmax", "batch dimension"),
    (_One(lambda h: F.softmax(h, 1, dtype=torch.float32)), (2, 3), "softmax", "dtype"),
    (_Heads(), (2, 5, 3), "softmax", "split over (heads)"),
    (_Flat(), (2, 1, 3), "softmax", "flattened feature map"),
])
def test_refusals_name_the_node(model, shape, where, msg):
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(model.eval(), torch.zeros(*shape))
    text = str(info.value)
    assert where in text and msg in text, text
