"""PReLU, one slope or one per channel: positive scaling, the slope an invariant node feature that
moves with its neuron; exact round trips; controls; ScaleGMN on PReLU graphs."""
import copy

import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
from converters.groups import GROUP_ID, NODE_FEATURES
from zoo import make
from checks import TOL, rel_err, nodes_of

COL = list(NODE_FEATURES).index("prelu_weight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slopes_are_node_features_and_round_trip_bitwise(dtype):
    model, x = make("prelu_mlp", dtype)
    g = C.to_graph(model, x)
    assert g.arch.node_features[COL] == "prelu_weight" and g.x.shape[1] == COL + 1
    # one slope: stored on every neuron it applies to; per neuron: one each
    assert (g.x[nodes_of(g, "l1"), COL] == model.act1.weight).all()
    assert torch.equal(g.x[nodes_of(g, "l2"), COL], model.act2.weight.detach())
    assert (g.x[nodes_of(g, "out"), COL] == 0).all() and (g.x[nodes_of(g, "input"), COL] == 0).all()
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "scale", "scale", "fixed"]
    assert [ns["act"] for ns in g.arch.nodesets] == ["identity", "prelu", "prelu", "identity"]
    back = C.to_module(g)
    assert isinstance(back.act1, nn.PReLU) and back.act1.num_parameters == 1
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and back.state_dict()[k].dtype == v.dtype, k
    assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("name", ["prelu_mlp", "prelu_cnn"])
def test_random_actions_keep_the_function_and_slopes_do_not_scale(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    scaled = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        moved = a.apply(g)
        assert rel_err(C.to_module(moved)(x), y) < TOL
        # the slope moves with its neuron and keeps its value
        assert torch.equal(moved.x[a.perm, COL], g.x[:, COL])
        scaled |= bool((a.q[g.group == GROUP_ID["scale"]] != 1).any())
    assert scaled


def _with_q(model, g, node, q):
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[node] = q
    moved = copy.deepcopy(model)
    moved.load_state_dict(C.Action(torch.arange(g.num_nodes), f).apply_state_dict(
        g.arch, model.state_dict()))
    return moved


@pytest.mark.parametrize("layer", ["l1", "l2"])
def test_controls_a_flip_changes_the_function_a_positive_scale_does_not(layer):
    model, x = make("prelu_mlp")
    g = C.to_graph(model, x)
    node = int(nodes_of(g, layer)[0])
    y = model(x)
    for q in (-1.0, -2.5):
        assert rel_err(_with_q(model, g, node, q)(x), y) > 1e-6, q
    for q in (4.0, 0.3):
        assert rel_err(_with_q(model, g, node, q)(x), y) < TOL, q


def test_control_a_slope_left_behind_by_a_permutation_changes_the_function():
    model, x = make("prelu_mlp")
    g = C.to_graph(model, x)
    nodes = nodes_of(g, "l2")
    perm = torch.arange(g.num_nodes)
    perm[nodes[0]], perm[nodes[1]] = nodes[1], nodes[0]
    a = C.Action(perm, torch.ones(g.num_nodes, dtype=torch.float64))
    moved = a.apply(g)
    assert rel_err(C.to_module(moved)(x), model(x)) < TOL
    assert moved.x[nodes[0], COL] != g.x[nodes[0], COL]        # the slopes were swapped too
    stale = moved.clone()
    stale.x[:, COL] = g.x[:, COL]                              # slopes not moved with neurons
    assert rel_err(C.to_module(stale)(x), model(x)) > 1e-6


def test_a_shared_slope_edited_unequally_is_refused():
    model, x = make("prelu_mlp")
    g = C.to_graph(model, x)
    bad = g.clone()
    bad.x[nodes_of(g, "l1")[2], COL] += 0.5
    with pytest.raises(ValueError, match="'act1.weight' is one value"):
        C.to_state_dict(bad)
    assert torch.equal(C.to_state_dict(bad, strict=False)["act1.weight"], model.act1.weight)


def test_refusals_name_the_prelu():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.p1, self.p2, self.b = nn.Linear(3, 4), nn.PReLU(4), nn.PReLU(), \
                nn.Linear(8, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.cat([self.p1(h), self.p2(h)], 1))

    class AfterCat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c, self.p, self.b = nn.Linear(3, 2), nn.Linear(3, 2), nn.PReLU(4), \
                nn.Linear(4, 1)

        def forward(self, x):
            return self.b(self.p(torch.cat([self.a(x), self.c(x)], 1)))

    with pytest.raises(C.UnsupportedLayerError,
                       match=r"'p2' \(PReLU\).*already feed the PReLU 'p1'"):
        C.to_graph(Twice())
    with pytest.raises(C.UnsupportedLayerError, match=r"'p' \(PReLU\).*concatenation"):
        C.to_graph(AfterCat())


def test_scalegmn_is_equivariant_on_prelu_graphs_mixed_with_others():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("prelu_mlp", "prelu_cnn", "resnet")
              for s in range(2)]
    mixed = C.batch_graphs(graphs)
    assert mixed.x.shape[1] == COL + 1
    same = Batch.from_data_list([C.to_graph(*make("prelu_cnn", seed=s)) for s in range(3)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert "scale" in errors
        assert_sensitive(net, mixed, "uncoupled")
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        assert_equivariant(editor, same, n_actions=2)
        assert_sensitive(editor, same, "unclaimed")
    # the invariant slope feature is read: changing a slope changes the output
    net = scalegmn.build("scalegmn", "invariant", spec=same, out_dim=2, **small).double().eval()
    b = same.clone()
    b.x, b.edge_attr = b.x.double(), b.edge_attr.double()
    out = net(b)
    b.x[:, COL] = b.x[:, COL] * 3
    assert (net(b) - out).abs().max() > 1e-6
