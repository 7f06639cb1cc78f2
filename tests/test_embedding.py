"""Embeddings (token ids as the input), learned positions and CLS tokens, and tied embedding /
un-embedding weights: the encoding, bitwise round trips, groups per node set, 20 random float64
actions, negative controls, refusals naming the culprit, ScaleGMN on embedding graphs."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

import converters as C
from converters.groups import EDGE_TYPE_ID
from zoo import make
from checks import TOL, acted_by_graph, assert_round_trip, nodes_of, rel_err

EMB_ZOO = ["emb_mlp", "emb_positions", "emb_tied_lm", "emb_tied_tanh"]


def _edges_into(g, name):
    """(src, dst, value) of the weight edges entering node set ``name``."""
    k = [ns["name"] for ns in g.arch.nodesets].index(name)
    sel = (g.layer[g.edge_index[1]] == k) & (g.edge_type == EDGE_TYPE_ID["weight"])
    return g.edge_index[0, sel], g.edge_index[1, sel], g.edge_attr[sel, 0]


def _acted(model, g, factors=None, perm=None):
    """A copy of ``model`` with the action (perm, factors) applied op by op to its state dict."""
    N = g.num_nodes
    a = C.Action(torch.arange(N) if perm is None else perm,
                 torch.ones(N, dtype=torch.float64) if factors is None else factors)
    moved = copy.deepcopy(model)
    moved.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
    return moved


# -- the encoding ---------------------------------------------------------------------------------
def test_the_guessed_example_input_is_two_by_three_token_ids():
    model = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 2))
    g = C.to_graph(model)
    inp = g.arch.ops[0]
    assert inp["ids"] and inp["channels"] == 7 and list(g.arch.input["shape"]) == [3]
    x = torch.arange(6).reshape(2, 3) % 7
    assert torch.equal(C.to_module(g)(x), model.eval()(x))


def test_vocabulary_nodes_and_one_edge_per_weight():
    model, ids = make("emb_mlp")
    g = C.to_graph(model, ids)
    W = model.emb.weight                                       # (V, d)
    assert g.arch.nodesets[0]["size"] == 7 and g.arch.nodesets[0]["role"] == "input"
    assert torch.equal(g.io_index[nodes_of(g, "tokens")], torch.arange(7))
    src, dst, val = _edges_into(g, "emb")
    assert len(val) == W.numel()
    v, i = src - int(nodes_of(g, "tokens")[0]), dst - int(nodes_of(g, "emb")[0])
    assert torch.equal(val, W[v, i])                           # edge v -> i holds W[v, i]
    assert (g.x[nodes_of(g, "emb"), 0] == 0).all()               # no bias
    back = C.to_module(g)
    assert back.emb.padding_idx == 0 and back.emb.weight.is_contiguous()


def test_position_nodes_are_fixed_constant_inputs_with_one_edge_per_entry():
    model, ids = make("emb_positions")
    g = C.to_graph(model, ids)
    pos = nodes_of(g, "pos")
    assert len(pos) == 9 and (g.role[pos] == 3).all() and (g.perm_class[pos] == -1).all()
    src, dst, val = _edges_into(g, "pos:add")
    p, i = src - int(pos[0]), dst - int(nodes_of(g, "pos:add")[0])
    assert torch.equal(val, model.pos[0, p, i])                # edge p -> i holds pos[0, p, i]
    src, dst, val = _edges_into(g, "cls:cat")
    assert torch.equal(val, model.cls[0, 0, dst - int(nodes_of(g, "cls:cat")[0])])
    # the stream reaches the result through one residual edge per feature, tied to it
    k = [ns["name"] for ns in g.arch.nodesets].index("pos:add")
    res = (g.layer[g.edge_index[1]] == k) & (g.edge_type == EDGE_TYPE_ID["residual"])
    assert int(res.sum()) == 4 and (g.edge_attr[res] == 1).all()
    assert (g.tie[nodes_of(g, "emb")] == g.tie[nodes_of(g, "pos:add")]).all()


@pytest.mark.parametrize("name, groups", [
    ("emb_mlp", ["fixed", "linear", "scale", "fixed"]),
    ("emb_positions", ["fixed", "linear", "fixed", "linear", "fixed", "linear", "sign", "fixed"]),
    ("emb_tied_lm", ["fixed", "perm", "fixed", "perm", "linear", "perm", "perm", "perm", "perm",
                     "fixed"]),
    ("emb_tied_tanh", ["fixed", "sign", "sign", "fixed"]),
])
def test_groups_per_node_set(name, groups):
    model, ids = make(name)
    g = C.to_graph(model, ids)
    assert [ns["group"] for ns in g.arch.nodesets] == groups


# -- round trips and actions ---------------------------------------------------------------------
@pytest.mark.parametrize("name", EMB_ZOO)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise_on_any_sequence_length(name, dtype):
    model, ids = make(name, dtype)
    g, back = assert_round_trip(model, ids)
    sd = model.state_dict()
    if name != "emb_tied_lm":                   # its (T, d) position table fixes T = 6
        shorter = ids[:, :3]
        assert torch.equal(back(shorter), model(shorter))
    again = C.from_state_dict(sd, g.arch)
    assert torch.equal(again.edge_attr, g.edge_attr) and torch.equal(again.x, g.x)


def test_ids_of_shape_batch_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)).double().eval()
    ids = torch.tensor([4, 0, 2, 2])
    g = C.to_graph(model, ids)
    assert list(g.arch.input["shape"]) == [] and [ns["group"] for ns in g.arch.nodesets] == \
        ["fixed", "linear", "fixed"]
    assert torch.equal(C.to_module(g)(ids), model(ids))
    out = C.functional_forward(C.to_dense(Batch.from_data_list([g, g])), ids)
    assert torch.equal(out[1], model(ids))


@pytest.mark.parametrize("name", EMB_ZOO)
def test_twenty_random_actions_keep_the_function_and_the_dense_view_runs(name):
    model, ids = make(name)
    g = C.to_graph(model, ids)
    y, gen = model(ids), torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(acted_by_graph(model, g, a)(ids), y) < TOL
        assert rel_err(C.to_module(a.apply(g))(ids), y) < TOL
    graphs = [C.to_graph(*make(name, seed=s)) for s in range(3)]
    out = C.functional_forward(C.to_dense(Batch.from_data_list(graphs)), ids)
    for i in range(3):
        ref = make(name, seed=i)[0](ids)
        assert out[i].shape == ref.shape and rel_err(out[i], ref) < 1e-12


def test_actions_scale_and_move_the_position_table_with_its_feature():
    model, ids = make("emb_positions")
    g = C.to_graph(model, ids)
    a = C.sample_action(g, generator=torch.Generator().manual_seed(3))
    ns = nodes_of(g, "pos:add")
    local = a.perm[ns] - ns[0]
    assert not torch.equal(local, torch.arange(4)) and (a.q[ns].abs() != 1).any()
    sd = a.apply_state_dict(g.arch, model.state_dict())
    expect = torch.empty_like(model.pos)
    expect[..., local] = model.pos.detach() * a.q[ns]
    assert torch.allclose(sd["pos"], expect, rtol=1e-15, atol=0)
    assert torch.equal(a.q[nodes_of(g, "emb")], a.q[ns])         # tied to the stream


# -- negative controls ---------------------------------------------------------------------------
def test_control_permuting_the_vocabulary_or_the_positions_changes_the_function():
    for name, layer in (("emb_mlp", "tokens"), ("emb_positions", "pos"),
                        ("emb_positions", "tokens")):
        model, ids = make(name)
        g = C.to_graph(model, ids)
        nodes = nodes_of(g, layer)
        perm = torch.arange(g.num_nodes)
        perm[nodes[1]], perm[nodes[2]] = nodes[2], nodes[1]
        moved = C.Action(perm, torch.ones(g.num_nodes, dtype=torch.float64)).apply(g)
        assert rel_err(C.to_module(moved)(ids), model(ids)) > 1e-6, (name, layer)


@pytest.mark.parametrize("param", ["pos", "cls"])
def test_control_a_table_left_behind_by_its_feature_changes_the_function(param):
    model, ids = make("emb_positions")
    g = C.to_graph(model, ids)
    y = model(ids)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, "emb")] = f[nodes_of(g, "pos:add")] = f[nodes_of(g, "cls:cat")] = 3.0
    moved = _acted(model, g, f)
    assert rel_err(moved(ids), y) < TOL                       # the whole tie class: exact
    with torch.no_grad():
        getattr(moved, param).copy_(getattr(model, param))    # the table not scaled with it
    assert rel_err(moved(ids), y) > 1e-6


def test_control_one_side_of_a_position_add_scaled_alone_changes_the_function():
    model, ids = make("emb_positions")
    g = C.to_graph(model, ids)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, "emb")[0]] = 2.0                               # emb neuron, not its sum
    assert rel_err(_acted(model, g, f)(ids), model(ids)) > 1e-6


def test_control_tied_sets_moved_apart_are_refused_or_change_the_function():
    model, ids = make("emb_tied_tanh")
    g = C.to_graph(model, ids)
    emb, l1 = nodes_of(g, "emb"), nodes_of(g, "l1")
    perm = torch.arange(g.num_nodes)
    perm[emb[0]], perm[emb[1]] = emb[1], emb[0]     # the embedding's features, not the head's
    a = C.Action(perm, torch.ones(g.num_nodes, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"'head.weight' is the weight 'emb.weight' \(tied\)"):
        C.to_state_dict(a.apply(g))
    # the same move on the untied function would be a symmetry; tied, it is not
    assert rel_err(_acted(model, g, perm=perm)(ids), model(ids)) > 1e-6
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[emb[0]] = f[l1[0]] = 2.0                                 # one factor, outside sign
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), f).apply(g),
                               strict=False)(ids), model(ids)) > 1e-6
    f[emb[0]] = f[l1[0]] = -1.0                                # a flip of the pair: declared
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), f).apply(g))(ids),
                   model(ids)) < TOL


class _TiedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.l1 = nn.Embedding(6, 4), nn.Linear(4, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.l1(self.emb(ids))))


def test_a_tied_pair_takes_reciprocal_factors():
    """``q_head = 1 / q_emb`` keeps the function (both uses of the weight scale alike): the
    embedding's neurons and the head's input neurons are an inverse tie (one permutation)."""
    torch.manual_seed(0)
    model = _TiedReLU().double().eval()
    ids = torch.randint(0, 6, (5, 4))
    g = C.to_graph(model, ids)
    sets = g.arch.nodesets
    assert [ns["group"] for ns in sets] == ["fixed", "scale", "scale", "fixed"]
    assert sets[1]["inv_tie"] == 2 and sets[2]["inv_tie"] == 1 and sets[1]["align"] == \
        sets[2]["align"]
    c = torch.tensor([2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    moved = copy.deepcopy(model)
    with torch.no_grad():     # emb features times c, l1 rows times 1/c (relu), columns / c
        moved.emb.weight.mul_(c)
        moved.l1.weight.mul_((1 / c)[:, None] / c[None, :])
        moved.l1.bias.mul_(1 / c)
    assert moved.head.weight is moved.emb.weight
    assert rel_err(moved(ids), model(ids)) < TOL
    y, gen = model(ids), torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        e, h = a.q[nodes_of(g, "emb")], a.q[nodes_of(g, "l1")]
        assert (e > 0).all() and (e != 1).any() and torch.equal(h, 1 / e)
        back = C.to_module(a.apply(g))           # tied edges agree up to 1 / (1 / q) rounding
        assert back.head.weight is back.emb.weight and rel_err(back(ids), y) < TOL
    f = torch.where(g.layer == 1, 2.0, 1.0).double()
    f[nodes_of(g, "l1")] = 2.0                                   # the same factor on both: no
    assert rel_err(_acted(model, g, f)(ids), model(ids)) > 1e-6


def test_a_tied_pair_already_tied_to_a_position_takes_sign_flips():
    """``head(emb(ids) + pos)``: the sum is tied to the embedding (one factor) and is the head's
    input (the reciprocal factor): ``q = 1 / q``, sign flips, declared with one tie."""
    class HeadOnSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.pos = nn.Embedding(6, 4), nn.Parameter(torch.randn(1, 5, 4))
            self.head = nn.Linear(4, 6)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids) + self.pos)

    torch.manual_seed(0)
    model = HeadOnSum().double().eval()
    ids = torch.randint(0, 6, (3, 5))
    g = C.to_graph(model, ids)
    sets = g.arch.nodesets
    assert [ns["group"] for ns in sets] == ["fixed", "sign", "fixed", "sign", "fixed"]
    assert "inv_tie" not in sets[1] and sets[1]["tie"] == sets[3]["tie"] >= 0
    y, gen = model(ids), torch.Generator().manual_seed(0)
    flipped = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        flipped |= bool((a.q == -1).any())
        back = C.to_module(a.apply(g))
        assert rel_err(back(ids), y) < TOL
    assert flipped
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, "emb")[0]] = f[nodes_of(g, "pos:add")[0]] = 2.0
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), f).apply(g),
                               strict=False)(ids), y) > 1e-6
    # the head reading the embedding itself: one node set, q = 1 / q
    class HeadOnEmb(HeadOnSum):
        def forward(self, ids):
            return self.head(self.emb(ids) * 2)

    model = HeadOnEmb().double().eval()
    model.pos = None
    g = C.to_graph(model, ids)
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "sign", "fixed"]
    y = model(ids)
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, "emb")[0]] = 2.0
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), f).apply(g),
                               strict=False)(ids), y) > 1e-6


# -- tied weights --------------------------------------------------------------------------------
def test_tied_edges_share_an_id_and_the_rebuilt_module_shares_the_parameter():
    model, ids = make("emb_tied_lm")
    g = C.to_graph(model, ids)
    tied = g.edge_tie >= 0
    assert int(tied.sum()) == 2 * model.emb.weight.numel()
    ids_e = g.edge_tie[tied]
    assert torch.equal(torch.bincount(ids_e), torch.full((36,), 2))
    for k in range(36):                                        # each pair: v -> j and j -> v
        e = (g.edge_tie == k).nonzero().squeeze(1)
        assert torch.equal(g.edge_attr[e[0]], g.edge_attr[e[1]])
        src, dst = g.edge_index[:, e]
        assert g.layer[src[0]] == 0 and g.layer[dst[1]] == len(g.arch.nodesets) - 1
    back = C.to_module(g)
    assert back.head.weight is back.emb.weight
    assert set(back.state_dict()) == set(model.state_dict())
    bad = g.clone()
    bad.edge_attr[(g.edge_tie == 5).nonzero()[1]] += 1.0
    with pytest.raises(ValueError, match="tied.*edited unequally"):
        C.to_state_dict(bad)
    untied = C.mlp_graph = C.to_graph(*make("mlp_relu"))
    assert (untied.edge_tie == -1).all() and len(untied.edge_tie) == untied.num_edges


def test_graphs_with_and_without_tied_weights_batch_together():
    graphs = [C.to_graph(*make(n)) for n in ("emb_tied_tanh", "mlp_relu", "emb_tied_tanh")]
    b = C.batch_graphs(graphs)
    assert b.edge_tie.shape == (b.num_edges,)
    back = b.to_data_list()
    assert torch.equal(back[2].edge_tie, graphs[2].edge_tie)


# -- refusals ------------------------------------------------------------------------------------
class _Emb(nn.Module):
    def __init__(self, forward, **kw):
        super().__init__()
        self.emb, self.lin = nn.Embedding(5, 3, **kw), nn.Linear(3, 2)
        self.w = nn.Parameter(torch.ones(1, 4, 3))
        self.f = forward

    def forward(self, ids):
        return self.f(self, ids)


IDS = torch.tensor([[1, 2, 0, 3], [3, 0, 1, 2]])


@pytest.mark.parametrize("fwd, kw, ids, where, what", [
    (lambda s, i: s.lin(s.emb(i)), {"max_norm": 1.0}, IDS, "emb", "max_norm"),
    (lambda s, i: s.lin(s.emb(i) * s.w), {}, IDS, "mul", "'w' is used outside a supported module"),
    (lambda s, i: s.lin(s.emb(i) + s.w[:, ::2]), {}, IDS[:, :2], "getitem", "no step"),
    (lambda s, i: s.lin(s.emb(i) + s.w[:, 1:3]), {}, IDS[:, :2], "getitem", "from the start"),
    (lambda s, i: s.lin(torch.cat([s.w[:, :2], s.emb(i)], 0)), {}, IDS[:, :2], "cat",
     "token axis"),
    (lambda s, i: s.lin(s.emb(i) + s.w), {}, IDS[:, :1], "add", "changes the stream's shape"),
    (lambda s, i: s.lin(s.emb(i)) + s.lin(s.emb(i)), {}, IDS, "emb", "more than once"),
    (lambda s, i: s.lin(s.emb(i + 1)), {}, IDS, "emb", "read the model input"),
    (lambda s, i: s.lin(F.embedding(i, s.emb.weight)), {}, IDS, "embedding",
     "used outside a supported module"),
])
def test_refusals_name_the_culprit(fwd, kw, ids, where, what):
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(_Emb(fwd, **kw), ids)
    msg = str(info.value)
    assert where in msg and what in msg, msg


def test_refusals_two_tables_on_one_input_and_other_ties():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Embedding(5, 3), nn.Embedding(5, 3), nn.Linear(3, 1)

        def forward(self, ids):
            return self.out(self.a(ids) + self.b(ids))

    class TiedLinears(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.a, self.b = nn.Embedding(5, 3), nn.Linear(3, 3), nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, ids):
            return self.b(torch.relu(self.a(self.emb(ids))))

    with pytest.raises(C.UnsupportedLayerError, match=r"'b'.*read by two embeddings"):
        C.to_graph(Two())
    with pytest.raises(C.UnsupportedLayerError, match=r"'b'.*tied weights"):
        C.to_graph(TiedLinears())
    with pytest.raises(C.UnsupportedLayerError, match=r"EmbeddingBag is not supported"):
        C.to_graph(nn.Sequential(nn.EmbeddingBag(5, 3), nn.Linear(3, 1)),
                   torch.tensor([[1, 2]]))


def test_a_position_buffer_round_trips_as_a_buffer():
    class Sinusoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(6, 4), nn.Linear(4, 2)
            t = torch.arange(5.0)[:, None] / (10.0 ** torch.arange(4.0))[None, :]
            self.register_buffer("pe", torch.sin(t))

        def forward(self, ids):      # (torch.fx cannot slice a buffer by a traced length)
            return self.out(torch.relu(self.emb(ids).add(self.pe)))

    torch.manual_seed(0)
    model = Sinusoid().double().eval()
    ids = torch.randint(0, 6, (3, 5))
    g = C.to_graph(model, ids)
    back = C.to_module(g)
    assert "pe" in dict(back.named_buffers()) and "pe" not in dict(back.named_parameters())
    assert torch.equal(back(ids), model(ids)) and torch.equal(back.pe, model.pe)
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "scale", "fixed", "scale",
                                                       "fixed"]


# -- metanetworks --------------------------------------------------------------------------------
def test_scalegmn_is_equivariant_on_embedding_graphs():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("emb_positions", "emb_tied_tanh", "mlp_relu")
              for s in range(2)]
    mixed = C.batch_graphs(graphs)
    same = Batch.from_data_list([C.to_graph(*make("emb_positions", seed=s)) for s in range(3)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert "linear" in errors or "sign" in errors
        assert_sensitive(net, mixed, "uncoupled")
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        assert_equivariant(editor, same, n_actions=2)
        assert_sensitive(editor, same, "unclaimed")


def test_saved_and_networkx_graphs_keep_edge_tie(tmp_path):
    g = C.to_graph(*make("emb_tied_tanh"))
    C.save_graph(g, tmp_path / "g.pt")
    assert torch.equal(C.load_graph(tmp_path / "g.pt").edge_tie, g.edge_tie)
    assert torch.equal(C.from_networkx(C.to_networkx(g)).edge_tie, g.edge_tie)
    old = copy.copy(g)                 # a file written before the field existed
    del old.edge_tie
    C.save_graph(old, tmp_path / "old.pt")
    loaded = C.load_graph(tmp_path / "old.pt")
    assert torch.equal(loaded.edge_tie, g.edge_tie)
    C.batch_graphs([loaded, C.to_graph(*make("mlp_relu"))])


def test_a_small_transformer_language_model_with_cls_positions_and_a_tied_head():
    """Embedding, CLS token, a position table sliced to T + 1, a pre-norm transformer encoder
    layer, a final LayerNorm and a head tied to the embedding: bitwise round trip (the head
    stays the embedding's Parameter), 20 random float64 actions keep the function."""
    class TinyLM(nn.Module):
        def __init__(self, vocab=11, d=8):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos, self.cls = nn.Parameter(torch.randn(1, 7, d)), nn.Parameter(
                torch.randn(1, 1, d))
            self.enc = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True,
                                                  norm_first=True)
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            B, T = ids.shape
            h = torch.cat([self.cls.expand(B, -1, -1), self.emb(ids)], dim=1)
            return self.head(self.ln(self.enc(h + self.pos[:, :T + 1])))

    torch.manual_seed(0)
    model = TinyLM().double().eval()
    ids = torch.randint(0, 11, (3, 5))
    g = C.to_graph(model, ids)
    groups = {ns["name"]: ns["group"] for ns in g.arch.nodesets}
    assert groups["emb"] == groups["cls:cat"] == groups["ln"] == "perm"
    assert groups["cls"] == groups["pos"] == "fixed"
    back = C.to_module(g)
    assert torch.equal(back(ids), model(ids)) and back.head.weight is back.emb.weight
    assert torch.equal(back(ids[:, :2]), model(ids[:, :2]))
    y, gen = model(ids), torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(C.to_module(a.apply(g))(ids), y) < TOL
