"""ScaleGMN-B's backward edges: one rule for their values (embedding and data scaling agree, so
the embedded inputs are O(1) on every layer), and finite outputs in float32 when a network has
weights so small that 1/W overflows."""
import pytest
import torch
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn.gmn import reciprocal_bound
from zoo import make


def batch_of(name, n=4, dtype=torch.float32):
    return Batch.from_data_list([C.to_graph(*make(name, dtype=dtype, seed=s)) for s in range(n)])


def _embedded_medians(net, b, module):
    """Median |input| of ``module`` (an embedding of edge values) per destination node set."""
    seen = {}
    hook = module.register_forward_hook(lambda m, args, out: seen.setdefault("in", args[0]))
    with torch.no_grad():
        net(b)
    hook.remove()
    v, layer = seen["in"], b.layer[b.edge_index[1]]
    out = {}
    for k in torch.unique(layer).tolist():
        vals = v[layer == k][b.edge_mask[layer == k]]
        vals = vals[vals != 0].abs()
        out[k] = float(vals.median())
    return out


@pytest.mark.parametrize("name", ["mlp_relu", "mlp_tanh", "siren_dws", "mlp_mixed"])
@pytest.mark.parametrize("mode", ["reciprocal", "forward"])
def test_backward_edge_inputs_are_order_one_per_layer(name, mode):
    """Before the fix the data scaling used 1/W where the embedding used W (sign edges): the
    backward-edge inputs of tanh and SIREN networks had medians of 0.1 to 0.005 per layer."""
    b = batch_of(name)
    net = scalegmn.build("scalegmn-b", "invariant", spec=b, out_dim=3, hidden=8, layers=2,
                         backward_edges=mode)
    for module in (net.embedding.embed_e, net.embedding.embed_eb):
        medians = _embedded_medians(net, b, module)
        assert all(0.5 <= m <= 2.0 for m in medians.values()), (module, medians)


@pytest.mark.parametrize("tiny", [1e-9, 1e-25, 1e-38])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_tiny_weights_stay_finite_in_float32(tiny, task):
    """A network with a non-zero weight far below the others: 1/W of 1e-25 or 1e-38 overflowed
    the backward messages (NaN/inf); one such network poisoned the whole batch."""
    b = batch_of("mlp_relu")
    net = scalegmn.build("scalegmn-b", task, spec=b, out_dim=3, hidden=16, layers=3)
    b.edge_attr[3, 0] = tiny          # a hidden ReLU neuron's incoming weight, first network
    b.edge_attr[b.edge_attr.shape[0] // 2, 0] = -tiny
    out = net(b)
    values = out if task == "invariant" else torch.cat([out.delta_x.reshape(-1),
                                                        out.delta_edge_attr.reshape(-1)])
    assert torch.isfinite(values).all()
    values.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_reciprocal_bound_is_outside_trained_weights():
    assert 1e9 < reciprocal_bound(torch.float32) < 1e10       # |W| below ~7e-10 counts as 0
    assert reciprocal_bound(torch.float64) > 1e76
    assert reciprocal_bound(torch.bfloat16) == reciprocal_bound(torch.float32) or \
        reciprocal_bound(torch.bfloat16) > 1e9


def test_weights_beyond_the_bound_count_as_zeros():
    """The masked reciprocal treats a weight beyond the bound exactly like an exact zero."""
    b = batch_of("mlp_relu", 1, torch.float64)
    net = scalegmn.build("scalegmn-b", "invariant", spec=b, out_dim=3, hidden=8, layers=2)
    zero, beyond = b.clone(), b.clone()
    zero.edge_attr[3, 0] = 0.0
    beyond.edge_attr[3, 0] = 0.5 / reciprocal_bound(torch.float64)
    ea = torch.stack([zero.edge_attr, beyond.edge_attr])
    bw = [net.embedding.backward_values(g, g.edge_attr, g.edge_mask) for g in (zero, beyond)]
    assert torch.equal(bw[0], bw[1]) and not torch.equal(ea[0], ea[1])
