"""The edit head's per-node-set units: with ``data_scale`` the first edits change each layer by
about ``alpha`` of its own magnitude, whatever the scale of the head's raw output (the raw
bias edits of ScaleGMN-B and GMN on SIRENs were 10^4-10^5 times the biases' size)."""
import pytest
import torch

import converters as C
import scalegmn
from scalegmn.testing import assert_equivariant


def _sirens(n=3):
    torch.manual_seed(0)
    graphs = [C.to_graph(C.models.Siren((2, 16, 16, 1), 30.0, 0.5, "dwsnets")) for _ in range(n)]
    return C.batch_graphs(graphs)


def _median_ratio(a, b):
    a, b = a[a != 0].abs(), b[b != 0].abs()
    return float(a.double().median() / b.double().median())


@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b", "gmn"])
def test_first_edits_are_alpha_of_each_layers_own_magnitude(backend):
    batch = _sirens()
    net = scalegmn.build(backend, "equivariant", spec=batch, hidden=8, layers=2, edit_init=0.01)
    net.eval()
    with torch.no_grad():
        out = net(batch)
    dst = batch.layer[batch.edge_index[1]]
    mask = batch.edge_mask.bool()
    for k in range(1, int(batch.layer.max()) + 1):      # node sets with incoming weights
        e = (dst == k).unsqueeze(1) & mask
        step = (out.edge_attr - batch.edge_attr)[e]
        assert _median_ratio(step, batch.edge_attr[e]) == pytest.approx(0.01, rel=1e-4), k
        n = batch.layer == k
        xs = (out.x - batch.x)[n, 0]
        assert _median_ratio(xs, batch.x[n, 0]) == pytest.approx(0.01, rel=1e-4), k
    assert_equivariant(net, batch, n_actions=2)


def test_without_data_scale_or_example_values_the_units_are_one():
    batch = _sirens()
    for net in (scalegmn.build("scalegmn-b", "equivariant", spec=batch, hidden=8, layers=2,
                               data_scale=False),
                scalegmn.build("scalegmn-b", "equivariant", spec=batch.arch[0]
                               if isinstance(batch.arch, list) else batch.arch, hidden=8,
                               layers=2)):
        assert torch.equal(net.edit.w_unit, torch.ones_like(net.edit.w_unit))
        assert torch.equal(net.edit.x_unit, torch.ones_like(net.edit.x_unit))


def test_units_are_saved_and_old_checkpoints_load_with_units_of_one():
    batch = _sirens()
    net = scalegmn.build("scalegmn-b", "equivariant", spec=batch, hidden=8, layers=2)
    sd = net.state_dict()
    assert not torch.equal(sd["edit.w_unit"], torch.ones_like(sd["edit.w_unit"]))
    fresh = scalegmn.build("scalegmn-b", "equivariant", spec=batch, hidden=8, layers=2,
                           data_scale=False)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.edit.w_unit, sd["edit.w_unit"])
    old = {k: v for k, v in sd.items() if not k.endswith(("w_unit", "x_unit"))}
    fresh.load_state_dict(old)                        # a checkpoint from before the units
    assert torch.equal(fresh.edit.x_unit, torch.ones_like(fresh.edit.x_unit))
