"""Metanetworks on the new graphs: ScaleGMN, ScaleGMN-B and GMN (sparse engine) read one batch
mixing an MLP, a CNN, a transformer encoder (``nn.TransformerEncoderLayer``) and an LSTM, and
tied-weight language models (``edge_tie``, the inverse tie of the embedding and the head):
float64 equivariance (``scalegmn.testing.assert_equivariant``) with sensitivity controls; the
parameter-sharing backends refuse such graphs naming the ops they cannot read."""
import pytest
import torch
from torch_geometric.data import Batch

import converters as C
import scalegmn
from converters.layout import layout
from scalegmn.testing import assert_equivariant, assert_sensitive
from zoo import make

SMALL = dict(hidden=8, layers=2)
#: the metanetworks that read any graph: backend -> build options
GRAPH_BACKENDS = {"scalegmn": {}, "scalegmn-b": {}, "gmn": {"engine": "sparse"}}
MIXED = ("mlp_relu", "cnn_grouped", "encoder", "lstm")
TIED = ("emb_tied_lm", "emb_tied_tanh", "mlp_relu")


def _batch(names, seeds=(0,)):
    return C.batch_graphs([C.to_graph(*make(n, seed=s)) for n in names for s in seeds])


@pytest.mark.parametrize("backend", sorted(GRAPH_BACKENDS))
def test_a_mixed_batch_of_mlp_cnn_transformer_and_lstm(backend):
    mixed = _batch(MIXED)
    groups = {C.GROUPS[int(g)] for g in mixed.group.unique()}
    assert {"perm", "sign", "scale", "linear"} <= groups
    net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **SMALL,
                         **GRAPH_BACKENDS[backend])
    errors = assert_equivariant(net, mixed, n_actions=2)
    claimed = set(net.claimed_groups())
    assert {"perm", *(groups & claimed - {"fixed"})} <= set(errors)
    assert_sensitive(net, mixed, "uncoupled")
    assert_sensitive(net, mixed, "unclaimed")
    assert_sensitive(net, mixed, "io_permutation")


@pytest.mark.parametrize("backend", sorted(GRAPH_BACKENDS))
def test_tied_weights_and_the_inverse_tie_of_embedding_and_head(backend):
    """Graphs with ``edge_tie`` (``head.weight = emb.weight``): the embedding's neurons and the
    head's input neurons take reciprocal factors; invariant and editing models are equivariant
    and sensitive."""
    mixed = _batch(TIED, seeds=(0, 1))
    assert bool((mixed.edge_tie >= 0).any())
    net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **SMALL,
                         **GRAPH_BACKENDS[backend])
    assert_equivariant(net, mixed, n_actions=2)
    assert_sensitive(net, mixed, "uncoupled")
    assert_sensitive(net, mixed, "unclaimed")
    same = Batch.from_data_list([C.to_graph(*make("emb_tied_lm", seed=s)) for s in range(2)])
    editor = scalegmn.build(backend, "equivariant", spec=same, **SMALL,
                            **GRAPH_BACKENDS[backend])
    assert_equivariant(editor, same, n_actions=2)
    assert_sensitive(editor, same, "unclaimed")


@pytest.mark.parametrize("backend", sorted(GRAPH_BACKENDS))
def test_an_edit_of_a_tied_weight_keeps_it_tied(backend):
    """An editing model changes the two edges of one tied weight by the same delta (their mean),
    so the edited network rebuilds with its weights still tied (before: 'edited unequally')."""
    same = Batch.from_data_list([C.to_graph(*make(n)) for n in ("emb_tied_lm",
                                                                "emb_tied_tanh")])
    editor = scalegmn.build(backend, "equivariant", spec=same, **SMALL,
                            **GRAPH_BACKENDS[backend]).double()
    with torch.no_grad():
        edited = editor(same.clone())
    for gr in edited.to_data_list():
        m = C.to_module(gr)
        assert m.head.weight is m.emb.weight
    # the deltas are the model's own, the two edges of a tie take their mean
    plain = same.clone()
    del plain.edge_tie
    with torch.no_grad():
        raw = editor(plain).delta_edge_attr
    tie = same.edge_tie
    assert bool((tie >= 0).any())
    untied = tie < 0
    assert torch.equal(edited.delta_edge_attr[untied], raw[untied])
    gid = C.batch_vector(same)[same.edge_index[0]]
    for t in tie[tie >= 0].unique()[:5]:
        for k in range(2):
            e = ((tie == t) & (gid == k)).nonzero().squeeze(1)
            assert len(e) == 2
            assert torch.allclose(edited.delta_edge_attr[e], raw[e].mean(0).expand(2, -1),
                                  rtol=1e-12, atol=0)


def test_scalegmn_sees_the_attention_temperature_through_its_pair_message():
    """Queries and keys scaled by the *same* factor give another function (the logits scale by
    its square), a valid network. The per-neuron functions alone are exactly invariant to it
    (``pair_messages=False``: the control); the pair message makes ScaleGMN and ScaleGMN-B see
    it (docs/methods.md 2.3)."""
    m, x = make("attn_sdpa")
    g = C.to_graph(m, x)
    pairs = layout(g.arch).inverse_pairs
    assert len(pairs)
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[pairs[:, 0]] = q[pairs[:, 1]] = 2.0
    hot = C.Action(torch.arange(g.num_nodes), q).apply(g)
    with torch.no_grad():
        y, y_hot = m(x), C.to_module(hot)(x)
    assert ((y_hot - y).abs().max() / y.abs().max()).item() > 1e-2      # another function
    b, b_hot = C.batch_graphs([g]), C.batch_graphs([hot])
    for backend in ("scalegmn", "scalegmn-b"):
        for pairs_on in (False, True):
            torch.manual_seed(0)
            net = scalegmn.build(backend, "invariant", spec=b, out_dim=2,
                                 pair_messages=pairs_on, **SMALL).double()
            with torch.no_grad():
                same = torch.equal(net(b), net(b_hot))
            assert same != pairs_on, (backend, pairs_on)   # blind only without the pair message


@pytest.mark.parametrize("backend", ["monomial-nfn", "magep-nfn", "np", "hnp", "statnn"])
def test_parameter_sharing_backends_refuse_the_new_graphs(backend):
    cases = {"encoder": r"\['add', 'layernorm', 'mha'\]",
             "attn_sdpa": r"\['attention', 'permute', 'view'\]",
             "emb_tied_lm": r"\['add', 'embedding', 'layernorm', 'position', 'tie'\]",
             "lstm": r"\['rnn', 'select'\]"}
    for name, ops in cases.items():
        b = _batch(("mlp_relu", name))
        with pytest.raises(ValueError, match="parameter-sharing backends read chains of "
                                             f"linear/conv layers only; it has {ops}"):
            scalegmn.build(backend, "invariant", spec=b, out_dim=2, **SMALL)(b)
