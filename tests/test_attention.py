"""Attention and transformer layers: ``F.scaled_dot_product_attention`` on user-written Q/K/V
``nn.Linear``s, ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
``nn.TransformerEncoder``. Exact round trips, the group of every node set (queries and keys
``linear`` with reciprocal factors and one permutation inside each head, values ``linear`` with
permutations inside each head, whole heads moving together), 20 random float64 actions,
negative controls, the sampled head moves, refusals naming the culprit, and ScaleGMN's
equivariance on transformer graphs (under head moves too)."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

import converters as C
from zoo import make
from checks import TOL, acted_by_graph, assert_round_trip, rel_err

ATTN_ZOO = ["attn_sdpa", "attn_sdpa_1head", "attn_written", "mha", "mha_kv", "encoder",
            "encoder_prenorm", "decoder", "decoder_prenorm"]


def _sets(g):
    return {ns["name"]: k for k, ns in enumerate(g.arch.nodesets)}


def _nodes(g, name):
    return (g.layer == _sets(g)[name]).nonzero().squeeze(1)


def _moved(model, g, perm=None, q=None):
    """A copy of ``model`` under the action (perm, q) applied op by op to its state dict."""
    N = g.num_nodes
    a = C.Action(torch.arange(N) if perm is None else perm,
                 torch.ones(N, dtype=torch.float64) if q is None else q)
    m = copy.deepcopy(model)
    m.load_state_dict(a.apply_state_dict(g.arch, model.state_dict()))
    return m


@pytest.mark.parametrize("name", ATTN_ZOO)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise(name, dtype):
    model, x = make(name, dtype)
    g, back = assert_round_trip(model, x)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    longer = torch.randn(5, 7, 3, dtype=dtype)              # no token count is recorded
    assert torch.equal(back(longer), model(longer))
    # the dense view runs B networks at once (to rounding)
    d = C.to_dense(Batch.from_data_list([g, g]))
    y = C.functional_forward(d, x)
    assert rel_err(y[1], model(x)) < (1e-5 if dtype == torch.float32 else 1e-12)


G = "fixed", "linear", "scale", "perm", "sign"


@pytest.mark.parametrize("name, groups", [
    ("attn_sdpa", {"input": "fixed", "emb": "linear", "q": "linear", "k": "linear",
                   "v": "linear", "o": "scale", "out": "fixed"}),
    ("attn_sdpa_1head", {"q": "linear", "k": "linear", "v": "linear", "o": "scale"}),
    ("attn_written", {"emb": "linear", "q": "linear", "k": "linear", "v": "sign",
                      "o": "fixed"}),
    ("mha", {"emb": "linear", "attn.q": "linear", "attn.k": "linear", "attn.v": "linear",
             "attn.out_proj": "scale", "out": "fixed"}),
    ("mha_kv", {"pq": "linear", "pk": "linear", "pv": "linear", "attn.q": "linear",
                "attn.k": "linear", "attn.v": "linear", "attn.out_proj": "linear"}),
    ("encoder", {"emb": "perm", "enc.layers.0.self_attn.q": "linear",
                 "enc.layers.0.self_attn.k": "linear", "enc.layers.0.self_attn.v": "linear",
                 "enc.layers.0.self_attn.out_proj": "perm", "enc.layers.0:add1": "perm",
                 "enc.layers.0.norm1": "perm", "enc.layers.0.linear1": "scale",
                 "enc.layers.0.linear2": "perm", "enc.layers.1.norm2": "perm",
                 "enc.norm": "linear"}),
    ("encoder_prenorm", {"emb": "perm", "enc.layers.0.norm1": "linear",
                         "enc.layers.0.self_attn.q": "linear",
                         "enc.layers.0.linear1": "perm", "enc.layers.0:add2": "perm",
                         "enc.norm": "linear"}),
    ("decoder", {"emb": "perm", "enc.norm2": "linear", "dec.layers.0.self_attn.q": "linear",
                 "dec.layers.0.multihead_attn.q": "linear",
                 "dec.layers.0.multihead_attn.k": "linear",
                 "dec.layers.0.multihead_attn.v": "linear",
                 "dec.layers.0.multihead_attn.out_proj": "perm", "dec.layers.1.linear1": "scale",
                 "dec.layers.1.norm3": "perm", "dec.norm": "linear"}),
    ("decoder_prenorm", {"emb": "perm", "dec.layers.0.norm2": "linear",
                         "dec.layers.0.multihead_attn.k": "linear",
                         "dec.layers.0.linear1": "perm", "dec.layers.0:add3": "perm"}),
])
def test_groups_per_node_set(name, groups):
    model, x = make(name)
    g = C.to_graph(model, x)
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    assert {k: recs[k]["group"] for k in groups} == groups
    # queries and keys: one permutation (aligned), reciprocal factors (inv_tie), cut per head
    for q in [n for n in recs if n == "q" or n.endswith(".q")]:
        k = q[:-1] + "k"
        v = q[:-1] + "v"
        assert recs[q]["align"] == recs[k]["align"] != recs[v]["align"]
        assert recs[q]["inv_tie"] == _sets(g)[k] and recs[k]["inv_tie"] == _sets(g)[q]
        assert "inv_tie" not in recs[v]
        heads = {"attn_sdpa": 2, "attn_sdpa_1head": 1, "mha": 3}.get(name, 2)
        D = recs[q]["size"] // heads
        assert list(recs[q]["perm_cuts"]) == [D * h for h in range(1, heads)]
        Dv = recs[v]["size"] // heads
        assert list(recs[v]["perm_cuts"]) == [Dv * h for h in range(1, heads)]
    others = [ns for ns in g.arch.nodesets if ns["name"] not in recs or "inv_tie" not in ns]
    assert all("inv_tie" not in ns for ns in others if not ns["name"].endswith(("q", "k")))


@pytest.mark.parametrize("name", ATTN_ZOO)
def test_twenty_random_actions_keep_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(0)
    q_sets = [k for k, ns in enumerate(g.arch.nodesets) if ns.get("inv_tie", -1) > k]
    assert q_sets
    flipped = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        for k in q_sets:            # keys take the reciprocal of their queries' factors
            qn, kn = (g.layer == k).nonzero()[:, 0], (g.layer == g.arch.nodesets[k]["inv_tie"])
            kn = kn.nonzero()[:, 0]
            assert torch.equal(a.q[kn], 1.0 / a.q[qn])
            assert torch.equal(a.perm[kn] - kn[0], a.perm[qn] - qn[0])
            flipped |= bool((a.q[qn] < 0).any()) and bool((a.q[qn].abs() != 1).any())
        assert rel_err(C.to_module(a.apply(g))(x), y) < TOL
        assert rel_err(_moved(model, g, a.perm, a.q)(x), y) < TOL
    assert flipped


def test_random_actions_on_a_mixed_batch_pair_each_graphs_queries_and_keys():
    graphs = [C.to_graph(*make(n, seed=s)) for n, s in
              (("mlp_relu", 0), ("attn_sdpa", 0), ("mha", 1), ("attn_sdpa", 2))]
    b = C.batch_graphs(graphs)
    a = C.sample_action(b, torch.Generator().manual_seed(3))
    for i, g in enumerate(graphs):
        sub = C.Action(a.perm[b.ptr[i]:b.ptr[i + 1]] - b.ptr[i], a.q[b.ptr[i]:b.ptr[i + 1]])
        model, x = make(["mlp_relu", "attn_sdpa", "mha", "attn_sdpa"][i], seed=[0, 0, 1, 2][i])
        assert rel_err(C.to_module(sub.apply(g))(x), model(x)) < TOL


# -- negative controls --------------------------------------------------------------------------
def _one(g, node, q):
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[node] = q
    return f


@pytest.mark.parametrize("name, q, k, v, o", [
    ("attn_sdpa", "q", "k", "v", "o"),
    ("attn_written", "q", "k", "v", "o"),
    ("mha", "attn.q", "attn.k", "attn.v", "attn.out_proj"),
    ("encoder", *(f"enc.layers.1.self_attn.{p}" for p in ("q", "k", "v", "out_proj"))),
    ("decoder", *(f"dec.layers.0.multihead_attn.{p}" for p in ("q", "k", "v", "out_proj"))),
])
def test_controls_change_the_function(name, q, k, v, o):
    model, x = make(name)
    g = C.to_graph(model, x)
    y = model(x)
    Q, K, V = _nodes(g, q), _nodes(g, k), _nodes(g, v)
    D = len(Q) // 2 if name != "mha" else len(Q) // 3
    # a Q dimension scaled without its K dimension
    assert rel_err(_moved(model, g, q=_one(g, Q[1], 10.0))(x), y) > 1e-6
    # Q and K of one dimension scaled alike (not reciprocally)
    f = _one(g, Q[1], 10.0)
    f[K[1]] = 10.0
    assert rel_err(_moved(model, g, q=f)(x), y) > 1e-6
    f[Q[1]] = 2.5
    # ... and reciprocally: a symmetry (sign included)
    f[K[1]] = 1 / 2.5
    f[Q[0]], f[K[0]] = -0.3, -1 / 0.3
    assert rel_err(_moved(model, g, q=f)(x), y) < TOL
    # two heads' Q dimensions swapped without their K
    perm = torch.arange(g.num_nodes)
    perm[Q[0]], perm[Q[D]] = Q[D], Q[0]
    assert rel_err(_moved(model, g, perm=perm)(x), y) > 1e-6
    # Q and K swapped across two heads (V left): not a symmetry either
    perm[K[0]], perm[K[D]] = K[D], K[0]
    assert rel_err(_moved(model, g, perm=perm)(x), y) > 1e-6
    # inside one head, Q and K together: a symmetry
    perm = torch.arange(g.num_nodes)
    perm[Q[0]], perm[Q[1]], perm[K[0]], perm[K[1]] = Q[1], Q[0], K[1], K[0]
    assert rel_err(_moved(model, g, perm=perm)(x), y) < TOL
    # a V dimension scaled without the output projection's compensation
    sd = model.state_dict()
    bad = copy.deepcopy(model)
    W = {"attn_sdpa": "v.weight", "attn_written": "v.weight", "mha": "attn.in_proj_weight",
         "encoder": "enc.layers.1.self_attn.in_proj_weight",
         "decoder": "dec.layers.0.multihead_attn.in_proj_weight"}[name]
    row = 0 if name.startswith("attn") else 2 * len(Q)
    sd2 = {kk: t.clone() for kk, t in sd.items()}
    sd2[W][row] *= 3.0
    bad.load_state_dict(sd2)
    assert rel_err(bad(x), y) > 1e-6
    # ... with it: a symmetry (here through the graph action)
    q_v = -3.0 if name != "attn_written" else -1.0        # tanh after it: sign flips only
    assert rel_err(_moved(model, g, q=_one(g, V[0], q_v))(x), y) < TOL


def _head_move(g, names, D, H):
    """The permutation moving head 0 onto head 1 (and back) in the node sets ``names``."""
    perm = torch.arange(g.num_nodes)
    for n in names:
        nodes = _nodes(g, n)
        for d in range(D):
            perm[nodes[d]], perm[nodes[D + d]] = nodes[D + d], nodes[d]
    return perm


def _heads_after(a, g, name, D, H):
    """The head each of the ``H`` heads of node set ``name`` lands in under action ``a``, as a
    tuple; fails unless every head moves whole (its ``D`` nodes into one head)."""
    nodes = _nodes(g, name)
    to = ((a.perm[nodes] - nodes[0]) // D).reshape(H, D)
    assert (to == to[:, :1]).all(), f"a head of {name} is split: {to.tolist()}"
    return tuple(to[:, 0].tolist())


@pytest.mark.parametrize("name, prefix, H", [
    ("attn_sdpa", "", 2), ("attn_written", "", 2), ("mha", "attn.", 3), ("mha_kv", "attn.", 2),
    ("encoder", "enc.layers.1.self_attn.", 2), ("decoder", "dec.layers.0.multihead_attn.", 2)])
def test_whole_heads_move_as_a_symmetry_and_are_sampled(name, prefix, H):
    """Moving whole heads (Q, K and V rows, the output projection's columns) keeps the function
    and is declared: the three node sets share one ``blocks`` id, and sampled actions draw every
    head permutation, one for Q, K and V, composed with the permutations inside each head."""
    model, x = make(name)
    g = C.to_graph(model, x)
    y = model(x)
    qkv = [prefix + p for p in "qkv"]
    D, Dv = (len(_nodes(g, n)) // H for n in qkv[1:])
    ones = torch.ones(g.num_nodes, dtype=torch.float64)
    moved = _head_move(g, qkv[:2], D, H)
    moved = _head_move(g, qkv[2:], Dv, H)[moved]
    assert rel_err(C.to_module(C.Action(moved, ones).apply(g))(x), y) < TOL
    # a head's Q and K moved without its V is not; nor its V without its Q and K
    for part in (_head_move(g, qkv[:2], D, H), _head_move(g, qkv[2:], Dv, H)):
        assert rel_err(C.to_module(C.Action(part, ones).apply(g))(x), y) > 1e-6
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    bid = recs[qkv[0]]["blocks"]["id"]
    assert [dict(recs[n]["blocks"]) for n in qkv] == [{"id": bid, "size": d} for d in (D, D, Dv)]
    gen = torch.Generator().manual_seed(0)
    seen, inside = set(), False
    for i in range(12 * math.factorial(H)):
        a = C.sample_action(g, generator=gen)
        heads = [_heads_after(a, g, n, d, H) for n, d in zip(qkv, (D, D, Dv))]
        assert heads[0] == heads[1] == heads[2]       # one head permutation for Q, K and V
        seen.add(heads[0])
        Q = _nodes(g, qkv[0])
        inside |= bool(((a.perm[Q] - Q[0]) % D != torch.arange(len(Q)) % D).any())
        if i < 8:
            assert rel_err(C.to_module(a.apply(g))(x), y) < TOL
    assert len(seen) == math.factorial(H) and inside


def test_head_moves_are_drawn_uniformly_and_independently_per_attention():
    """Over 600 draws each of the 3! head permutations of an ``nn.MultiheadAttention`` comes up
    about 1/6 of the time; two layers of an encoder draw theirs independently."""
    g = C.to_graph(*make("mha"))
    gen = torch.Generator().manual_seed(1)
    counts: dict = {}
    for _ in range(600):
        h = _heads_after(C.sample_action(g, generator=gen), g, "attn.q", 2, 3)
        counts[h] = counts.get(h, 0) + 1
    assert len(counts) == 6 and all(40 <= c <= 160 for c in counts.values()), counts
    g = C.to_graph(*make("encoder"))
    both = {}
    for _ in range(200):
        a = C.sample_action(g, generator=gen)
        key = tuple(_heads_after(a, g, f"enc.layers.{i}.self_attn.q", 3, 2) for i in (0, 1))
        both[key] = both.get(key, 0) + 1
    assert len(both) == 4 and all(25 <= c <= 75 for c in both.values()), both


def test_head_moves_are_not_declared_when_another_op_forbids_them():
    """Queries read straight from the network input (fixed nodes) cannot move: no block moves
    for that attention (its values still permute inside each head); one head: no block."""
    class FixedQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.k, self.v, self.o = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            B, T, _ = x.shape
            q = x.view(B, T, 2, 2).transpose(1, 2)
            k, v = (f(x).view(B, T, 2, 2).transpose(1, 2) for f in (self.k, self.v))
            return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, 4))

    g = C.to_graph(FixedQ().double(), torch.randn(2, 3, 4, dtype=torch.float64))
    assert not any("blocks" in ns for ns in g.arch.nodesets)
    assert [tuple(ns["perm_cuts"]) for ns in g.arch.nodesets if ns["name"] == "v"] == [(2,)]
    g1 = C.to_graph(*make("attn_sdpa_1head"))
    assert not any("blocks" in ns for ns in g1.arch.nodesets)


def test_shared_queries_and_keys_flip_only_and_conflicting_pairs_are_dropped():
    class QisK(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk, self.v, self.o = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.qk(x)
            return self.o(F.scaled_dot_product_attention(h, h, self.v(x)))

    class SharedQ(nn.Module):          # one Q against two keys: q = 1/k1 = 1/k2 is not kept
        def __init__(self):
            super().__init__()
            self.q, self.k1, self.k2 = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(3, 4)
            self.v1, self.v2, self.o = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            q = self.q(x)
            return self.o(F.scaled_dot_product_attention(q, self.k1(x), self.v1(x))
                          + F.scaled_dot_product_attention(q, self.k2(x), self.v2(x)))

    x = torch.randn(5, 6, 3, dtype=torch.float64)
    torch.manual_seed(0)
    m = QisK().double().eval()
    g = C.to_graph(m, x)
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "sign", "linear", "fixed"]
    assert rel_err(_moved(m, g, q=_one(g, _nodes(g, "qk")[0], 2.0))(x), m(x)) > 1e-6
    m = SharedQ().double().eval()
    g = C.to_graph(m, x)
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    assert [recs[n]["group"] for n in ("q", "k1", "k2")] == ["perm"] * 3
    assert all("inv_tie" not in ns for ns in g.arch.nodesets)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(C.to_module(a.apply(g))(x), m(x)) < TOL


# -- refusals -----------------------------------------------------------------------------------
def _sdpa(**kw):
    split = kw.pop("_split", None)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            B, T, _ = x.shape
            cut = split or (lambda t: t.view(B, T, 2, 2).transpose(1, 2))
            q, k, v = (cut(f(x)) for f in (self.q, self.k, self.v))
            return F.scaled_dot_product_attention(q, k, v, **kw).transpose(1, 2).reshape(
                B, T, 4)
    return M().eval()


class _MHA(nn.Module):
    def __init__(self, call=lambda a, h: a(h, h, h)[0], **kw):
        super().__init__()
        kw.setdefault("batch_first", True)
        self.emb, self.attn, self.call = nn.Linear(4, 4), nn.MultiheadAttention(4, 2, **kw), call

    def forward(self, x):
        return self.call(self.attn, self.emb(x))


class _Dec(nn.Module):
    def __init__(self, **call):
        super().__init__()
        self.emb, self.call = nn.Linear(4, 4), call
        self.dec = nn.TransformerDecoderLayer(4, 2, 8, batch_first=True)

    def forward(self, x):
        h = self.emb(x)
        return self.dec(h, h, **self.call)


X = torch.randn(2, 5, 4)


@pytest.mark.parametrize("model, match", [
    (lambda: _sdpa(dropout_p=0.1), r"dropout_p=0.1"),
    (lambda: _sdpa(enable_gqa=True), r"enable_gqa"),
    (lambda: _sdpa(_split=lambda t: t.view(t.shape[0], t.shape[1], 2, 2)),
     r"scaled_dot_product_attention.*heads on an axis before the tokens"),
    (lambda: _MHA(add_bias_kv=True), r"'attn'.*add_bias_kv=True"),
    (lambda: _MHA(add_zero_attn=True), r"'attn'.*add_zero_attn"),
    (lambda: _MHA(call=lambda a, h: a(h, h, h)[1]), r"attention weights.*not a node set"),
    (lambda: _MHA(call=lambda a, h: a(h.transpose(1, 2), h, h)[0]), r"'attn'.*features"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.TransformerEncoderLayer(
        4, 2, 8, activation=F.silu, batch_first=True)), r"'1'.*activation.*relu and gelu"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.TransformerDecoderLayer(4, 2, 8)),
     r"'1' \(TransformerDecoderLayer.*memory"),
    (lambda: _Dec(tgt_is_causal=True), r"'dec'.*(tgt_is_causal|attn_mask)"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Transformer(4, 2, 1, 1, 8)), r"Transformer"),
])
def test_refusals_name_the_culprit(model, match):
    with pytest.raises(C.UnsupportedLayerError, match=match):
        C.to_graph(model().eval(), X if "features" not in match else X[:, :4])


def test_a_training_mode_transformer_with_dropout_is_refused():
    m = nn.Sequential(nn.Linear(4, 4), nn.TransformerEncoderLayer(4, 2, 8, dropout=0.1,
                                                                  batch_first=True))
    with pytest.raises(C.UnsupportedLayerError, match=r"'1.*dropout.*call model.eval\(\)"):
        C.to_graph(m.train(), X)
    m2 = _MHA(dropout=0.2).train()
    with pytest.raises(C.UnsupportedLayerError, match=r"'attn'.*p=0.2"):
        C.to_graph(m2, X)
    C.to_graph(m.eval(), X)
    C.to_graph(nn.Sequential(nn.Linear(4, 4), nn.TransformerEncoderLayer(
        4, 2, 8, dropout=0.0, batch_first=True)).train(), X)   # nothing random: converts

    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _sdpa()

        def forward(self, x):
            q = x.view(2, 5, 2, 2).transpose(1, 2)
            return F.scaled_dot_product_attention(q, q, q, dropout_p=0.3 if self.training
                                                  else 0.0)
    with pytest.raises(C.UnsupportedLayerError, match=r"dropout_p=0.3.*eval"):
        C.to_graph(Drop().train(), X)


# -- ScaleGMN ---------------------------------------------------------------------------------
def test_scalegmn_is_equivariant_on_transformer_graphs():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("attn_sdpa", "mha", "encoder")
              for s in range(2)]
    mixed = C.batch_graphs(graphs)
    same = Batch.from_data_list([C.to_graph(*make("attn_sdpa", seed=s)) for s in range(3)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert "linear" in errors
        assert_sensitive(net, mixed, "uncoupled")
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        assert_equivariant(editor, same, n_actions=2)
        assert_sensitive(editor, same, "unclaimed")


def _blocks_reversed(batch):
    """The action reversing the order of the blocks (heads) of every block-move id of every
    graph of ``batch`` (``Layout.block_node``), q = 1: a deterministic head move."""
    from converters.graph import archs_of
    from converters.layout import layout
    perm = torch.arange(batch.num_nodes)
    for i, arch in enumerate(archs_of(batch)):
        lay, off = layout(arch), int(batch.ptr[i])
        d, start = lay.block_size, lay.block_start + off
        loc = lay.block_node + off - start
        perm[lay.block_node + off] = start + (lay.block_count[lay.block_id] - 1 - loc // d) * d \
            + loc % d
    return C.Action(perm, torch.ones(batch.num_nodes, dtype=torch.float64))


def test_scalegmn_is_equivariant_under_sampled_and_explicit_head_moves():
    """ScaleGMN and ScaleGMN-B (float64) map a head-moved batch to the same invariant output and
    to the head-moved edit: they are equivariant to every structure-preserving permutation,
    not only to those inside ``perm_class``. ``assert_equivariant`` samples head moves now."""
    import scalegmn
    from scalegmn.testing import assert_equivariant, output_error
    graphs = [C.to_graph(*make(n, seed=s)) for n, s in (("mha", 0), ("encoder", 1),
                                                       ("attn_sdpa", 2))]
    batch = C.batch_graphs(graphs)
    a = _blocks_reversed(batch)
    assert not torch.equal(a.perm, torch.arange(batch.num_nodes))
    assert not torch.equal(batch.perm_class[a.perm], batch.perm_class)   # heads cross classes
    dbl = batch.clone()
    dbl.x, dbl.edge_attr = batch.x.double(), batch.edge_attr.double()
    for backend in ("scalegmn", "scalegmn-b"):
        for kind in ("invariant", "equivariant"):
            kw = {"out_dim": 2} if kind == "invariant" else {}
            net = scalegmn.build(backend, kind, spec=batch, hidden=8, layers=2, **kw)
            net = net.double().eval()
            with torch.no_grad():
                err = output_error(net(a.apply(dbl)), net(dbl), a, dbl)
            assert err < 1e-9, (backend, kind, err)
            assert_equivariant(net, batch, n_actions=2, generator=torch.Generator().manual_seed(5))


# -- the written-out form ------------------------------------------------------------------------
class _Written(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(4, 4) for _ in range(4))
        self.body = body

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (f(x).view(B, T, 2, 2).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = self.body(x, q, k, v)
        return self.o(y.transpose(1, 2).reshape(B, T, 4))


@pytest.mark.parametrize("body", [
    lambda x, q, k, v: torch.softmax(0.5 * torch.matmul(q, k.transpose(2, 3)), -1).matmul(v),
    lambda x, q, k, v: F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) @ v,
    lambda x, q, k, v: F.dropout((q @ k.transpose(-2, -1)).softmax(-1), 0.2, False) @ v,
    lambda x, q, k, v: nn.functional.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)
                                             if False else q @ k.transpose(-2, -1) / 3.0,
                                             dim=3) @ v,
])
def test_written_out_forms_round_trip_bitwise_and_keep_their_symmetry(body):
    torch.manual_seed(0)
    m = _Written(body).double().eval()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    g = C.to_graph(m, x)
    assert [op["op"] for op in g.arch.ops].count("attention") == 1
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    assert recs["q"]["inv_tie"] == _sets(g)["k"] and recs["q"]["perm_cuts"] == (2,)
    back = C.to_module(g)
    assert torch.equal(back(x), m(x))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(C.to_module(a.apply(g))(x), m(x)) < TOL
    assert rel_err(_moved(m, g, q=_one(g, _nodes(g, "q")[0], 2.0))(x), m(x)) > 1e-6


@pytest.mark.parametrize("body, match", [
    (lambda x, q, k, v: (q @ k.transpose(-2, -1)).softmax(-2) @ v, r"over the keys"),
    (lambda x, q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(x.size(1))).softmax(-1) @ v,
     r"multiplied or divided by a Python number"),
    (lambda x, q, k, v: (q @ k.transpose(-2, -1)).relu().softmax(-1) @ v, r"may only be scaled"),
    (lambda x, q, k, v: ((q @ k.transpose(-2, -1)) + (q @ k.transpose(-2, -1))).softmax(-1) @ v,
     r"may only be scaled"),
    (lambda x, q, k, v: q @ v.transpose(-2, -1) @ k, r"may only be scaled"),
    (lambda x, q, k, v: (q @ k.transpose(-2, -1)).softmax(-1).softmax(-1) @ v,
     r"may only be scaled"),
    (lambda x, q, k, v: q @ k, r"matmul"),
])
def test_written_out_refusals_name_the_node(body, match):
    with pytest.raises(C.UnsupportedLayerError, match=match):
        C.to_graph(_Written(body).eval(), X)


# -- masks passed as further model inputs --------------------------------------------------------
class _Masked(nn.Module):
    """Attention with its mask(s) passed as further inputs: ``form`` sdpa (additive float
    mask), written (``+ mask``), filled (``masked_fill`` with a bool mask), mha (``attn_mask``,
    ``key_padding_mask``), causal (``nn.MultiheadAttention`` with ``is_causal`` and its mask)."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.emb, self.out = nn.Linear(3, 6), nn.Linear(6, 2)
        if form in ("mha", "causal"):
            self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        else:
            self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x, mask, pad=None):
        B, T, _ = x.shape
        h = self.emb(x)
        if self.form in ("mha", "causal"):
            y = self.attn(h, h, h, attn_mask=mask, key_padding_mask=pad,
                          is_causal=self.form == "causal")[0]
            return self.out(torch.relu(y))
        q, k, v = (f(h).view(B, T, 2, 3).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.form == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif self.form == "written":
            y = F.softmax((q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1)) + mask, dim=-1) @ v
        else:
            y = (q @ k.transpose(-2, -1)).masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.out(torch.relu(y.transpose(1, 2).reshape(B, T, 6)))


def _mask_inputs(form, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, generator=g, dtype=dtype)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    if form in ("filled", "causal"):
        return x, (causal,)
    mask = torch.randn(5, 5, generator=g, dtype=dtype)
    if form == "mha":
        pad = torch.zeros(4, 5, dtype=dtype)
        pad[0, -1] = pad[2, -2] = -1e4
        return x, (mask, pad)
    return x, (mask,)


@pytest.mark.parametrize("form", ["sdpa", "written", "filled", "mha", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masks_passed_as_model_inputs_round_trip_and_keep_the_symmetry(form, dtype):
    torch.manual_seed(0)
    model = _Masked(form).to(dtype).eval()
    x, masks = _mask_inputs(form, dtype)
    g = C.to_graph(model, (x, *masks))
    kinds = [op["op"] for op in g.arch.ops]
    assert kinds.count("extra_input") == len(masks) and kinds[0] == "input"
    assert list(g.arch.input["shape"]) == [5, 3]
    back = C.to_module(g)
    y = model(x, *masks)
    assert torch.equal(back(x, *masks), y)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    if form == "filled":     # the mask is read at run time, not frozen
        other = (torch.triu(torch.ones(5, 5, dtype=torch.bool), 2),)
        assert torch.equal(back(x, *other), model(x, *other))
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    q = "attn.q" if form in ("mha", "causal") else "q"
    assert recs[q]["group"] == "linear" and "inv_tie" in recs[q]
    if dtype == torch.float64:
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            a = C.sample_action(g, generator=gen)
            assert rel_err(C.to_module(a.apply(g))(x, *masks), y) < TOL
        d = C.to_dense(Batch.from_data_list([g, g]))
        assert rel_err(C.functional_forward(d, x, *masks)[1], y) < 1e-12
        f = _one(g, _nodes(g, q)[0], 10.0)             # a query scaled without its key
        assert rel_err(_moved(model, g, q=f)(x, *masks), y) > 1e-6


def test_masks_that_are_not_model_inputs_are_refused():
    class Derived(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 4)

        def forward(self, x, m):
            q = self.q(x)
            return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.relu(q @ q.transpose(
                -2, -1)))

    class Elsewhere(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 4)

        def forward(self, x, m):
            return self.q(x) + m

    m = torch.zeros(5, 5)
    with pytest.raises(C.UnsupportedLayerError, match=r"'_Masked'.*takes 2 inputs \(x, mask\)"):
        C.to_graph(_Masked("sdpa").eval(), X[..., :3])      # the mask not passed
    with pytest.raises(C.UnsupportedLayerError, match=r"may only be scaled|attn_mask"):
        C.to_graph(Derived().eval(), (X, m))
    with pytest.raises(C.UnsupportedLayerError):
        C.to_graph(Elsewhere().eval(), (X, torch.zeros(2, 5, 4)))


# -- heads of one feature each -------------------------------------------------------------------
class _Heads(nn.Module):
    """Q/K/V ``nn.Linear(3, heads * width)`` split into ``heads`` heads of ``width`` features
    (``view(B, T, heads, width)``), an attention ``form`` (``sdpa``; ``written``: softmax(q @
    k.transpose(-2, -1) / sqrt(width)) @ v; ``kT``: the key viewed straight into (B, heads,
    width, T) by a permute), the heads merged, ``nn.Linear(heads * width, 2)``. Input (batch,
    tokens, 3)."""

    def __init__(self, heads, width, form):
        super().__init__()
        self.h, self.form, e = heads, form, heads * width
        self.q, self.k, self.v, self.o = nn.Linear(3, e), nn.Linear(3, e), nn.Linear(3, e), \
            nn.Linear(e, 2)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (f(x).view(B, T, self.h, -1) for f in (self.q, self.k, self.v))
        q, v = q.transpose(1, 2), v.transpose(1, 2)
        if self.form == "sdpa":
            y = F.scaled_dot_product_attention(q, k.transpose(1, 2), v, is_causal=True)
        elif self.form == "written":
            y = (q @ k.transpose(1, 2).transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) @ v
        else:
            y = F.softmax(q @ k.permute(0, 2, 3, 1), dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


def _per_head(g, width):
    """``g``'s node-set records with sizes, cuts and block sizes counted in heads (divided by
    the head ``width``), and its attention ops' heads and head sizes."""
    recs = []
    for ns in g.arch.nodesets:
        r = dict(ns)
        if "perm_cuts" in r and ns["name"] in ("q", "k", "v"):
            r["size"] //= width
            r["perm_cuts"] = tuple(c // width for c in r["perm_cuts"])
            r["blocks"] = {**r["blocks"], "size": r["blocks"]["size"] // width}
        recs.append(r)
    att = [(op["heads"], op["head_dim"], op["v_head_dim"]) for op in g.arch.ops
           if op["op"] == "attention"]
    return recs, att


@pytest.mark.parametrize("form", ["sdpa", "written", "kT"])
@pytest.mark.parametrize("heads", [2, 3])
def test_heads_of_one_feature_convert_as_wider_heads(form, heads):
    """``view(B, T, H, 1)``: the size-1 axis is read as the head width, so the graph has the
    groups, query/key inverse tie, cuts and head blocks of the same model with heads of 2
    features; exact round trip, 20 float64 actions keep the function, a query scaled without
    its key changes it."""
    torch.manual_seed(0)
    one, two = (_Heads(heads, w, form).double().eval() for w in (1, 2))
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    g, _ = assert_round_trip(one, x)
    g2 = C.to_graph(two, x)
    (recs, att), (recs2, att2) = _per_head(g, 1), _per_head(g2, 2)
    assert att == [(heads, 1, 1)] and att2 == [(heads, 2, 2)]
    assert recs == recs2
    assert recs[_sets(g)["q"]]["inv_tie"] == _sets(g)["k"]
    assert recs[_sets(g)["q"]]["blocks"]["size"] == 1
    y, gen = one(x), torch.Generator().manual_seed(0)
    moved = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        qn = _nodes(g, "q")
        moved |= not torch.equal(a.perm[qn], qn)
        assert rel_err(C.to_module(a.apply(g))(x), y) < TOL
        assert rel_err(acted_by_graph(one, g, a)(x), y) < TOL
    assert moved                             # heads of one feature are moved as blocks
    assert rel_err(_moved(one, g, q=_one(g, _nodes(g, "q")[0], 2.0))(x), y) > 1e-6


def test_a_token_count_of_one_is_not_read_as_a_head_width():
    """Only a size-1 axis that a view added after the features is a head width of one (its
    size is the graph's): the scores scaled by the token count, 1 in the example input, are
    refused rather than scaled by a constant 1."""
    class ByTokens(_Heads):
        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (f(x).view(B, T, self.h, -1).transpose(1, 2) for f in (self.q, self.k,
                                                                               self.v))
            y = (q @ k.transpose(-2, -1) / k.transpose(-2, -1).size(-1)).softmax(-1) @ v
            return self.o(y.transpose(1, 2).reshape(B, T, -1))

    m = ByTokens(2, 1, "written").double().eval()
    with pytest.raises(C.UnsupportedLayerError, match=r"multiplied or divided by a Python number"):
        C.to_graph(m, torch.randn(3, 1, 3, dtype=torch.float64))
    C.to_graph(_Heads(2, 1, "written").double().eval(), torch.randn(3, 1, 3, dtype=torch.float64))
