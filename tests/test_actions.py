"""Group actions keep the network function (float64), and the negative controls show that the
test would catch an over-generous symmetry claim."""
import pytest
import torch
from torch_geometric.data import Batch

import converters as C
from converters.groups import GROUP_ID
from zoo import ZOO, make
from checks import TOL, rel_err


def custom_action(g, q=None, perm=None):
    """An action with the given factors / permutation (identity elsewhere)."""
    N = g.num_nodes
    p = torch.arange(N) if perm is None else perm
    f = torch.ones(N, dtype=torch.float64) if q is None else q
    return C.Action(p, f)


@pytest.mark.parametrize("name", list(ZOO))
def test_random_actions_keep_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    gen = torch.Generator().manual_seed(1)
    y = model(x)
    moved_any = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        moved = a.apply_module(model, x)
        assert rel_err(moved(x), y) < TOL
        # the same action on the graph, converted back, is the same network
        sd = C.to_state_dict(a.apply(g))
        for k, v in moved.state_dict().items():
            assert torch.equal(sd[k], v), k
        moved_any |= not torch.equal(a.apply(g).edge_attr, g.edge_attr)
    assert moved_any, "the actions never changed the parameters"


@pytest.mark.parametrize("name", ["mlp_relu", "resnet", "siren_dws", "cnn_grouped"])
def test_wide_scale_range_and_inverse(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    a = C.sample_action(g, torch.Generator().manual_seed(0), scale_range=(1e-3, 1e3))
    assert rel_err(a.apply_module(model, x)(x), model(x)) < TOL
    back = a.inverse().apply(a.apply(g))
    assert torch.allclose(back.edge_attr, g.edge_attr, rtol=1e-12, atol=1e-14)
    assert torch.allclose(back.x, g.x, rtol=1e-12, atol=1e-14)
    # apply_dense is the same action on the dense view
    d = a.apply_dense(C.to_dense(g))
    assert torch.equal(C.from_dense(d).edge_attr, a.apply(g).edge_attr)


def test_scale_range_one_gives_permutations_and_signs_only():
    g = C.to_graph(*make("mlp_mixed"))
    a = C.sample_action(g, torch.Generator().manual_seed(3), scale_range=(1, 1))
    assert set(a.q.abs().tolist()) == {1.0}
    assert (a.q[g.group == GROUP_ID["scale"]] == 1).all()


def test_actions_respect_groups_ties_and_classes():
    g = C.to_graph(*make("resnet"))
    a = C.sample_action(g, torch.Generator().manual_seed(0))
    fixed = g.group == GROUP_ID["fixed"]
    assert (a.perm[fixed] == torch.nonzero(fixed).squeeze(1)).all() and (a.q[fixed] == 1).all()
    assert (a.q[g.group == GROUP_ID["scale"]] > 0).all()
    # nodes stay in their node set and permutation class
    assert torch.equal(g.layer[a.perm], g.layer) and torch.equal(g.perm_class[a.perm],
                                                                  g.perm_class)
    # tied neurons share the factor and move together
    for t in g.tie.unique():
        if t < 0:
            continue
        members = (g.tie == t).nonzero().squeeze(1)
        assert len(members) >= 2 and (a.q[members] == a.q[members[0]]).all()
        assert len(set(g.tie[a.perm[members]].tolist())) == 1


def test_one_draw_per_graph_in_a_batch():
    graphs = [C.to_graph(*make("mlp_relu", seed=s)) for s in range(4)]
    batch = Batch.from_data_list(graphs)
    a = C.sample_action(batch, torch.Generator().manual_seed(0))
    moved = a.apply(batch).to_data_list()
    perms = set()
    for i, (g, mg) in enumerate(zip(graphs, moved)):
        sel = batch.batch == i
        local = a.perm[sel] - sel.nonzero()[0, 0]
        perms.add(tuple(local.tolist()))
        sub = C.Action(local, a.q[sel])
        assert torch.equal(sub.apply(g).edge_attr, mg.edge_attr)
        m = C.to_module(mg)
        x = torch.randn(4, 3, dtype=torch.float64)
        assert rel_err(m(x), C.to_module(g)(x)) < TOL
    assert len(perms) == 4


# -- negative controls ----------------------------------------------------------------------
def _first(g, group, layer=None):
    sel = g.group == GROUP_ID[group]
    if layer is not None:
        sel &= g.layer == layer
    return int(sel.nonzero()[0, 0])


def _changes(model, x, action):
    return rel_err(action.apply_module(model, x)(x), model(x)) > 1e-4


def test_control_sign_neuron_scaled_by_two():
    model, x = make("mlp_tanh")
    g = C.to_graph(model, x)
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[_first(g, "sign")] = 2.0
    assert _changes(model, x, custom_action(g, q))
    q[_first(g, "sign")] = -1.0  # the claimed group element is fine
    assert not _changes(model, x, custom_action(g, q))


def test_control_gelu_neuron_scaled_by_two():
    model, x = make("mlp_mixed")
    g = C.to_graph(model, x)
    gelu_layer = [k for k, ns in enumerate(g.arch.nodesets) if ns["act"] == "gelu"][0]
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[_first(g, "perm", gelu_layer)] = 2.0
    assert _changes(model, x, custom_action(g, q))


def test_control_scale_neuron_flipped():
    model, x = make("mlp_relu")
    g = C.to_graph(model, x)
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[_first(g, "scale")] = -1.0
    assert _changes(model, x, custom_action(g, q))
    q[_first(g, "scale")] = 7.5
    assert not _changes(model, x, custom_action(g, q))


@pytest.mark.parametrize("role", ["input", "output"])
def test_control_permuting_io_neurons(role):
    model, x = make("mlp_relu")
    g = C.to_graph(model, x)
    nodes = (g.role == C.ROLES.index(role)).nonzero().squeeze(1)
    perm = torch.arange(g.num_nodes)
    perm[nodes[0]], perm[nodes[1]] = nodes[1], nodes[0]
    assert _changes(model, x, custom_action(g, perm=perm))


def test_control_per_neuron_scale_before_layernorm():
    model, x = make("layernorm")
    g = C.to_graph(model, x)
    pre = [ns["name"] for ns in g.arch.nodesets].index("l1")
    assert g.arch.nodesets[pre]["group"] == "perm"
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[_first(g, "perm", pre)] = 3.0
    assert _changes(model, x, custom_action(g, q))


def test_control_scale_one_side_of_a_residual():
    model, x = make("residual_mlp")
    g = C.to_graph(model, x)
    names = [ns["name"] for ns in g.arch.nodesets]
    k = names.index("h2")     # an operand of the residual add, tied to the stream
    node = int((g.layer == k).nonzero()[0, 0])
    assert g.tie[node] >= 0
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[node] = 2.0               # not its tie partners
    a = custom_action(g, q)
    with pytest.raises(ValueError, match="residual"):
        C.to_state_dict(a.apply(g))   # the identity edge is no longer 1
    sd = C.to_state_dict(a.apply(g), strict=False)
    moved = type(model)().double()
    moved.load_state_dict(sd)
    assert rel_err(moved.eval()(x), model(x)) > 1e-4


def test_control_permutation_across_conv_groups():
    model, x = make("cnn_grouped")
    g = C.to_graph(model, x)
    k = [ns["name"] for ns in g.arch.nodesets].index("c1")   # feeds a groups=3 conv
    nodes = (g.layer == k).nonzero().squeeze(1)
    assert len(set(g.perm_class[nodes].tolist())) == 3
    # swapping two channels inside a group is a symmetry, across groups is not
    assert g.perm_class[nodes[0]] == g.perm_class[nodes[1]] != g.perm_class[nodes[2]]
    inside = torch.arange(g.num_nodes)
    inside[nodes[0]], inside[nodes[1]] = nodes[1], nodes[0]
    assert not _changes(model, x, custom_action(g, perm=inside))
    across = torch.arange(g.num_nodes)
    across[nodes[0]], across[nodes[2]] = nodes[2], nodes[0]
    with pytest.raises(ValueError, match="structure"):
        custom_action(g, perm=across).apply(g)


def test_control_sign_flip_before_maxpool():
    model, x = make("cnn_grouped")
    g = C.to_graph(model, x)
    k = [ns["name"] for ns in g.arch.nodesets].index("c3")   # identity act, then max-pool
    assert g.arch.nodesets[k]["group"] == "scale"
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[int((g.layer == k).nonzero()[0, 0])] = -1.0
    assert _changes(model, x, custom_action(g, q))


def test_control_batchnorm_absorption_must_use_gamma():
    """Scaling a pre-BN channel is exact through (gamma / q, mean * q); the 'obvious' (mean * q,
    var * q^2) absorption is not (docs/design.md 2.1)."""
    model, x = make("resnet")
    g = C.to_graph(model, x)
    pre = [ns["name"] for ns in g.arch.nodesets].index("stem")
    assert g.arch.nodesets[pre]["group"] == "linear"
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[int((g.layer == pre).nonzero()[0, 0])] = -4.0
    assert not _changes(model, x, custom_action(g, q))
    wrong = {k: v.clone() for k, v in model.state_dict().items()}
    wrong["stem.weight"][0] *= 4.0
    wrong["bn.running_mean"][0] *= 4.0
    wrong["bn.running_var"][0] *= 16.0
    bad = make("resnet")[0]
    bad.load_state_dict(wrong)
    assert rel_err(bad(x), model(x)) > 1e-7
