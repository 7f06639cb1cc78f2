"""Bidirectional recurrent layers (nn.RNN tanh/relu, nn.LSTM, nn.GRU with bidirectional=True,
docs/design.md 3.7): exact round trip (float32, float64), the groups (one permutation per
direction, the two directions independent), 20 random float64 actions through the state dict
and through the graph, negative controls (a forward unit exchanged with a backward one, ...),
the readouts people write, the dense view and ScaleGMN on the graphs."""
import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
from converters.groups import EDGE_TYPES
from checks import TOL, acted_by_graph, assert_round_trip, nodes_of, rel_err

CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
GATES = {"lstm": "ifgo", "gru": "rzn", "rnn_tanh": "", "rnn_relu": ""}


class BiHead(nn.Module):
    """A bidirectional recurrent layer (input 3, hidden 4) and a Linear head reading ``read``:
    ``last`` (``out[:, -1]`` / ``out[-1]``), ``cat`` (``torch.cat([h_n[-2], h_n[-1]], 1)``),
    ``tok`` (``head(out)`` token-wise), ``first`` (``h_n[0, :, :]``, layer 0 forward)."""

    def __init__(self, kind="lstm", read="last", num_layers=2, batch_first=True, bias=True):
        super().__init__()
        kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
        self.rnn = CLASSES[kind](3, 4, num_layers=num_layers, batch_first=batch_first, bias=bias,
                                 bidirectional=True, **kw)
        self.head = nn.Linear(4 if read == "first" else 8, 2)
        self.read, self.batch_first = read, batch_first

    def forward(self, x):
        if isinstance(self.rnn, nn.LSTM):
            out, (h_n, c_n) = self.rnn(x)
        else:
            out, h_n = self.rnn(x)
        if self.read == "last":
            return self.head(out[:, -1] if self.batch_first else out[-1])
        if self.read == "cat":
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))
        if self.read == "first":
            return self.head(h_n[0, :, :])
        return self.head(out)


def _model(dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    m = BiHead(**kw).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.7)
    return m.eval()


def _x(batch_first, dtype=torch.float64, seed=1):
    # batch 3, sequence 5: a batch axis read as time (or the reverse) would show
    shape = (3, 5, 3) if batch_first else (5, 3, 3)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def sets(g):
    return {ns["name"]: ns for ns in g.arch.nodesets}


CASES = [(kind, read, layers, bf, bias)
         for kind in CLASSES for read in ("last", "cat", "tok")
         for layers, bf, bias in ((2, True, True), (1, False, False))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind, read, layers, bf, bias", CASES)
def test_round_trip_is_bitwise(kind, read, layers, bf, bias, dtype):
    m = _model(dtype, kind=kind, read=read, num_layers=layers, batch_first=bf, bias=bias)
    x = _x(bf, dtype)
    g, back = assert_round_trip(m, x)
    assert back.rnn.bidirectional and back.rnn.batch_first == bf
    # without an example input: the same architecture (guessed from the layer)
    assert C.to_graph(m).arch == g.arch


@pytest.mark.parametrize("kind, read, layers, bf, bias", CASES)
def test_twenty_random_actions_keep_the_function(kind, read, layers, bf, bias):
    m = _model(kind=kind, read=read, num_layers=layers, batch_first=bf, bias=bias)
    x = _x(bf)
    g = C.to_graph(m, x)
    y, gen = m(x), torch.Generator().manual_seed(3)
    crossed = 0
    sd = m.state_dict()
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(a.apply_module(m, x)(x), y) < TOL                 # state-dict rule
        assert rel_err(acted_by_graph(m, g, a)(x), y) < TOL              # graph action
        by_rules, by_graph = a.apply_state_dict(g.arch, sd), C.to_state_dict(a.apply(g))
        assert set(by_rules) == set(by_graph)
        assert all(torch.equal(by_rules[k], by_graph[k]) for k in by_graph)   # bitwise alike
        crossed += int((a.perm != torch.arange(g.num_nodes)).any())
    assert crossed >= 15


def test_groups_one_permutation_per_direction():
    m = _model(kind="lstm", read="cat")
    g = C.to_graph(m, _x(True))
    ns = sets(g)
    aligns = []
    for layer in (0, 1):
        for d in ("", "_reverse"):
            p = f"rnn.l{layer}{d}."
            assert [ns[p + k]["group"] for k in "ifgoh"] == ["perm", "perm", "sign", "perm",
                                                             "sign"]
            assert len({ns[p + k]["align"] for k in "ifgoh"}) == 1
            assert ns[p + "g"]["tie"] == ns[p + "h"]["tie"] >= 0
            aligns.append(ns[p + "h"]["align"])
    assert len(set(aligns)) == 4                  # the directions and layers are independent
    # ReLU: positive factors per direction; the last layer read by the output alone is fixed
    m = _model(kind="rnn_relu", read="last")
    m.head = nn.Identity()
    ns = sets(C.to_graph(m, _x(True)))
    assert [ns[f"rnn.l0{d}.h"]["group"] for d in ("", "_reverse")] == ["scale", "scale"]
    assert [ns[f"rnn.l1{d}.h"]["group"] for d in ("", "_reverse")] == ["fixed", "fixed"]


def test_edges_a_next_layer_reads_both_directions():
    m = _model(kind="gru", read="last")
    g = C.to_graph(m, _x(True))
    counts = {t: int((g.edge_type == EDGE_TYPES.index(t)).sum()) for t in EDGE_TYPES}
    H, G = 4, 12
    assert counts == {"weight": 2 * G * 3 + 2 * G * 2 * H + 2 * 2 * H, "residual": 0, "norm": 0,
                      "recurrent": 4 * G * H, "state": 4 * H}
    # the backward direction of layer 1 reads the forward and backward units of layer 0
    src = g.edge_index[0][g.edge_index[1] == nodes_of(g, "rnn.l1_reverse.r")[0]]
    for name in ("rnn.l0.h", "rnn.l0_reverse.h", "rnn.l1_reverse.h"):
        assert set(nodes_of(g, name).tolist()) <= set(src.tolist())
    assert not set(nodes_of(g, "rnn.l1.h").tolist()) & set(src.tolist())


def _action(g, q=None, perm=None):
    N = g.num_nodes
    return C.Action(torch.arange(N) if perm is None else perm,
                    torch.ones(N, dtype=torch.float64) if q is None else q)


def _changes(m, g, x, action):
    # strict=False: an uncoupled factor also changes the structural state edge
    return rel_err(C.to_module(action.apply(g), strict=False)(x), m(x)) > 1e-6


def _flip(g, names, factor=-1.0, unit=1):
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    for n in names:
        q[nodes_of(g, n)[unit]] = factor
    return _action(g, q=q)


def _exchange(g, pairs, i=1, j=1):
    """Node i of the first node set of each pair exchanged with node j of the second
    (``i=None``: every node, position by position)."""
    perm = torch.arange(g.num_nodes)
    for a, b in pairs:
        u, v = nodes_of(g, a), nodes_of(g, b)
        if i is not None:
            u, v = u[i], v[j]
        perm[u], perm[v] = v, u
    return _action(g, perm=perm)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_negative_controls(kind):
    """Moves inside one direction's group keep the function; exchanging the forward units with
    the backward ones (all gates together: the graph's structure allows it), permuting one
    direction's gates without its units, flipping a unit without its candidate, or a factor 2
    on a sign unit change it. One forward unit exchanged with one backward unit is not even a
    symmetry of the graph (the recurrent edges stay within a direction): the action refuses."""
    m = _model(kind=kind, read="cat")
    x = _x(True)
    g = C.to_graph(m, x)
    unit = [k for k in GATES[kind]] + ["h"]
    fw = [f"rnn.l0.{k}" for k in unit]
    bw = [f"rnn.l0_reverse.{k}" for k in unit]
    tied = [f"rnn.l0_reverse.{k}" for k in ("g" if kind == "lstm" else "n", "h")
            if kind != "rnn_tanh" or k == "h"]
    # inside the group: a backward unit flipped with its candidate; two backward units swapped
    assert not _changes(m, g, x, _flip(g, tied))
    assert not _changes(m, g, x, _exchange(g, [(n, n) for n in bw], 0, 2))
    # outside: the forward units exchanged with the backward units
    assert _changes(m, g, x, _exchange(g, list(zip(fw, bw)), None))
    with pytest.raises(ValueError, match="does not preserve the graph structure"):
        _exchange(g, list(zip(fw, bw))).apply(g)
    assert _changes(m, g, x, _flip(g, tied, factor=2.0))                   # sign, not scale
    if kind != "rnn_tanh":
        assert _changes(m, g, x, _flip(g, ["rnn.l0_reverse.h"]))          # without candidate
        sigmoid = [n for n in bw[:-1] if n[-1] not in "gn"]     # (the candidate has a state
        assert _changes(m, g, x, _exchange(g, [(n, n) for n in sigmoid], 0, 2))  # edge to h)
    # the last layer too (read by the head through h_n[-2], h_n[-1])
    fw1 = [n.replace("l0", "l1") for n in fw]
    bw1 = [n.replace("l0", "l1") for n in bw]
    assert not _changes(m, g, x, _exchange(g, [(n, n) for n in fw1], 0, 3))
    assert _changes(m, g, x, _exchange(g, list(zip(fw1, bw1)), None))


def test_relu_negative_control():
    m = _model(kind="rnn_relu", read="tok")
    x = _x(True)
    g = C.to_graph(m, x)
    assert not _changes(m, g, x, _flip(g, ["rnn.l1_reverse.h"], factor=3.0))
    assert _changes(m, g, x, _flip(g, ["rnn.l1_reverse.h"], factor=-1.0))


def test_h_n_reads_name_their_direction():
    """``h_n[0, :, :]`` reads layer 0 forward only; a slice of h_n is refused naming the node
    and the ``layer * 2 + direction`` rule, an entry out of range naming the node."""
    m = _model(kind="gru", read="first")
    x = _x(True)
    g, _ = assert_round_trip(m, x)
    src = g.edge_index[0][g.edge_index[1] == nodes_of(g, "head")[0]]
    assert set(src.tolist()) == set(nodes_of(g, "rnn.l0.h").tolist())

    class Slice(nn.Module):
        def __init__(self, idx):
            super().__init__()
            self.rnn, self.fc, self.idx = nn.GRU(3, 4, bidirectional=True), nn.Linear(4, 1), idx

        def forward(self, x):
            return self.fc(self.rnn(x)[1][self.idx])
    with pytest.raises(C.UnsupportedLayerError, match=r"getitem.*layer \* 2 \+ direction.*"
                                                      r"h_n\[-2\], h_n\[-1\]"):
        C.to_graph(Slice(slice(-2, None)).eval(), torch.zeros(5, 3, 3))
    with pytest.raises(C.UnsupportedLayerError, match=r"getitem.*index 2 is out of bounds"):
        C.to_graph(Slice(2).eval(), torch.zeros(5, 3, 3))   # (caught when the model runs)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
@pytest.mark.parametrize("bf", [True, False])
def test_the_dense_view_runs_bidirectional_layers(kind, bf):
    read = "tok" if bf else "last"
    ms = [_model(kind=kind, read=read, batch_first=bf, seed=s) for s in range(3)]
    x = _x(bf)
    dense = C.to_dense(Batch.from_data_list([C.to_graph(m, x) for m in ms]))
    with torch.no_grad():
        y = C.functional_forward(dense, x)
        ref = torch.stack([m(x) for m in ms])
    assert y.shape == ref.shape and rel_err(y, ref) < 1e-12


def test_scalegmn_is_equivariant_on_bidirectional_graphs():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    graphs = [C.to_graph(_model(kind=k, read=r, seed=s), _x(True))
              for k, r in (("lstm", "cat"), ("gru", "tok"), ("rnn_relu", "last")) for s in (0, 1)]
    mixed = C.batch_graphs(graphs)
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, hidden=8,
                             layers=2).double()
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert {"perm", "sign", "scale"} <= set(errors)
        assert_sensitive(net, mixed, "uncoupled")
    same = Batch.from_data_list(graphs[:2])
    editor = scalegmn.build("scalegmn", "equivariant", spec=same, hidden=8, layers=2).double()
    assert "sign" in assert_equivariant(editor, same, n_actions=2)
    for gr in editor(same.clone()).to_data_list():    # edited networks rebuild
        C.to_module(gr)


# -- the model zoo's BiLSTM classifier -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_zoo_bilstm_classifier(dtype):
    """``converters.models.lstm_classifier(bidirectional=True)`` (a head on
    ``torch.cat([h_n[-2], h_n[-1]], 1)``): exact round trip, 20 actions keep its function, a
    sigmoid gate scaled or the two directions of layer 1 exchanged change it."""
    from converters import zoo_models as Z
    torch.manual_seed(0)
    m = Z.lstm_classifier(bidirectional=True).to(dtype).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)                       # units well away from 0
    x = Z.example_input("lstm_classifier", 3, dtype)
    g, _ = assert_round_trip(m, x)
    assert g.arch.ops[1]["bidirectional"] and m.fc.in_features == 32
    if dtype != torch.float64:
        return
    y, gen = m(x), torch.Generator().manual_seed(5)
    for _ in range(20):
        assert rel_err(acted_by_graph(m, g, C.sample_action(g, generator=gen))(x), y) < TOL
    assert sets(g)["rnn.l1_reverse.f"]["group"] == "perm"
    assert _changes(m, g, x, _flip(g, ["rnn.l1_reverse.f"], factor=2.0))
    unit = ["i", "f", "g", "o", "h"]
    assert _changes(m, g, x, _exchange(g, [(f"rnn.l1.{k}", f"rnn.l1_reverse.{k}")
                                           for k in unit], None))
