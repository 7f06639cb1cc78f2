"""Token-wise layers on ``(batch, *tokens, features)``: the graph is the one of ``(batch,
features)`` (one neuron per feature, weights shared by the tokens), the reshapes of attention code
(heads split and merged, transposes) keep it, bitwise round trips, the dense view, 20 random
float64 actions, negative controls, and refusals naming the node."""
import copy

import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
from zoo import make
from checks import TOL, acted_by_graph, assert_round_trip, nodes_of, rel_err

TOKEN_ZOO = ["tokens_mlp", "tokens_heads", "tokens_conv", "tokens_4d"]


def _seq():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.LayerNorm(6), nn.Linear(6, 5), nn.Tanh(),
                         nn.Linear(5, 2)).double().eval()


@pytest.mark.parametrize("tokens", [(7,), (2, 4)])
def test_a_token_wise_graph_is_the_graph_of_batch_features(tokens):
    model = _seq()
    flat = C.to_graph(model, torch.randn(5, 3, dtype=torch.float64))
    x = torch.randn(5, *tokens, 3, dtype=torch.float64)
    g = C.to_graph(model, x)
    for k in ("x", "edge_index", "edge_attr", "edge_type", "group", "perm_class", "tie", "act",
              "layer", "role", "io_index"):
        assert torch.equal(g[k], flat[k]), k
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "perm", "linear", "sign", "fixed"]
    inp = g.arch.ops[0]
    assert inp["chan_dim"] == 1 + len(tokens) and inp["channels"] == 3
    assert "chan_dim" not in flat.arch.ops[0]            # (batch, features) specs are unchanged
    assert list(g.arch.input["shape"]) == [*tokens, 3] and g.arch.hash != flat.arch.hash
    back = C.to_module(g)
    assert torch.equal(back(x), model(x))
    longer = torch.randn(5, *(t + 3 for t in tokens), 3, dtype=torch.float64)
    assert torch.equal(back(longer), model(longer))     # no token count is recorded


@pytest.mark.parametrize("name", ["tokens_mlp", "tokens_heads", "tokens_4d"])
def test_the_token_count_is_not_part_of_the_architecture(name):
    """One model traced on sequences of two lengths is one architecture (hash, ==, one dense
    view), as a CNN traced on two image sizes is."""
    model, x = make(name)
    longer = torch.randn(x.shape[0], *(s + 2 for s in x.shape[1:-1]), x.shape[-1],
                         dtype=x.dtype)
    g1, g2 = C.to_graph(model, x), C.to_graph(model, longer)
    assert g1.arch.input["shape"] != g2.arch.input["shape"]
    assert g1.arch == g2.arch and g1.arch.hash == g2.arch.hash
    out = C.functional_forward(C.to_dense(Batch.from_data_list([g1, g2])), longer)
    assert rel_err(out[0], model(longer)) < 1e-12


def test_the_guessed_example_input_stays_batch_features():
    g = C.to_graph(_seq())
    assert list(g.arch.input["shape"]) == [3] and "chan_dim" not in g.arch.ops[0]


@pytest.mark.parametrize("name, groups", [
    ("tokens_mlp", ["fixed", "perm", "perm", "perm", "perm", "scale", "scale", "sign", "fixed"]),
    ("tokens_heads", ["fixed", "scale", "sign", "scale", "fixed"]),
    ("tokens_conv", ["fixed", "scale", "perm", "perm", "fixed"]),
    ("tokens_4d", ["fixed", "sign", "fixed"]),
])
def test_groups_of_token_models(name, groups):
    model, x = make(name)
    g = C.to_graph(model, x)
    assert [ns["group"] for ns in g.arch.nodesets] == groups


@pytest.mark.parametrize("name", TOKEN_ZOO)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise(name, dtype):
    assert_round_trip(*make(name, dtype))


@pytest.mark.parametrize("name", TOKEN_ZOO)
def test_twenty_random_actions_keep_the_function_and_the_dense_view_runs(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    for _ in range(20):
        assert rel_err(acted_by_graph(model, g, C.sample_action(g, generator=gen))(x), y) < TOL
    graphs = [C.to_graph(*make(name, seed=s)) for s in range(3)]
    out = C.functional_forward(C.to_dense(Batch.from_data_list(graphs)), x)
    for i in range(3):
        ref = make(name, seed=i)[0](x)
        assert out[i].shape == ref.shape and rel_err(out[i], ref) < 1e-12


def _acted(model, g, factors=None, perm=None):
    N = g.num_nodes
    a = C.Action(torch.arange(N) if perm is None else perm,
                 torch.ones(N, dtype=torch.float64) if factors is None else factors)
    moved = copy.deepcopy(model)
    moved.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
    return moved


@pytest.mark.parametrize("name, layer, q", [
    ("tokens_mlp", "l1", 2.0),      # read by a LayerNorm: perm
    ("tokens_mlp", "a", -1.0),      # ReLU: scale
    ("tokens_mlp", "b", 2.0),       # tanh: sign
    ("tokens_heads", "l1", -1.0),   # ReLU on the heads
    ("tokens_heads", "l2", 0.5),    # tanh on the heads
    ("tokens_conv", "l1", 3.0),     # LayerNorm token by token
])
def test_controls_a_factor_outside_the_group_changes_the_function(name, layer, q):
    model, x = make(name)
    g = C.to_graph(model, x)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, layer)[1]] = q
    assert rel_err(_acted(model, g, f)(x), model(x)) > 1e-6


@pytest.mark.parametrize("name, layer", [("tokens_mlp", "input"), ("tokens_4d", "input"),
                                         ("tokens_heads", "out")])
def test_controls_permuting_inputs_or_outputs_changes_the_function(name, layer):
    model, x = make(name)
    g = C.to_graph(model, x)
    nodes = nodes_of(g, layer)
    perm = torch.arange(g.num_nodes)
    perm[nodes[0]], perm[nodes[1]] = nodes[1], nodes[0]
    assert rel_err(_acted(model, g, perm=perm)(x), model(x)) > 1e-6


def test_control_the_heads_move_with_their_neurons():
    """A permutation of l1's neurons (split into heads and merged back) keeps the function only
    with l2's weight columns permuted alike: permuting l1's rows alone changes it."""
    model, x = make("tokens_heads")
    g = C.to_graph(model, x)
    nodes = nodes_of(g, "l1")
    perm = torch.arange(g.num_nodes)
    perm[nodes] = nodes[torch.tensor([3, 0, 5, 1, 2, 4])]     # across the two heads
    moved = _acted(model, g, perm=perm)
    assert rel_err(moved(x), model(x)) < TOL
    rows_only = copy.deepcopy(model)
    rows_only.l1.load_state_dict(moved.l1.state_dict())
    assert rel_err(rows_only(x), model(x)) > 1e-6


class _Net(nn.Module):
    def __init__(self, body, mods=None):
        super().__init__()
        self.body = body
        self.m = nn.ModuleDict(mods or {})

    def forward(self, x):
        return self.body(self, x)


def _lin(*sizes):
    return {f"l{i}": nn.Linear(a, b) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


REFUSED = [
    # (body, modules, input shape, where, message)
    (lambda s, x: s.m["l0"](s.m["c"](x)), {"c": nn.Conv1d(3, 4, 1), "l0": nn.Linear(5, 2)},
     (2, 3, 5), "m.l0", "reads the last axis"),
    (lambda s, x: s.m["l1"](torch.flatten(s.m["l0"](x), 1)),
     {"l0": nn.Linear(3, 4), "l1": nn.Linear(20, 2)}, (2, 5, 3), "flatten",
     "merges the channel axis"),
    (lambda s, x: s.m["l1"](s.m["l0"](x).view(x.shape[0], -1)),
     {"l0": nn.Linear(3, 4), "l1": nn.Linear(20, 2)}, (2, 5, 3), "view",
     "mixes the channel axes"),
    (lambda s, x: s.m["l1"](s.m["l0"](x).view(2, 5, 2, 2).transpose(2, 3).reshape(2, 5, 4)),
     _lin(3, 4, 2), (2, 5, 3), "reshape", "mixes the channel axes"),
    (lambda s, x: s.m["l0"](x.transpose(0, 1)), _lin(3, 2), (2, 5, 3), "transpose",
     "batch dimension"),
    (lambda s, x: s.m["l1"](s.m["bn"](s.m["l0"](x))), {**_lin(3, 5, 2), "bn": nn.BatchNorm1d(5)},
     (2, 5, 3), "m.bn", "reads channels on axis 1"),
    (lambda s, x: s.m["l1"](s.m["p"](s.m["l0"](x))), {**_lin(3, 4, 2), "p": nn.PReLU(4)},
     (2, 4, 3), "m.p", "reads channels on axis 1"),
    (lambda s, x: s.m["l0"](x)[:, :, 0], _lin(3, 2), (2, 5, 3), "getitem",
     "the channel axis 2"),             # a token is read (x[:, 0]); a feature alone is not
    (lambda s, x: s.m["l0"](x).mean(-1), _lin(3, 2), (2, 5, 3), "mean", "not over the batch or "
     "the channels"),
    (lambda s, x: torch.cat([s.m["l0"](x), s.m["l1"](x)], 1), {"l0": nn.Linear(3, 2),
     "l1": nn.Linear(3, 2)}, (2, 5, 3), "cat", "channel dimension"),
    (lambda s, x: s.m["l1"](s.m["l0"](x).view(2, 5, 2, 2).flatten(1, 2)),
     {"l0": nn.Linear(3, 4), "l1": nn.Linear(2, 2)}, (2, 5, 3), "flatten",
     "merges the channel axis"),
]


@pytest.mark.parametrize("body, mods, shape, where, msg", REFUSED)
def test_refusals_name_the_node(body, mods, shape, where, msg):
    model = _Net(body, mods).eval()
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(model, torch.zeros(*shape))
    text = str(info.value)
    assert where in text and msg in text, text


def test_the_value_record_knows_the_head_blocks():
    """After ``view(B, T, H, D)`` the traced value's channels lie on two axes: a later rule can
    read which neurons form each head."""
    from converters.trace import _Builder, _trace
    model, x = make("tokens_heads")
    gm = _trace(model)
    from converters.trace import _ShapeRecorder
    with torch.no_grad():
        _ShapeRecorder(gm).run(x)
    b = _Builder(gm, model, torch.float64, chan_dim=2)
    b.build()
    split = [v for n, v in b.vals.items() if v is not None and len(v.caxes) > 1]
    assert {(v.caxes, v.csplit) for v in split} == {((2, 3), (2, 3)), ((1, 3), (2, 3))}
    first = next(v for n, v in b.vals.items() if n.name == "view")
    assert first.caxes == (2, 3) and first.csplit == (2, 3)      # (B, T, H=2, D=3)


def test_scalegmn_is_equivariant_on_token_wise_and_softmax_graphs():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    names = ("tokens_mlp", "tokens_heads", "softmax_tokens", "mlp_relu")
    mixed = C.batch_graphs([C.to_graph(*make(n, seed=s)) for n in names for s in range(2)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, hidden=8, layers=2)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert "scale" in errors and "sign" in errors
        assert_sensitive(net, mixed, "uncoupled")


def test_the_simulation_check_refuses_token_wise_networks_by_name():
    """``scalegmn simulate`` models (batch, features) and conv inputs only: a token-wise MLP is
    refused with a clear error (it crashed with an IndexError)."""
    from scalegmn.simulate import check
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"token-wise input of shape \(batch, 6, 3\)"):
        check(model, torch.randn(5, 6, 3, dtype=torch.float64), backward=False)
    check(model, torch.randn(5, 3, dtype=torch.float64), backward=False)   # control
