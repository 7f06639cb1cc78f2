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
    with pytest.raises(ValueError, match="inverse pairs.*pair messages"):
        net(C.batch_graphs([mlp, attn]))
    gmn = scalegmn.build("gmn", "invariant", spec=mlp, out_dim=2, **SMALL)
    assert not gmn.pairs
