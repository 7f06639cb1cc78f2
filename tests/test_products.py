"""Products of two branches (gating, bilinear, SwiGLU) and the GLU: the two factors' neurons share
one permutation, the carrying factor keeps its factors, the other takes none; a GLU's Linear is
written as two aligned halves. Bitwise round trips, 20 random float64 actions, negative
controls, refusals naming the node."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters as C
from zoo import make
from checks import TOL, acted_by_graph, assert_round_trip, nodes_of, rel_err


def _acted(model, g, factors=None, perm=None):
    N = g.num_nodes
    a = C.Action(torch.arange(N) if perm is None else perm,
                 torch.ones(N, dtype=torch.float64) if factors is None else factors)
    moved = copy.deepcopy(model)
    moved.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
    return moved


def _scaled(model, g, name, q, index=0):
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, name)[index]] = q
    return _acted(model, g, factors=f)


def _swapped(model, g, names):
    """Swap the first two neurons of each node set in ``names`` (one permutation for all)."""
    perm = torch.arange(g.num_nodes)
    for name in names:
        n = nodes_of(g, name)
        perm[n[0]], perm[n[1]] = n[1], n[0]
    return _acted(model, g, perm=perm)


@pytest.mark.parametrize("name, groups", [
    ("gates", {"g": "perm", "v": "linear", "a": "linear", "b": "perm", "c": "scale",
               "d": "perm", "e": "perm"}),
    ("swiglu", {"w1": "perm", "w3": "linear", "w2": "perm", "g1[0:4]": "linear",
                "g1[4:8]": "perm", "g2[0:3]": "sign", "g2[3:6]": "perm"}),
    ("geglu", {"proj[0:5]": "linear", "proj[5:10]": "perm", "mid": "linear", "p2[0:3]": "sign",
               "p2[3:6]": "scale"}),
])
def test_groups(name, groups):
    g = C.to_graph(*make(name))
    got = {ns["name"]: ns["group"] for ns in g.arch.nodesets}
    assert {k: got[k] for k in groups} == groups


def test_the_carrying_factor_is_the_one_that_lets_more_through():
    g = C.to_graph(*make("gates"))
    muls = [op for op in g.arch.ops if op["op"] == "mul"]
    # sigmoid(g) * v: v; a * b (both linear): a; relu(c) * tanh(d): c (a tie); h * relu(e(h)): h
    assert [op["carry"] for op in muls] == [1, 0, 0, 0]


def test_factors_share_one_permutation_and_glu_halves_pair_position_by_position():
    g = C.to_graph(*make("swiglu"))
    for a, b in (("w1", "w3"), ("g1[0:4]", "g1[4:8]"), ("g2[0:3]", "g2[3:6]")):
        na, nb = nodes_of(g, a), nodes_of(g, b)
        assert torch.equal(g.perm_class[na], g.perm_class[nb])
    gen = torch.Generator().manual_seed(0)
    na, nb = nodes_of(g, "g1[0:4]"), nodes_of(g, "g1[4:8]")
    for _ in range(5):
        act = C.sample_action(g, generator=gen)
        assert torch.equal(act.perm[nb] - nb[0], act.perm[na] - na[0])
    assert [ns["act"] for ns in g.arch.nodesets if ns["name"] in ("g1[4:8]", "g2[3:6]")] == \
        ["sigmoid", "sigmoid"]
    lin = next(op for op in g.arch.ops if op.get("module") == "g1")
    assert lin["split"] == 2 and lin["out_features"] == 8


@pytest.mark.parametrize("name", ["gates", "swiglu", "geglu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise(name, dtype):
    assert_round_trip(*make(name, dtype))


@pytest.mark.parametrize("name", ["gates", "swiglu", "geglu"])
def test_twenty_random_actions_keep_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        by_graph = acted_by_graph(model, g, a)
        assert rel_err(by_graph(x), y) < TOL
        by_rules = a.apply_state_dict(g.arch, model.state_dict())
        for k, v in by_graph.state_dict().items():
            assert torch.equal(by_rules[k], v), k


@pytest.mark.parametrize("name, layer, q", [
    ("swiglu", "w3", 3.0), ("swiglu", "w3", -0.5),          # the linear branch carries
    ("swiglu", "g1[0:4]", -2.0),                              # GLU's first half carries
    ("gates", "v", -4.0), ("gates", "a", 0.25), ("gates", "c", 2.0),
    ("geglu", "proj[0:5]", -3.0), ("geglu", "p2[3:6]", 3.0),    # halves cut by chunk, split
])
def test_a_factor_on_the_carrying_neurons_keeps_the_function(name, layer, q):
    model, x = make(name)
    g = C.to_graph(model, x)
    assert rel_err(_scaled(model, g, layer, q)(x), model(x)) < TOL


@pytest.mark.parametrize("name, layer, q", [
    ("swiglu", "w1", 2.0),           # silu branch
    ("swiglu", "g1[4:8]", 2.0),      # GLU's gate half
    ("swiglu", "g1[4:8]", -1.0),
    ("gates", "b", 2.0),             # bilinear: the second factor does not carry
    ("gates", "g", 0.5),             # the sigmoid gate
    ("gates", "c", -1.0),            # carrying, but through a ReLU
    ("gates", "d", -1.0),            # tanh(d) is odd, but d does not carry
    ("geglu", "proj[5:10]", 2.0),    # the GELU gate half
    ("geglu", "p2[3:6]", -1.0),      # the ReLU half of a split
    ("geglu", "p2[0:3]", 2.0),       # the tanh half of a split
])
def test_controls_a_factor_outside_the_group_changes_the_function(name, layer, q):
    model, x = make(name)
    g = C.to_graph(model, x)
    assert rel_err(_scaled(model, g, layer, q)(x), model(x)) > 1e-6


@pytest.mark.parametrize("name, together, alone", [
    ("swiglu", ["w1", "w3"], ["w3"]),
    ("swiglu", ["w1", "w3"], ["w1"]),
    ("swiglu", ["g1[0:4]", "g1[4:8]"], ["g1[0:4]"]),
    ("swiglu", ["g1[0:4]", "g1[4:8]"], ["g1[4:8]"]),
    ("gates", ["g", "v"], ["v"]),
    ("gates", ["a", "b"], ["b"]),
    ("geglu", ["proj[0:5]", "proj[5:10]"], ["proj[0:5]"]),
])
def test_controls_the_factors_must_share_their_permutation(name, together, alone):
    model, x = make(name)
    g = C.to_graph(model, x)
    assert rel_err(_swapped(model, g, together)(x), model(x)) < TOL
    assert rel_err(_swapped(model, g, alone)(x), model(x)) > 1e-6


def test_halves_read_apart_are_permuted_apart():
    """``a, b = torch.split(h, half, -1)`` read by different activations: each half is its own
    node set, permuted independently (no product joins them)."""
    model, x = make("geglu")
    g = C.to_graph(model, x)
    assert not torch.equal(g.perm_class[nodes_of(g, "p2[0:3]")], g.perm_class[nodes_of(g, "p2[3:6]")])
    for half in ("p2[0:3]", "p2[3:6]"):
        assert rel_err(_swapped(model, g, [half])(x), model(x)) < TOL
    assert [op["index"] for op in g.arch.ops if op["op"] == "half"] == [0, 1, 0, 1]


def test_a_layer_times_itself_is_perm():
    """``h * h`` (a square): the factor and the carrier are one node set, which takes no factor
    (``(q h)^2 = q^2 h^2``) but any permutation."""
    torch.manual_seed(0)

    class Sq(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h * h)

    model = Sq().double().eval()
    x = torch.randn(6, 3, dtype=torch.float64)
    g = C.to_graph(model, x)
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "perm", "fixed"]
    assert torch.equal(C.to_module(g)(x), model(x))
    assert rel_err(_swapped(model, g, ["a"])(x), model(x)) < TOL
    assert rel_err(_scaled(model, g, "a", 2.0)(x), model(x)) > 1e-6


class _M(nn.Module):
    def __init__(self, body, **mods):
        super().__init__()
        self.body = body
        for k, v in mods.items():
            self.add_module(k, v)

    def forward(self, x):
        return self.body(self, x)


@pytest.mark.parametrize("model, shape, where, msg", [
    (_M(lambda s, x: s.o(s.a(x) * s.b(x)[:, :1].flatten(1)), a=nn.Linear(3, 4),
        b=nn.Linear(3, 4), o=nn.Linear(4, 1)), (2, 3), "getitem", "indexing"),
    (_M(lambda s, x: s.o(s.a(x) * s.b(x).mean(1, keepdim=True)), a=nn.Linear(3, 4),
        b=nn.Linear(3, 4), o=nn.Linear(4, 1)), (2, 5, 3), "mul", "broadcasting product"),
    (_M(lambda s, x: s.o(torch.cat([s.a(x), s.b(x)], 1) * s.c(x)), a=nn.Linear(3, 2),
        b=nn.Linear(3, 2), c=nn.Linear(3, 4), o=nn.Linear(4, 1)), (2, 3), "mul",
     "channels of one layer"),
    (_M(lambda s, x: s.o(s.a(x) / s.b(x)), a=nn.Linear(3, 4), b=nn.Linear(3, 4),
        o=nn.Linear(4, 1)), (2, 3), "truediv", "products of two tensors"),
    (_M(lambda s, x: s.o(F.glu(s.c(x), 1).mean(-1)), c=nn.Conv1d(3, 4, 1), o=nn.Linear(2, 1)),
     (2, 3, 5), "glu", "output of a Linear directly"),
    (_M(lambda s, x: s.o(F.glu(s.a(x), 1).mean(1)), a=nn.Linear(3, 4), o=nn.Linear(4, 1)),
     (2, 6, 3), "glu", "output of a Linear directly"),
    (_M(lambda s, x: s.o(s.g(s.d(s.a(x)))), a=nn.Linear(3, 4), d=nn.Dropout(0.1),
        g=nn.GLU(), o=nn.Linear(2, 1)), (2, 3), "g", "output of a Linear directly"),
    (_M(lambda s, x: (lambda h: s.o(s.g(h) + s.b(h)))(s.a(x)), a=nn.Linear(3, 4), g=nn.GLU(),
        b=nn.Linear(4, 2), o=nn.Linear(2, 1)), (2, 3), "g", "only reader"),
    (_M(lambda s, x: s.o(x.chunk(2, -1)[0]), o=nn.Linear(2, 1)), (2, 4), "chunk",
     "equal pieces of a Linear"),
    (_M(lambda s, x: s.o(s.a(x).chunk(4, -1)[0]), a=nn.Linear(3, 6), o=nn.Linear(2, 1)),
     (2, 3), "chunk", "equal pieces of a Linear"),       # 6 features in 4 pieces: unequal
    (_M(lambda s, x: s.o(s.a(x).chunk(2, 1)[0].mean(1)), a=nn.Linear(3, 6),
        o=nn.Linear(6, 1)), (2, 4, 3), "chunk", "equal pieces of a Linear"),
])
def test_refusals_name_the_node(model, shape, where, msg):
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(model.eval(), torch.zeros(*shape))
    text = str(info.value)
    assert where in text and msg in text, text


def test_scalegmn_is_equivariant_on_product_graphs():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("gates", "swiglu", "mlp_relu")
              for s in range(2)]
    mixed = C.batch_graphs(graphs)
    net = scalegmn.build("scalegmn", "invariant", spec=mixed, out_dim=2, hidden=8, layers=2)
    errors = assert_equivariant(net, mixed, n_actions=2)
    assert "linear" in errors or "scale" in errors
    assert_sensitive(net, mixed, "uncoupled")
