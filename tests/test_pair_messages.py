"""ScaleGMN's pair message: the function for inverse pairs (an attention's query and key
dimensions take factors s and 1/s). Without it the per-neuron functions cannot tell the symmetry
``Q s, K / s`` from the change of function ``Q s, K s``; with it the model stays exactly
invariant/equivariant and sees the difference."""
import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn.gmn.layers import PairMessage
from scalegmn.testing import assert_equivariant, assert_sensitive, sensitivity
from zoo import make

SMALL = dict(hidden=8, layers=2)


@pytest.fixture(scope="module")
def mixed():
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("attn_sdpa", "mha", "encoder", "mlp_relu")
              for s in range(2)]
    return C.batch_graphs(graphs)


@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
def test_pair_messages_are_equivariant_and_see_queries_and_keys_scaled_alike(mixed, backend):
    net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **SMALL)
    assert net.pairs and all(layer.pair is not None for layer in net.layers)
    errors = assert_equivariant(net, mixed, n_actions=3)
    assert "linear" in errors
    assert_sensitive(net, mixed, "pairs_alike")
    assert_sensitive(net, mixed, "uncoupled")


@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
def test_without_pair_messages_the_model_is_blind_to_queries_and_keys_scaled_alike(mixed,
                                                                                   backend):
    # the control showing what the pair message adds: the per-neuron functions alone are
    # invariant to independent factors, so Q s, K s (not a symmetry) leaves the output unchanged
    net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, pair_messages=False,
                         **SMALL)
    assert not net.pairs and all(layer.pair is None for layer in net.layers)
    assert sensitivity(net, mixed, "pairs_alike") < 1e-12
    with pytest.raises(AssertionError, match="pairs_alike"):
        assert_sensitive(net, mixed, "pairs_alike")


def test_the_edit_head_is_equivariant_with_pair_messages():
    same = Batch.from_data_list([C.to_graph(*make("attn_sdpa", seed=s)) for s in range(3)])
    net = scalegmn.build("scalegmn", "equivariant", spec=same, **SMALL)
    assert net.pairs
    assert_equivariant(net, same, n_actions=2)
    assert_sensitive(net, same, "pairs_alike")


class _NotInvariant(PairMessage):
    """A broken pair message: ``psi`` reads ``h_i + h_k`` (not an invariant of the pair)."""

    def forward(self, eng, h):
        h_k, paired = eng.partner(h)
        return self.C(h) * self.psi(h + h_k) * paired.to(h.dtype)


def test_a_broken_pair_message_fails_the_equivariance_check(mixed):
    net = scalegmn.build("scalegmn", "invariant", spec=mixed, out_dim=2, **SMALL)
    for layer in net.layers:
        broken = _NotInvariant(SMALL["hidden"], net.cfg)
        broken.load_state_dict(layer.pair.state_dict())
        layer.replace("pair", broken)
    with pytest.raises(AssertionError):
        assert_equivariant(net, mixed, n_actions=2)


def test_sparse_and_dense_engines_agree_on_pairs():
    same = Batch.from_data_list([C.to_graph(*make("mha", seed=s)) for s in range(3)])
    net = scalegmn.build("scalegmn", "invariant", spec=same, out_dim=2, **SMALL).double()
    same = same.clone()
    same.x, same.edge_attr = same.x.double(), same.edge_attr.double()
    out = {}
    for kind in ("sparse", "dense"):
        net.set_engine(kind)
        out[kind] = net(same)
    assert torch.allclose(out["sparse"], out["dense"], rtol=1e-12, atol=1e-14)


def test_partner_index_pairs_each_query_with_its_key():
    from scalegmn.gmn.plan import partner_index
    g = C.to_graph(*make("attn_sdpa"))
    p = partner_index((g.arch, g.arch))
    from converters.layout import layout
    pairs = layout(g.arch).inverse_pairs
    n = g.num_nodes
    assert len(pairs) and (p >= 0).sum() == 4 * len(pairs)
    for off in (0, n):
        assert torch.equal(p[pairs[:, 0] + off], pairs[:, 1] + off)
        assert torch.equal(p[pairs[:, 1] + off], pairs[:, 0] + off)


def test_a_model_built_without_pairs_refuses_a_batch_with_them():
    mlp = C.to_graph(*make("mlp_relu"))
    net = scalegmn.build("scalegmn", "invariant", spec=mlp, out_dim=2, **SMALL)
    assert not net.pairs
    attn = C.to_graph(*make("attn_sdpa"))
    with pytest.raises(ValueError, match="attention heads or inverse pairs.*pair messages"):
        net(C.batch_graphs([mlp, attn]))
    gmn = scalegmn.build("gmn", "invariant", spec=mlp, out_dim=2, **SMALL)
    assert not gmn.pairs


def _scaled_queries(g):
    """``g`` with its attention's query and key weights changed (another network)."""
    from converters.layout import layout
    pairs = layout(g.arch).inverse_pairs
    qk = torch.zeros(g.num_nodes, dtype=torch.bool)
    qk[pairs.reshape(-1)] = True
    out = g.clone()
    e = qk[g.edge_index[1]]
    out.edge_attr = g.edge_attr.clone()
    out.edge_attr[e] = 3.0 * g.edge_attr[e] + 0.1 * g.edge_mask[e]
    return out


def test_forward_scalegmn_reading_outputs_only_sees_queries_and_keys_through_the_heads():
    # query and key neurons have no outgoing edges: a forward model whose readout reads only
    # the output neurons saw none of their weights (exactly), until the head message
    g = C.to_graph(*make("attn_sdpa"))
    b, b_changed = C.batch_graphs([g]), C.batch_graphs([_scaled_queries(g)])
    for pairs_on in (False, True):
        torch.manual_seed(0)
        # 4 layers: keys updated, head message to the values, values -> o -> output
        net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, readout="last_layer",
                             pair_messages=pairs_on, hidden=8, layers=4).double()
        with torch.no_grad():
            change = (net(b) - net(b_changed)).abs().max().item()
        assert (change > 1e-6) if pairs_on else (change == 0.0), (pairs_on, change)
        if pairs_on:
            assert_equivariant(net, b, n_actions=3)


def test_head_index_groups_queries_keys_and_values_by_head():
    from scalegmn.gmn.plan import head_index
    from converters.layout import layout
    g = C.to_graph(*make("attn_sdpa"))      # 2 heads, head_dim 3, value head_dim 3
    names = [ns["name"] for ns in g.arch.nodesets]
    off = layout(g.arch).offsets
    q, k, head, v, v_head = head_index((g.arch, g.arch))
    n = g.num_nodes
    q0, k0, v0 = (off[names.index(x)] for x in ("q", "k", "v"))
    assert torch.equal(q[:6], q0 + torch.arange(6)) and torch.equal(k[:6], k0 + torch.arange(6))
    assert torch.equal(head, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]))
    assert torch.equal(v[6:], n + v0 + torch.arange(6)) and torch.equal(v_head, head)
    mha = C.to_graph(*make("mha"))           # nn.MultiheadAttention: 3 heads of 2
    _, _, head, v, v_head = head_index((mha.arch,))
    assert head.tolist() == [0, 0, 1, 1, 2, 2] and v_head.tolist() == [0, 0, 1, 1, 2, 2]


class _HeadNotInvariant(PairMessage):
    """A broken head message: the head sum of ``(h_q + 1) * (h_k + 1)`` (not invariant)."""

    def forward(self, eng, h):
        scores, is_value = eng.head_scores(h + 1.0)
        return self.E(h) * self.phi(scores) * is_value.to(h.dtype)


def test_a_broken_head_message_fails_the_equivariance_check():
    g = C.to_graph(*make("attn_sdpa"))
    b = C.batch_graphs([g, C.to_graph(*make("attn_sdpa", seed=1))])
    net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, readout="last_layer",
                         hidden=8, layers=4)
    assert_equivariant(net, b, n_actions=2)
    for layer in net.layers:
        broken = _HeadNotInvariant(8, net.cfg)
        broken.load_state_dict(layer.pair.state_dict())
        layer.replace("pair", broken)
    with pytest.raises(AssertionError):
        assert_equivariant(net, b, n_actions=2)
