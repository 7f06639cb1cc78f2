"""Recurrent layers (nn.RNN tanh/relu, nn.LSTM, nn.GRU): exact round trip, the groups derived in
docs/design.md 3.5, 20 random float64 actions, negative controls, the forms of indexing their
outputs, refusals, and ScaleGMN on graphs with recurrent edges (cycles)."""
import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
from converters.groups import EDGE_TYPES
from zoo import make
from checks import TOL, rel_err, nodes_of


class IssueModel(nn.Module):
    """The model of the issue: a 2-layer LSTM, batch first, a head on the last time step."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class SeqFirstState(nn.Module):
    """Sequence-first LSTM without biases, unpacked as ``out, (h, c)``; the head reads ``h[-1]``
    plus a second head on layer 0's final state ``h[0]`` and the last time step ``out[-1]``."""

    def __init__(self, cls=nn.LSTM):
        super().__init__()
        self.rnn = cls(3, 5, num_layers=2, bias=False)
        self.a, self.b, self.c = nn.Linear(5, 2), nn.Linear(5, 2), nn.Linear(5, 2)

    def forward(self, x):
        if isinstance(self.rnn, nn.LSTM):
            out, (h, c) = self.rnn(x)
        else:
            out, h = self.rnn(x)
        return torch.cat([self.a(h[-1]), self.b(h[0]), self.c(out[-1])], 1)


def _model(factory, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    m = factory().to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.7)
    return m.eval()


def sets(g):
    return {ns["name"]: ns for ns in g.arch.nodesets}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_issue_model_round_trips_bitwise(dtype):
    m = _model(IssueModel, dtype=dtype)
    x = torch.randn(5, 7, 4, dtype=dtype)
    g = C.to_graph(m, x)
    back = C.to_module(g)
    sd, sd2 = m.state_dict(), back.state_dict()
    assert set(sd) == set(sd2)
    for k in sd:
        assert torch.equal(sd[k], sd2[k]) and sd[k].dtype == sd2[k].dtype, k
    assert torch.equal(back(x), m(x))
    # and without an example input (guessed from the layer)
    assert C.to_graph(m).arch == g.arch


def test_the_issue_model_has_the_derived_groups_and_keeps_its_function():
    m = _model(IssueModel)
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    g = C.to_graph(m, x)
    ns = sets(g)
    for layer in (0, 1):
        p = f"rnn.l{layer}."
        assert [ns[p + k]["group"] for k in "ifgoh"] == ["perm", "perm", "sign", "perm", "sign"]
        assert [ns[p + k]["act"] for k in "ifgoh"] == ["sigmoid"] * 2 + ["tanh", "sigmoid",
                                                                         "identity"]
        # one permutation for the gates and the unit; one factor for g and h
        assert len({ns[p + k]["align"] for k in "ifgoh"}) == 1
        assert ns[p + "g"]["tie"] == ns[p + "h"]["tie"] >= 0
        assert ns[p + "i"]["tie"] == -1
    assert ns["input"]["size"] == 4 and ns["head"]["group"] == "fixed"
    # edges: weight_ih (weight), weight_hh (recurrent), g -> h (state, value 1)
    counts = {t: int((g.edge_type == EDGE_TYPES.index(t)).sum()) for t in EDGE_TYPES}
    assert counts == {"weight": 32 * 4 + 32 * 8 + 3 * 8, "residual": 0, "norm": 0,
                      "recurrent": 2 * 32 * 8, "state": 2 * 8}
    assert (g.edge_attr[g.edge_type == EDGE_TYPES.index("state")] == 1).all()
    y, gen = m(x), torch.Generator().manual_seed(0)
    flipped = False
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        moved = a.apply_module(m, x)
        assert rel_err(moved(x), y) < TOL
        flipped |= bool((a.q < 0).any())
    assert flipped


def _custom(g, q=None, perm=None):
    N = g.num_nodes
    return C.Action(torch.arange(N) if perm is None else perm,
                    torch.ones(N, dtype=torch.float64) if q is None else q)


def _changes(m, g, x, action):
    # strict=False: an uncoupled factor also changes the structural g -> h edge, which the
    # rebuilt module does not read; what is compared is the function of the moved weights
    return rel_err(C.to_module(action.apply(g), strict=False)(x), m(x)) > 1e-6


def _flip(g, names, unit=0, factor=-1.0):
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    for n in names:
        q[nodes_of(g, n)[unit]] = factor
    return _custom(g, q)


def _swap(g, names):
    perm = torch.arange(g.num_nodes)
    for n in names:
        a, b = nodes_of(g, n)[:2]
        perm[a], perm[b] = b, a
    return _custom(g, perm=perm)


def test_lstm_negative_controls():
    """The coupled flip (g and h together) keeps the function; each factor or permutation the
    groups do not allow changes it."""
    m, x = make("lstm")
    g = C.to_graph(m, x)
    assert not _changes(m, g, x, _flip(g, ["rnn.l0.g", "rnn.l0.h"]))
    assert not _changes(m, g, x, _swap(g, ["rnn.l0.i", "rnn.l0.f", "rnn.l0.g", "rnn.l0.o",
                                           "rnn.l0.h"]))
    assert _changes(m, g, x, _flip(g, ["rnn.l0.h"]))                 # h without its candidate
    assert _changes(m, g, x, _flip(g, ["rnn.l0.g"]))                 # candidate without h
    assert _changes(m, g, x, _flip(g, ["rnn.l0.i", "rnn.l0.g", "rnn.l0.h"]))  # a sigmoid gate
    assert _changes(m, g, x, _flip(g, ["rnn.l1.g", "rnn.l1.h"], factor=2.0))  # scale, not sign
    assert _changes(m, g, x, _swap(g, ["rnn.l0.i"]))                 # one gate alone
    assert _changes(m, g, x, _swap(g, ["rnn.l0.i", "rnn.l0.f", "rnn.l0.o"]))  # not with h


def test_gru_and_rnn_negative_controls():
    m, x = make("gru_state")
    g = C.to_graph(m, x)
    assert not _changes(m, g, x, _flip(g, ["rnn.l1.n", "rnn.l1.h"]))
    assert not _changes(m, g, x, _swap(g, ["rnn.l1.r", "rnn.l1.z", "rnn.l1.n", "rnn.l1.h"]))
    assert _changes(m, g, x, _flip(g, ["rnn.l1.h"]))
    assert _changes(m, g, x, _flip(g, ["rnn.l1.z", "rnn.l1.n", "rnn.l1.h"]))
    assert _changes(m, g, x, _swap(g, ["rnn.l1.r", "rnn.l1.z"]))     # gates not with h
    assert _changes(m, g, x, _flip(g, ["rnn.l0.n", "rnn.l0.h"], factor=3.0))
    m, x = make("rnn_tanh")
    g = C.to_graph(m, x)
    assert sets(g)["rnn.l0.h"]["group"] == "sign"
    assert not _changes(m, g, x, _flip(g, ["rnn.l0.h"]))
    assert _changes(m, g, x, _flip(g, ["rnn.l0.h"], factor=2.0))
    m, x = make("rnn_relu")
    g = C.to_graph(m, x)
    assert [sets(g)[f"rnn.l{k}.h"]["group"] for k in (0, 1)] == ["scale", "scale"]
    assert not _changes(m, g, x, _flip(g, ["rnn.l0.h"], factor=3.0))
    assert _changes(m, g, x, _flip(g, ["rnn.l0.h"], factor=-1.0))
    # the self-loops h_i -> h_i of a plain RNN hold the diagonal of weight_hh
    rec = g.edge_type == EDGE_TYPES.index("recurrent")
    loops = rec & (g.edge_index[0] == g.edge_index[1])
    assert int(loops.sum()) == 2 * 6


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_sequence_first_state_indexing_and_bias_free(cls):
    m = _model(lambda: SeqFirstState(cls))
    x = torch.randn(6, 4, 3, dtype=torch.float64)           # (time, batch, features)
    g = C.to_graph(m, x)
    assert torch.equal(C.to_module(g)(x), m(x))
    assert g.x.shape[1] == 1                                 # no bias columns without biases
    gen, y = torch.Generator().manual_seed(2), m(x)
    for _ in range(20):
        assert rel_err(C.sample_action(g, generator=gen).apply_module(m, x)(x), y) < TOL


class Reads(nn.Module):
    def __init__(self, how, **kw):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True, **kw)
        self.head = nn.Linear(4, 2)
        self.how = how

    def forward(self, x):
        out, (h, c) = self.rnn(x)
        return self.head({"c": lambda: c[-1], "h": lambda: h, "batch": lambda: out[0],
                          "tuple": lambda: self.rnn(x), "time_slice": lambda: out[:, 1:],
                          "feature": lambda: out[:, -1, :4], "h_out": lambda: h[3],
                          "h_slice": lambda: h[-2:]}[self.how]())


@pytest.mark.parametrize("how, match", [
    ("c", r"cell state c_n of the LSTM 'rnn'"),
    ("h", r"h_n of 'rnn' holds every layer: index it"),
    ("batch", r"only the time dimension"),
    ("feature", r"only the time dimension"),
    ("h_out", r"'getitem_\d' .*index 3 is out of bounds"),   # caught when the model runs
])
def test_unsupported_reads_are_refused_naming_the_node(how, match):
    with pytest.raises(C.UnsupportedLayerError, match=match):
        C.to_graph(Reads(how).eval(), torch.zeros(2, 5, 3))


def test_refusals():
    # bidirectional layers convert (tests/test_recurrent_bidirectional.py); h_n still needs
    # one entry per read, an entry naming its direction
    with pytest.raises(C.UnsupportedLayerError, match=r"index h_n of 'rnn' with one entry "
                                                      r"\(layer \* 2 \+ direction.*\[-2, 2\)"):
        C.to_graph(Reads("h_slice", bidirectional=True).eval(), torch.zeros(2, 5, 3))
    with pytest.raises(C.UnsupportedLayerError, match=r"'rnn'.*proj_size=2"):
        C.to_graph(Reads("c", proj_size=2).eval(), torch.zeros(2, 5, 3))
    with pytest.raises(C.UnsupportedLayerError, match=r"'rnn'.*called more than once"):
        class Twice(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.GRU(3, 3, batch_first=True)

            def forward(self, x):
                return self.rnn(self.rnn(x)[0])[0][:, -1]
        C.to_graph(Twice().eval(), torch.zeros(2, 5, 3))
    train = IssueModel()
    train.rnn.dropout = 0.5
    with pytest.raises(C.UnsupportedLayerError, match=r"'rnn'.*dropout=0.5.*eval"):
        C.to_graph(train.train(), torch.zeros(2, 5, 4))
    assert C.to_graph(train.eval(), torch.zeros(2, 5, 4)).arch.ops[1]["dropout"] == 0.5

    class Unbatched(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.rnn = nn.Linear(3, 3), nn.RNN(3, 3)

        def forward(self, x):
            return self.rnn(self.pre(x))[1][-1]
    with pytest.raises(C.UnsupportedLayerError, match=r"'rnn'.*rank-3"):
        C.to_graph(Unbatched().eval(), torch.zeros(2, 3))


def test_the_output_may_be_the_recurrent_state_itself():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, num_layers=2, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0][:, -1]
    m = _model(Bare)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    g = C.to_graph(m, x)
    ns = sets(g)
    # the last layer is the output: fixed, gates included (aligned with it); layer 0 is not
    assert {ns[f"rnn.l1.{k}"]["group"] for k in "rznh"} == {"fixed"}
    assert ns["rnn.l0.h"]["group"] == "sign"
    assert torch.equal(C.to_module(g)(x), m(x))


# -- metanetworks on recurrent graphs ------------------------------------------------------------
def test_scalegmn_is_equivariant_on_recurrent_graphs_and_others_refuse():
    import scalegmn
    from scalegmn.gmn.plan import engine_for
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    same = Batch.from_data_list([C.to_graph(*make("lstm", seed=s)) for s in range(3)])
    mixed = C.batch_graphs([C.to_graph(*make(n, seed=s)) for n in ("lstm", "gru_state",
                                                                    "rnn_relu", "mlp_relu")
                            for s in range(2)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert {"sign", "scale"} <= set(errors)
        assert_sensitive(net, mixed, "uncoupled")
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        errors = assert_equivariant(editor, same, n_actions=2)
        assert "sign" in errors
        assert_sensitive(editor, same, "unclaimed")
        # an edit keeps the structural state edges at 1: the edited network rebuilds
        edited = editor.double()(same.clone())
        for gr in edited.to_data_list():
            C.to_module(gr)
    # the auto engine is the sparse one; the dense engine refuses graphs with cycles
    assert engine_for(tuple(same.arch), "auto", False, "cpu").name == "sparse"
    with pytest.raises(ValueError, match="dense engine runs acyclic graphs only.*recurrent"):
        engine_for(tuple(same.arch), "dense", False, "cpu")
    for backend in ("monomial-nfn", "magep-nfn", "np", "hnp", "statnn"):
        with pytest.raises(ValueError, match=r"\['rnn', 'select'\]"):
            scalegmn.build(backend, "invariant", spec=same, out_dim=2, **small)(same)


def test_edge_type_embeddings_grow_only_for_recurrent_graphs():
    """The two new edge types add embedding rows only to models built for recurrent graphs;
    a model built without them refuses a recurrent batch clearly."""
    import scalegmn
    plain = Batch.from_data_list([C.to_graph(*make("mlp_relu"))])
    rec = Batch.from_data_list([C.to_graph(*make("lstm"))])
    net = scalegmn.build("scalegmn", "invariant", spec=plain, out_dim=2, hidden=8, layers=2)
    assert net.embedding.pe_edge.shape[0] == 3
    rnet = scalegmn.build("scalegmn", "invariant", spec=rec, out_dim=2, hidden=8, layers=2)
    assert rnet.embedding.pe_edge.shape[0] == len(EDGE_TYPES)
    big = scalegmn.build("scalegmn", "invariant", spec=C.batch_graphs(
        [C.to_graph(*make("mlp_relu")), C.to_graph(*make("resnet"))]), out_dim=2, hidden=8,
        layers=2)
    with pytest.raises(ValueError, match="edges of type 'state'"):
        big(C.batch_graphs([C.to_graph(*make("lstm"))]))


def test_a_linear_reads_a_time_slice():
    """`head(out[:, 1:])` (refused before: a Linear on a selected sequence) converts exactly and
    keeps its function under 20 actions."""
    m = Reads("time_slice").double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    g = C.to_graph(m, x)
    assert torch.equal(C.to_module(g)(x), m(x))
    y = m(x)
    for s in range(20):
        a = C.sample_action(g, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            assert float((C.to_module(a.apply(g))(x) - y).abs().max() / y.abs().max()) < 1e-9


def test_a_linear_reads_the_whole_output_sequence():
    """`head(out)` on every time step of a batch-first LSTM (was refused: the selected sequence
    did not record that its features are on the last axis): exact round trip, the LSTM's
    groups, and 20 random actions keep the function."""
    class SeqHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out).mean(1)

    torch.manual_seed(0)
    model = SeqHead().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    g = C.to_graph(model, x)
    assert torch.equal(C.to_module(g)(x), model(x))
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", "perm", "perm", "sign", "perm",
                                                        "sign", "fixed"]
    y = model(x)
    for s in range(20):
        a = C.sample_action(g, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            moved = C.to_module(a.apply(g))(x)
        assert float((moved - y).abs().max() / y.abs().max()) < 1e-9


# -- sequence-first layers: the time axis is dimension 0 ----------------------------------------
class SeqFirstHead(nn.Module):
    """A sequence-first LSTM (with biases) and a Linear head on the last time step ``out[-1]``."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


def test_sequence_first_reads_time_on_dimension_0():
    """Sequence length 7, batch 3: ``out[-1]`` is the last time step of every sequence (not the
    last sequence of the batch): exact round trip, each sample's output independent of the
    others, 20 actions; the architecture does not depend on the lengths it was traced with."""
    m = _model(SeqFirstHead)
    x = torch.randn(7, 3, 3, dtype=torch.float64)            # (time, batch, features)
    g = C.to_graph(m, x)
    index = [op["index"] for op in g.arch.ops if op["op"] == "select" and op["index"]]
    assert [list(i) for i in index] == [[-1, "all", "all"]]
    back = C.to_module(g)
    y = back(x)
    assert y.shape == (3, 2) and torch.equal(y, m(x))
    assert torch.equal(back(x[:, 1:2]), m(x[:, 1:2])) and rel_err(back(x[:, 1:2]), y[1:2]) < TOL
    assert C.to_graph(m, torch.randn(4, 5, 3, dtype=torch.float64)).arch == g.arch
    assert C.to_graph(m).arch == g.arch
    gen = torch.Generator().manual_seed(4)
    for _ in range(20):
        assert rel_err(C.sample_action(g, generator=gen).apply_module(m, x)(x), y) < TOL


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_the_dense_view_runs_sequence_first_layers(cls):
    """``functional_forward`` takes a sequence-first network's input in its own layout
    ``(T, n, F)`` (was refused: the dense view ran batch-first layers only); the B networks
    agree with their modules."""
    from torch_geometric.data import Batch as _Batch
    ms = [_model(lambda: SeqFirstState(cls), seed=s) for s in range(3)]
    x = torch.randn(6, 4, 3, dtype=torch.float64)            # (time 6, batch 4, features 3)
    dense = C.to_dense(_Batch.from_data_list([C.to_graph(m, x) for m in ms]))
    with torch.no_grad():
        y = C.functional_forward(dense, x)
        ref = torch.stack([m(x) for m in ms])
        assert y.shape == ref.shape == (3, 4, 6) and rel_err(y, ref) < 1e-12
        xb = torch.randn(3, 6, 4, 3, dtype=torch.float64)     # one input per network
        yb = C.functional_forward(dense, xb)
        assert rel_err(yb, torch.stack([m(xi) for m, xi in zip(ms, xb)])) < 1e-12


def test_the_dense_view_names_the_sequence_first_forms_it_cannot_run():
    """A whole output sequence of a sequence-first layer (its batch axis is not the first) and
    a sequence-first layer behind another layer: a clear error naming the layer."""
    from torch_geometric.data import Batch as _Batch

    class Tokens(nn.Module):
        def __init__(self, pre=False):
            super().__init__()
            self.pre = nn.Linear(3, 3) if pre else nn.Identity()
            self.rnn, self.head = nn.GRU(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            out = self.rnn(self.pre(x))[0]
            return self.head(out[-1]) if isinstance(self.pre, nn.Linear) else self.head(out)
    x = torch.randn(5, 2, 3)
    for pre, match in ((False, r"'rnn'.*one time step at a time"),
                       (True, r"'rnn'.*only on the network input")):
        m = Tokens(pre).eval()
        dense = C.to_dense(_Batch.from_data_list([C.to_graph(m, x)]))
        with pytest.raises(ValueError, match=match):
            C.functional_forward(dense, x)
