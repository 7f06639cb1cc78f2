"""Idiomatic forms that were refused by name and now convert (docs/design.md 3.10): GPT-2's fused
QKV projection cut in three (``c_attn(x).split(C, dim=2)``, ``chunk(3, dim=-1)``), indexing a
token axis (a CLS readout ``x[:, 0]``, ``x[:, -1]``), positions looked up with
``self.wpe(torch.arange(T))``, and the max over a token or spatial axis (``.max(dim).values``,
``.max(dim)[0]``, ``torch.amax``, ``F.max_pool1d(x, x.size(2))``). For each: groups, bitwise
round trips (``tests/test_ops.py`` and ``tests/test_model_zoo.py`` add float32/float64 and 20
random actions), negative controls, refusals naming the node."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters as C
from checks import TOL, acted_by_graph, assert_round_trip, nodes_of, rel_err
from zoo import make


def _groups(g):
    return {ns["name"]: ns["group"] for ns in g.arch.nodesets}


def _act(g, factors=None, perm=None):
    N = g.num_nodes
    return C.Action(torch.arange(N) if perm is None else perm,
                    torch.ones(N, dtype=torch.float64) if factors is None else factors)


def _factor(g, name, q, index=1):
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[nodes_of(g, name)[index]] = q
    return f


# -- fused QKV ------------------------------------------------------------------------------
def test_fused_qkv_thirds_are_three_node_sets_coupled_like_separate_projections():
    model, x = make("fused_qkv")
    g = C.to_graph(model, x)
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    names = [ns["name"] for ns in g.arch.nodesets]
    q, k, v = (recs[f"c_attn[{a}:{a + 4}]"] for a in (0, 4, 8))
    assert (q["group"], k["group"], v["group"]) == ("linear", "linear", "linear")
    assert names[q["inv_tie"]] == "c_attn[4:8]" and names[k["inv_tie"]] == "c_attn[0:4]"
    assert "inv_tie" not in v and q["align"] == k["align"] != v["align"]
    assert tuple(q["perm_cuts"]) == tuple(k["perm_cuts"]) == tuple(v["perm_cuts"]) == (2,)
    # chunk(3, dim=-1) into one head of 6 each, written-out attention, tanh on the values
    q2, k2, v2 = (recs[f"c2[{a}:{a + 6}]"] for a in (0, 6, 12))
    assert names[q2["inv_tie"]] == "c2[6:12]" and v2["group"] == "sign"
    assert tuple(q2["perm_cuts"]) == tuple(v2["perm_cuts"]) == ()
    assert [op["split"] for op in g.arch.ops if op["op"] == "linear" and "split" in op] == [3, 3]
    assert C.to_module(g).state_dict()["c_attn.weight"].shape == (12, 4)   # one Parameter


def test_fused_qkv_controls():
    """Q scaled without K, Q and K scaled alike, a query dimension moved to the other head:
    each changes the function; Q x s with K / s keeps it."""
    model, x = make("fused_qkv")
    g = C.to_graph(model, x)
    y = model(x)
    f = _factor(g, "c_attn[0:4]", 2.5)
    assert rel_err(acted_by_graph(model, g, _act(g, f))(x), y) > 1e-6
    f[nodes_of(g, "c_attn[4:8]")[1]] = 2.5
    assert rel_err(acted_by_graph(model, g, _act(g, f))(x), y) > 1e-6
    f[nodes_of(g, "c_attn[4:8]")[1]] = 1 / 2.5
    assert rel_err(acted_by_graph(model, g, _act(g, f))(x), y) < TOL
    perm = torch.arange(g.num_nodes)
    for name in ("c_attn[0:4]", "c_attn[4:8]"):       # dimension 1 (head 0) <-> 2 (head 1)
        n = nodes_of(g, name)
        perm[n[1]], perm[n[2]] = n[2], n[1]
    assert rel_err(acted_by_graph(model, g, _act(g, perm=perm))(x), y) > 1e-6


class _Split(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.qkv, self.out = how, nn.Linear(3, 12), nn.Linear(4, 2)

    def forward(self, x):
        h = self.qkv(x)
        if self.how == "unequal":
            q, kv = h.split([4, 8], dim=-1)
            k, v = kv.chunk(2, dim=-1)
        elif self.how == "reused":
            q, k, v = h.split(4, dim=-1)
            v = v + h[..., :4]
        else:                                              # split along the tokens
            q, k, v = h.split(2, dim=1)
            return self.out(q[..., :4])
        return self.out(F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("how, node, why", [
    ("unequal", "split", "equal pieces"),
    ("reused", "split", "by nothing else"),
    ("tokens", "split", "equal pieces"),
])
def test_other_cuts_of_a_linear_are_refused_naming_the_node(how, node, why):
    with pytest.raises(C.UnsupportedLayerError) as e:
        C.to_graph(_Split(how).double(), torch.randn(2, 6, 3, dtype=torch.float64))
    assert f"'{node}" in str(e.value) and why in str(e.value)


# -- indexing a token axis, max over a token axis ---------------------------------------------
def test_token_readouts_and_maxima_groups():
    g = C.to_graph(*make("token_readouts"))
    assert {k: v for k, v in _groups(g).items() if len(k) == 1} == {
        "a": "linear",   # h[:, 0]: every factor passes
        "b": "sign",     # tanh, then h[:, -1, :]
        "c": "scale",    # relu, then max over the tokens
        "d": "scale",    # max over the tokens: positive factors (max(-x) = -min(x))
        "e": "perm",     # gelu
        "f": "linear",   # h[:, 1:][..., 0, :]
    }
    g2 = C.to_graph(*make("conv_max_time"))
    assert [_groups(g2)[n] for n in ("c1", "c2", "c3")] == ["scale", "scale", "sign"]
    assert sum(op["op"] == "amax" for op in g2.arch.ops) == 2


@pytest.mark.parametrize("name, nodeset, bad, good", [
    ("token_readouts", "d", -1.0, 3.0),      # a sign flip through a max changes it
    ("token_readouts", "c", -1.0, 0.5),
    ("token_readouts", "b", 2.0, -1.0),      # tanh read at the last token: signs only
    ("conv_max_time", "c1", -1.0, 2.0),      # F.max_pool1d(h, h.size(2))
    ("conv_max_time", "c2", -1.0, 2.0),      # h.amax(2)
])
def test_max_and_index_controls(name, nodeset, bad, good):
    model, x = make(name)
    g = C.to_graph(model, x)
    y = model(x)
    assert rel_err(acted_by_graph(model, g, _act(g, _factor(g, nodeset, bad)))(x), y) > 1e-6
    assert rel_err(acted_by_graph(model, g, _act(g, _factor(g, nodeset, good)))(x), y) < TOL


def test_the_index_keeps_other_token_counts():
    """The readout and the max read the token count at run time: the rebuilt module agrees
    with the model on fewer and more tokens than the example had."""
    for name, shapes in (("token_readouts", [(2, 3), (9, 3)]), ("conv_max_time", [(3, 4),
                                                                                    (3, 11)])):
        model, x = make(name)
        back = C.to_module(C.to_graph(model, x))
        for shape in shapes:
            z = torch.randn(2, *shape, dtype=torch.float64)
            assert torch.equal(back(z), model(z))


class _Read(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form, self.l1 = form, nn.Linear(3, 4)

    def forward(self, x):
        h = self.l1(x)                                     # (B, T, 4)
        r = {"batch": lambda: h[0], "features": lambda: h[:, :, 0],
             "tensor_index": lambda: h[:, h.size(1) - 1],
             "indices": lambda: h.max(dim=1).indices.float(),
             "argmax_item": lambda: h.max(1)[1].float(),
             "max_features": lambda: h.max(dim=2).values,
             "max_all": lambda: h.max(),
             "maximum": lambda: torch.max(h, h),
             "new_axis": lambda: h[:, None, 0]}[self.form]()
        return r


@pytest.mark.parametrize("form, node, why", [
    ("batch", "getitem", "the batch axis"),
    ("features", "getitem", "the channel axis 2"),
    ("tensor_index", "getitem", "constant integer or slice"),
    ("indices", "getattr", "argmax"),
    ("argmax_item", "getitem", "argmax"),
    ("max_features", "max", "not over the batch or the channels"),
    ("max_all", "max", "every axis"),
    ("maximum", "max", "elementwise maximum"),
    ("new_axis", "getitem", "None"),
])
def test_other_indexing_and_maxima_are_refused_naming_the_node(form, node, why):
    with pytest.raises(C.UnsupportedLayerError) as e:
        C.to_graph(_Read(form).double(), torch.randn(2, 5, 3, dtype=torch.float64))
    assert f"'{node}" in str(e.value) and why in str(e.value), str(e.value)


def test_max_pool_over_the_whole_length_with_a_stride_is_refused():
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.out = nn.Conv1d(2, 3, 1), nn.Linear(3, 2)

        def forward(self, x):
            h = self.c(x)
            return self.out(F.max_pool1d(h, h.size(2), stride=1).squeeze(2))
    with pytest.raises(C.UnsupportedLayerError, match="'max_pool1d.*default stride"):
        C.to_graph(P(), torch.randn(2, 2, 5))


# -- positions looked up with torch.arange ----------------------------------------------------
def test_arange_positions_are_a_position_table_with_one_edge_per_entry():
    model, ids = make("emb_arange")
    g = C.to_graph(model, ids)
    recs = {ns["name"]: ns for ns in g.arch.nodesets}
    for key, L, d in (("wpe.weight", 8, 4), ("wpe2.weight", 6, 5)):
        assert recs[key]["size"] == L and recs[key]["group"] == "fixed"
        assert recs[key]["role"] == "other"
        src = nodes_of(g, key)
        assert int(torch.isin(g.edge_index[0], src).sum()) == L * d     # one edge per entry
    pos = [op for op in g.arch.ops if op["op"] == "position"]
    assert [(op["param"], tuple(op["sliced"])) for op in pos] == [("wpe.weight", (0,)),
                                                                 ("wpe2.weight", (0,))]
    # tied to the stream: wte + wpe share the token embedding's group (linear), the second
    # table's sum is read by out (through h[:, 0]) and l1's tanh neurons: sign
    assert _groups(g)["wte"] == "linear" and _groups(g)["l1"] == "sign"
    back = C.to_module(g)
    for T in (1, 3, 6):          # other lengths than the example's 5, up to the tables' 6
        z = torch.randint(0, 7, (4, T))
        assert torch.equal(back(z), model(z))


def test_arange_positions_controls():
    model, ids = make("emb_arange")
    g = C.to_graph(model, ids)
    y = model(ids)
    # the stream (wte) scaled by 2.5 together with its positions' sum: kept
    f = _factor(g, "wte", 2.5)
    tied = [ns["name"] for ns in g.arch.nodesets if ns["name"].startswith("wpe.weight:")]
    f[nodes_of(g, tied[0])[1]] = 2.5
    assert rel_err(acted_by_graph(model, g, _act(g, f))(x := ids), y) < TOL
    # the token table alone scaled (its position sum not: no graph action, the op rules'
    # action on the state dict): changed
    moved = copy.deepcopy(model)
    moved.load_state_dict(_act(g, _factor(g, "wte", 2.5)).apply_state_dict(g.arch,
                                                                             model.state_dict()))
    assert rel_err(moved(x), y) > 1e-6
    # position nodes are fixed: permuting two positions changes the function
    perm = torch.arange(g.num_nodes)
    n = nodes_of(g, "wpe.weight")
    perm[n[0]], perm[n[1]] = n[1], n[0]
    assert rel_err(acted_by_graph(model, g, _act(g, perm=perm))(x), y) > 1e-6


class _MinGPTPositions(nn.Module):
    """minGPT's positions: ``torch.arange(0, T, dtype=torch.long).unsqueeze(0)`` (shape (1, T))
    looked up in ``wpe``, or (``unsqueeze=False``) nanoGPT's ``torch.arange(T)``."""

    def __init__(self, unsqueeze=True):
        super().__init__()
        self.unsqueeze = unsqueeze
        self.wte, self.wpe, self.head = nn.Embedding(7, 4), nn.Embedding(8, 4), nn.Linear(4, 7)

    def forward(self, idx):
        pos = torch.arange(0, idx.size(1), dtype=torch.long)
        return self.head(torch.tanh(self.wte(idx) + self.wpe(pos.unsqueeze(0) if self.unsqueeze
                                                               else pos)))


def test_arange_unsqueezed_is_the_same_position_table():
    """Fails before: the (1, T) arange was refused at its unsqueeze."""
    torch.manual_seed(0)
    model = _MinGPTPositions().double()
    ids = torch.randint(0, 7, (3, 6))
    g, back = assert_round_trip(model, ids)
    plain = _MinGPTPositions(unsqueeze=False).double()
    plain.load_state_dict(model.state_dict())
    assert g.arch.nodesets == C.to_graph(plain, ids).arch.nodesets
    assert torch.equal(back(ids[:, :2]), model(ids[:, :2]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(acted_by_graph(model, g, a)(ids), model(ids)) < TOL


class _Lookup(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form
        self.wte = nn.Embedding(7, 4)
        self.wpe = nn.Embedding(8, 4, padding_idx=0 if form == "padding" else None)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        T = ids.size(1)
        pos = {"from1": lambda: torch.arange(1, T + 1), "step": lambda: torch.arange(0, T, 2),
               "padding": lambda: torch.arange(T), "added": lambda: torch.arange(T),
               "unsqueeze2": lambda: torch.arange(T).unsqueeze(0).unsqueeze(0)}[self.form]()
        if self.form == "added":
            return self.head(self.wte(ids) + pos[None, :, None])
        if self.form == "step":
            return self.head(self.wpe(pos))
        return self.head(self.wte(ids) + self.wpe(pos))


@pytest.mark.parametrize("form, node, why", [
    ("from1", "arange", "from 0, step 1"),
    ("step", "arange", "from 0, step 1"),
    ("padding", "wpe", "padding_idx=0"),
    ("added", "getitem", "may only be looked up"),     # (an arange added to the stream)
    ("unsqueeze2", "unsqueeze", "one leading axis"),
])
def test_other_uses_of_arange_are_refused_naming_the_node(form, node, why):
    with pytest.raises(C.UnsupportedLayerError) as e:
        C.to_graph(_Lookup(form), torch.randint(0, 7, (2, 5)))
    assert f"'{node}" in str(e.value) and why in str(e.value), str(e.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_new_forms_round_trip_bitwise(dtype):
    for name in ("fused_qkv", "token_readouts", "conv_max_time", "emb_arange"):
        assert_round_trip(*make(name, dtype=dtype))
