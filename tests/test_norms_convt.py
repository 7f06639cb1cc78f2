"""GroupNorm, InstanceNorm, RMSNorm, ConvTranspose and eval-mode RReLU: the group of every node
set (docs/design.md 3.5), 20 random actions keep the function (float64, relative 1e-9), factors
and permutations outside the declared group change it, the transposed weight sits on the right
edges, refusals name the culprit, and ScaleGMN is equivariant on these graphs."""
import copy

import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
from converters.groups import GROUP_ID
from converters.layout import layout
from zoo import make
from checks import TOL, rel_err, nodes_of


#: zoo model -> [(node set, group, perm_cuts)] in node-set order
GROUPS = {
    # gn1 = GroupNorm(3, 6): 3 groups of 2, no factor; gn2 = GroupNorm(6, 6): one channel per
    # group, sign flips, all permutations; gn3 = GroupNorm(2, 4) without affine: in place on c3;
    # gn4 = GroupNorm(1, 4) without affine: one group, all permutations
    "groupnorm_cnn": [("input", "fixed", ()), ("c1", "perm", (2, 4)), ("gn1", "scale", (2, 4)),
                      ("c2", "sign", ()), ("gn2", "sign", ()), ("c3", "perm", (2,)),
                      ("c4", "perm", ()), ("fc", "fixed", ())],
    "groupnorm_mlp": [("input", "fixed", ()), ("l1", "perm", (3,)), ("gn1", "scale", (3,)),
                      ("l2", "sign", ()), ("out", "fixed", ())],
    # in1 affine (then ReLU), in2 without affine read by a conv, in3 affine (then tanh)
    "instnorm_cnn": [("input", "fixed", ()), ("c1", "sign", ()), ("in1", "scale", ()),
                     ("c2", "sign", ()), ("c3", "sign", ()), ("in3", "sign", ()),
                     ("fc", "fixed", ())],
    "instnorm_1d": [("input", "fixed", ()), ("c1", "sign", ()), ("in1", "scale", ()),
                    ("c2", "sign", ()), ("fc", "fixed", ())],
    "rmsnorm_mlp": [("input", "fixed", ()), ("l1", "sign", ()), ("n1", "scale", ()),
                    ("l2", "sign", ()), ("l3", "sign", ()), ("out", "fixed", ())],
    # t1 has groups=2 (cuts its input c1 and its output); t2 is read by t3: any factor
    "convt_cnn": [("input", "fixed", ()), ("c1", "scale", (2,)), ("t1", "sign", (3,)),
                  ("t2", "linear", ()), ("t3", "scale", ()), ("fc", "fixed", ())],
    # t1 -> InstanceNorm without affine -> ReLU: a flip would pass the norm but not the ReLU
    "convt_1d": [("input", "fixed", ()), ("t1", "perm", (2,)), ("t2", "linear", (1,)),
                 ("fc", "fixed", ())],
    "convt_3d": [("input", "fixed", ()), ("c1", "scale", ()), ("t1", "sign", ()),
                 ("in1", "scale", ()), ("fc", "fixed", ())],
    # token-wise (batch, tokens, features): n1 over each token's features
    "rmsnorm_tokens": [("input", "fixed", ()), ("l1", "sign", ()), ("n1", "sign", ()),
                       ("out", "fixed", ())],
    "rrelu_mlp": [("input", "fixed", ()), ("0", "scale", ()), ("2", "scale", ()),
                  ("4", "fixed", ())],
}


def _acted(model, g, a):
    """``model`` with its state dict under action ``a`` (by the op rules)."""
    moved = copy.deepcopy(model)
    moved.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
    return moved


def _factor(g, nodes, q):
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes] = q
    return C.Action(torch.arange(g.num_nodes), f)


def _swap(g, i, j):
    """Swap nodes ``i`` and ``j`` (and nothing else)."""
    p = torch.arange(g.num_nodes)
    p[i], p[j] = j, i
    return C.Action(p, torch.ones(g.num_nodes, dtype=torch.float64))


def _swap_aligned(g, names, i, j):
    """Swap positions ``i`` and ``j`` in each node set of ``names`` (aligned sets move as one)."""
    p = torch.arange(g.num_nodes)
    for n in names:
        nodes = nodes_of(g, n)
        p[nodes[i]], p[nodes[j]] = nodes[j], nodes[i]
    return C.Action(p, torch.ones(g.num_nodes, dtype=torch.float64))


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_node_set_gets_its_derived_group(name):
    g = C.to_graph(*make(name))
    got = [(ns["name"], ns["group"], tuple(ns["perm_cuts"])) for ns in g.arch.nodesets]
    assert got == GROUPS[name]


@pytest.mark.parametrize("name", list(GROUPS))
def test_twenty_random_actions_keep_the_function(name):
    """And the actions use the group: sign flips, scales and permutations inside each block."""
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    flipped = permuted = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(_acted(model, g, a)(x), y) < TOL
        assert rel_err(C.to_module(a.apply(g))(x), y) < TOL
        flipped |= bool((a.q < 0).any())
        permuted |= not torch.equal(a.perm, torch.arange(g.num_nodes))
        for c in g.perm_class.unique():      # blocks stay whole (they may move onto each other)
            if c >= 0:
                assert len(g.perm_class[a.perm[g.perm_class == c]].unique()) == 1
    assert permuted
    assert flipped == any(grp in ("sign", "linear") for _, grp, _ in GROUPS[name])


def test_groupnorm_controls():
    """Per-channel factors before a GroupNorm of 2-channel groups change the function (a scale,
    a flip, and even a common positive factor on a whole group, through eps); a permutation across
    groups changes it, one inside a group does not, and moving whole groups does not either
    (declared: ``blocks``). Flipping a whole group is a symmetry too, but not declared."""
    model, x = make("groupnorm_cnn")
    g = C.to_graph(model, x)
    y = model(x)
    c1 = nodes_of(g, "c1")
    for nodes, q in ((c1[0], 2.0), (c1[0], 0.5), (c1[0], -1.0), (c1[:2], 3.0), (c1[:2], -0.5)):
        assert rel_err(_acted(model, g, _factor(g, nodes, q))(x), y) > 1e-6, (nodes, q)
    # one flip shared by a whole group is a symmetry, but not one per channel: not declared
    assert rel_err(_acted(model, g, _factor(g, c1[:2], -1.0))(x), y) < TOL
    assert g.group[c1[0]] == GROUP_ID["perm"]
    assert rel_err(_acted(model, g, _swap_aligned(g, ["c1", "gn1"], 1, 2))(x), y) > 1e-6
    assert rel_err(_acted(model, g, _swap_aligned(g, ["c1", "gn1"], 0, 1))(x), y) < TOL
    whole = _swap_aligned(g, ["c1", "gn1"], 0, 2)
    whole.perm = _swap_aligned(g, ["c1", "gn1"], 1, 3).perm[whole.perm]
    assert rel_err(_acted(model, g, whole)(x), y) < TOL            # groups (0,1) <-> (2,3)
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    assert dict(recs["c1"]["blocks"]) == dict(recs["gn1"]["blocks"]) == {"id": 0, "size": 2}
    assert len({int(g.perm_class[c1[i]]) for i in range(6)}) == 3  # one class per group
    # one channel per group (gn2): a flip is absorbed by -gamma, a scale is not
    c2 = nodes_of(g, "c2")
    assert rel_err(_acted(model, g, _factor(g, c2[1], -1.0))(x), y) < TOL
    for q in (2.0, 0.5, -3.0):
        assert rel_err(_acted(model, g, _factor(g, c2[1], q))(x), y) > 1e-6, q
    # without affine (gn3 on c3): permutations across its 2 groups change the function
    assert rel_err(_acted(model, g, _swap(g, int(nodes_of(g, "c3")[1]),
                                          int(nodes_of(g, "c3")[2])))(x), y) > 1e-6


def _groups_after(a, g, name, d):
    """Where each block of ``d`` channels of node set ``name`` lands under ``a`` (a tuple);
    fails unless every block moves whole."""
    nodes = nodes_of(g, name)
    to = ((a.perm[nodes] - nodes[0]) // d).reshape(-1, d)
    assert (to == to[:, :1]).all(), f"a group of {name} is split: {to.tolist()}"
    return tuple(to[:, 0].tolist())


def test_whole_groups_are_sampled_and_whole_group_flips_are_not():
    """Sampled actions move whole GroupNorm groups (every order of gn1's 3 groups, c1 and gn1
    alike; both orders of gn3's 2 groups, independently), composed with permutations inside the
    groups, and keep the function. A whole group's flip keeps it too (the group's mean flips,
    its variance does not: ``-gamma`` or the next layer absorbs it) but the per-neuron factor
    vocabulary cannot say "flip together": never sampled."""
    model, x = make("groupnorm_cnn")
    g = C.to_graph(model, x)
    y = model(x)
    gen = torch.Generator().manual_seed(0)
    seen, seen3, inside = set(), set(), False
    c1 = nodes_of(g, "c1")
    for i in range(60):
        a = C.sample_action(g, generator=gen)
        moves = _groups_after(a, g, "c1", 2)
        assert moves == _groups_after(a, g, "gn1", 2)
        seen.add(moves)
        seen3.add((moves, _groups_after(a, g, "c3", 2)))
        inside |= bool(((a.perm[c1] - c1[0]) % 2 != torch.arange(6) % 2).any())
        assert bool((a.q[c1] == 1).all())
        if i < 10:
            assert rel_err(_acted(model, g, a)(x), y) < TOL
    assert len(seen) == 6 and len(seen3) == 12 and inside
    # whole-group flips: with affine (c1 -> gn1 -> ReLU) and without (c3 -> gn3 -> c4)
    assert rel_err(_acted(model, g, _factor(g, c1[2:4], -1.0))(x), y) < TOL
    assert rel_err(_acted(model, g, _factor(g, nodes_of(g, "c3")[:2], -1.0))(x), y) < TOL


def test_group_moves_are_not_declared_when_another_op_cuts_the_channels():
    """A grouped convolution before a GroupNorm cuts the channels itself: moving the norm's
    groups would move the convolution's output groups, whose edges do not map onto edges. No
    block moves there (permutations inside the groups remain); without it, block moves."""
    for groups, declared in ((2, False), (1, True)):
        model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=groups), nn.GroupNorm(2, 4),
                              nn.Conv2d(4, 2, 1)).double()
        g = C.to_graph(model, torch.randn(2, 2, 5, 5, dtype=torch.float64))
        assert ("blocks" in g.arch.nodesets[1]) == declared
        assert tuple(g.arch.nodesets[1]["perm_cuts"]) == (2,)


def test_instancenorm_controls():
    """A channel's own statistics remove a positive factor only up to eps: any |q| != 1 changes
    the function, q = -1 does not (with gamma: -gamma absorbs it; without: its consumer does)."""
    model, x = make("instnorm_cnn")
    g = C.to_graph(model, x)
    y = model(x)
    for layer in ("c1", "c2"):            # c1 feeds an affine InstanceNorm, c2 one without
        n = nodes_of(g, layer)[1]
        assert rel_err(_acted(model, g, _factor(g, n, -1.0))(x), y) < TOL, layer
        for q in (3.0, 0.3, -2.0):
            assert rel_err(_acted(model, g, _factor(g, n, q))(x), y) > 1e-6, (layer, q)
    # the default eps (1e-5) too: c3 feeds InstanceNorm2d(3, affine=True)
    n = nodes_of(g, "c3")[0]
    assert rel_err(_acted(model, g, _factor(g, n, 4.0))(x), y) > 1e-8
    # a flip before an InstanceNorm without affine followed by a ReLU is not absorbed
    model, x = make("convt_1d")
    g = C.to_graph(model, x)
    assert rel_err(_acted(model, g, _factor(g, nodes_of(g, "t1")[0], -1.0))(x), model(x)) > 1e-6


def test_rmsnorm_controls():
    """mean(x^2) ignores signs: a flip passes, a magnitude change of one channel does not."""
    model, x = make("rmsnorm_mlp")
    g = C.to_graph(model, x)
    y = model(x)
    for layer in ("l1", "l2"):            # l1 feeds RMSNorm with weight, l2 one without
        n = nodes_of(g, layer)[2]
        assert rel_err(_acted(model, g, _factor(g, n, -1.0))(x), y) < TOL, layer
        for q in (2.0, 0.5, -3.0):
            assert rel_err(_acted(model, g, _factor(g, n, q))(x), y) > 1e-6, (layer, q)


def test_rrelu_controls_and_training_mode_refused():
    model, x = make("rrelu_mlp")
    g = C.to_graph(model, x)
    y = model(x)
    n = nodes_of(g, "0")[0]
    assert rel_err(_acted(model, g, _factor(g, n, 5.0))(x), y) < TOL
    for q in (-1.0, -2.0):
        assert rel_err(_acted(model, g, _factor(g, n, q))(x), y) > 1e-6, q
    assert g.arch.ops[2]["params"] == {"lower": 0.1, "upper": 0.3}
    with pytest.raises(C.UnsupportedLayerError,
                       match=r"'1' \(RReLU\): in training mode it draws a random negative slope "
                             r".*call model.eval\(\)"):
        C.to_graph(model.train(), x)
    assert model.training                  # left in its mode


def test_conv_transpose_edges_hold_the_transposed_weight():
    """The edge ``c -> o`` holds ``weight[c, o mod (out / groups)]`` (PyTorch keeps input channels
    first), so a symmetry factor of input channel c divides that slice. A layout that read the
    weight as (out, in/groups, *k) would still round-trip but put values on the wrong edges."""
    model, x = make("convt_cnn")
    g = C.to_graph(model, x)
    W = model.t1.weight                   # (4, 3, 3, 3): in 4, out 6, groups 2
    src_nodes, dst_nodes = nodes_of(g, "c1"), nodes_of(g, "t1")
    seen = 0
    for e in range(g.num_edges):
        s, d = int(g.edge_index[0, e]), int(g.edge_index[1, e])
        if d in dst_nodes:
            c = int((src_nodes == s).nonzero())
            o = int((dst_nodes == d).nonzero())
            assert c // 2 == o // 3                                  # same group
            assert torch.equal(g.edge_attr[e], W[c, o % 3].reshape(-1))
            seen += 1
    assert seen == 6 * 2
    dense = C.to_dense(Batch.from_data_list([g, C.to_graph(*make("convt_cnn", seed=1))]))
    assert torch.equal(dense.params()["t1.weight"][0], W)
    lay = layout(g.arch)
    blk = next(b for b in lay.blocks if b.op.get("module") == "t1")
    assert torch.equal(blk.param_from_edges(blk.edges_from_param(W)), W)
    # a permutation across t1's groups does not map the graph's edges onto edges
    with pytest.raises(ValueError, match="does not preserve the graph structure"):
        _swap(g, int(dst_nodes[0]), int(dst_nodes[3])).apply(g)
    with pytest.raises(ValueError, match="across its groups"):
        _swap(g, int(dst_nodes[0]), int(dst_nodes[3])).apply_state_dict(g.arch,
                                                                        model.state_dict())


def test_conv_transpose_absorbs_any_input_factor_and_its_output_any_consumer_allows():
    model, x = make("convt_cnn")
    g = C.to_graph(model, x)
    y = model(x)
    t2 = nodes_of(g, "t2")
    a = _factor(g, t2, torch.tensor([-3.0, 0.2, 7.0], dtype=torch.float64))
    assert rel_err(_acted(model, g, a)(x), y) < TOL
    # t1 feeds a tanh: a scale is outside its group and changes the function
    assert rel_err(_acted(model, g, _factor(g, nodes_of(g, "t1")[0], 2.0))(x), y) > 1e-6


@pytest.mark.parametrize("model, example, where, what", [
    (nn.Sequential(nn.Conv1d(2, 3, 1), nn.InstanceNorm1d(3, track_running_stats=True),
                   nn.Flatten(), nn.Linear(12, 1)), torch.zeros(2, 2, 4),
     "'1' (InstanceNorm1d)", "track_running_stats=True"),
    (nn.Sequential(nn.Linear(3, 4), nn.InstanceNorm1d(4, affine=True), nn.Linear(4, 1)),
     torch.zeros(4, 3), "'1' (InstanceNorm1d)", "expects (batch, channels, 1 spatial dims)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(3), nn.Flatten(), nn.Linear(36, 1)),
     torch.zeros(2, 1, 5, 5), "'1' (InstanceNorm2d)", "num_features=3 but its input has 4"),
    (nn.Sequential(nn.Linear(4, 4), nn.RMSNorm([3, 4]), nn.Linear(4, 1)), torch.zeros(2, 3, 4),
     "'1' (RMSNorm)", "only RMSNorm over the features"),
    (nn.Sequential(nn.Conv1d(3, 4, 1), nn.RMSNorm(4), nn.Flatten(), nn.Linear(16, 1)),
     torch.zeros(2, 3, 4), "'1' (RMSNorm)", "reads the last axis"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.GroupNorm(2, 36), nn.Linear(36, 1)),
     torch.zeros(2, 1, 5, 5), "'2' (GroupNorm)", "no cat/flatten"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).train(),
     torch.zeros(2, 3), "'1' (BatchNorm1d)", "batch's statistics; the graph holds the eval-mode "
                                              "function: call model.eval()"),
])
def test_refusals_name_the_layer_and_say_why(model, example, where, what):
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(model, example)
    assert where in str(info.value) and what in str(info.value), str(info.value)


def test_conv_transpose_with_output_size_and_groupnorm_after_cat_are_refused():
    class OutputSize(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.ConvTranspose2d(2, 2, 3, stride=2)

        def forward(self, x):
            return self.t(x, output_size=[9, 9]).mean((2, 3))

    class AfterCat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.gn = nn.Linear(3, 2), nn.Linear(3, 2), nn.GroupNorm(2, 4)

        def forward(self, x):
            return self.gn(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(C.UnsupportedLayerError, match=r"'t' \(ConvTranspose2d\).*one tensor"):
        C.to_graph(OutputSize(), torch.zeros(1, 2, 4, 4))
    with pytest.raises(C.UnsupportedLayerError, match=r"'gn' \(GroupNorm\).*no cat/flatten"):
        C.to_graph(AfterCat(), torch.zeros(2, 3))


def test_per_sample_norms_convert_in_training_mode():
    """GroupNorm, InstanceNorm (no running statistics) and RMSNorm compute one function in both
    modes: a training-mode model converts, bitwise, and stays in training mode."""
    for name in ("groupnorm_cnn", "instnorm_cnn", "rmsnorm_mlp"):
        model, x = make(name)
        model.train()
        g = C.to_graph(model, x)
        assert model.training and torch.equal(C.to_module(g)(x), model(x)), name


def test_scalegmn_is_equivariant_on_the_new_layers():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    names = ("groupnorm_cnn", "instnorm_cnn", "convt_cnn", "rmsnorm_mlp", "groupnorm_mlp",
             "rrelu_mlp")
    mixed = C.batch_graphs([C.to_graph(*make(n)) for n in names])
    same = Batch.from_data_list([C.to_graph(*make("convt_cnn", seed=s)) for s in range(3)])
    other = C.batch_graphs([C.to_graph(*make(n)) for n in ("instnorm_1d", "convt_1d",
                                                            "rmsnorm_tokens")])
    three_d = Batch.from_data_list([C.to_graph(*make("convt_3d", seed=s)) for s in range(2)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert {"perm", "sign", "scale", "linear"} <= set(errors)
        assert_sensitive(net, mixed, "uncoupled")
        net1d = scalegmn.build(backend, "invariant", spec=other, out_dim=2, **small)
        assert_equivariant(net1d, other, n_actions=2)
        net3d = scalegmn.build(backend, "invariant", spec=three_d, out_dim=2, **small)
        assert_equivariant(net3d, three_d, n_actions=2)
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        assert_equivariant(editor, same, n_actions=2)
        assert_sensitive(editor, same, "unclaimed")
    assert (mixed.group == GROUP_ID["sign"]).any()
