"""The published-style options of ScaleGMN (scalegmn/published_style.py): each keeps the
symmetry (float64), changes what it says, and the defaults leave the model as it was."""
import pytest
import torch
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn.published_style import PUBLISHED_STYLE
from scalegmn.testing import assert_equivariant
from zoo import make

SMALL = dict(hidden=8, layers=2)
OPTIONS = [{"layer_scales": False}, {"layer_scales": False, "data_scale": False},
           {"init": "torch_default"}, {"backward_edge_updates": "scale_only"}, PUBLISHED_STYLE]


def batch_of(name, n=3, dtype=torch.float64):
    b = Batch.from_data_list([C.to_graph(*make(name, seed=s)) for s in range(n)])
    b.x, b.edge_attr = b.x.to(dtype), b.edge_attr.to(dtype)
    return b


@pytest.fixture(scope="module")
def batches():
    return {n: batch_of(n) for n in ("siren_nfn", "mlp_relu", "mlp_mixed", "cnn_zoo_tanh")}


@pytest.mark.parametrize("name", ["siren_nfn", "mlp_relu", "mlp_mixed", "cnn_zoo_tanh"])
@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()))
def test_options_keep_the_symmetry(batches, name, backend, task, opts):
    b = batches[name]
    net = scalegmn.build(backend, task, spec=b, out_dim=2, **SMALL, **opts).double()
    assert_equivariant(net, b, n_actions=2)


# outputs of the default models (seed 0, float64) recorded before the options existed
_BEFORE = {
    ("siren_nfn", "scalegmn"): [0.546271259171, 0.432954363545, 0.548209858882, 0.44358662834,
                                0.594960163117, 0.345767378126],
    ("siren_nfn", "scalegmn-b"): [-0.149997264526, -0.437904645589, -0.322409099902,
                                  -0.599973250588, -0.264601198254, -0.585077339485],
    ("mlp_relu", "scalegmn"): [0.017732747443, -0.254293717729, 0.475058510412, 0.2471667563,
                               0.167133450125, -0.103640018285],
    ("mlp_relu", "scalegmn-b"): [0.069084809869, -0.537895332226, 0.154269417753,
                                 -0.662204754866, 0.054659332079, -0.609132513993]}


@pytest.mark.parametrize("name, backend", list(_BEFORE))
def test_defaults_leave_the_model_unchanged(batches, name, backend):
    b = batches[name]
    for explicit in ({}, {"layer_scales": True, "init": "near_identity",
                          "backward_edge_updates": "every_group"}):
        torch.manual_seed(0)
        net = scalegmn.build(backend, "invariant", spec=b, out_dim=2, **SMALL,
                             **explicit).double().eval()
        with torch.no_grad():
            y = net(b).flatten()
        assert torch.allclose(y, torch.tensor(_BEFORE[(name, backend)], dtype=torch.float64),
                              rtol=0, atol=1e-9), y


def test_each_option_changes_what_it_says(batches):
    b = batches["siren_nfn"]
    torch.manual_seed(0)
    ours = scalegmn.build("scalegmn-b", "invariant", spec=b, out_dim=2, **SMALL)
    torch.manual_seed(0)
    pub = scalegmn.build("scalegmn-b", "invariant", spec=b, out_dim=2, **SMALL,
                         **PUBLISHED_STYLE)
    # per-layer scales: data-derived and learned in ours; fixed at 1 in the published style
    emb, emb_pub = (getattr(m, "embedding", m) for m in (ours, pub))   # the input embedding
    assert emb.e_scale.requires_grad and not torch.all(emb.e_scale == 1)
    for p in (emb_pub.x_scale, emb_pub.e_scale, emb_pub.eb_scale):
        assert not p.requires_grad and torch.all(p == 1)
    # backward edges of sine networks: updated in ours, not in the published style
    assert any(layer.edge_bw is not None for layer in ours.layers)
    assert all(layer.edge_bw is None for layer in pub.layers)
    # ... but kept for ReLU networks (the published model updates them for positive scaling)
    relu = scalegmn.build("scalegmn-b", "invariant", spec=batches["mlp_relu"], out_dim=2,
                          **SMALL, backward_edge_updates="scale_only")
    assert any(layer.edge_bw is not None for layer in relu.layers)
    # initialisation: ours starts the gates near 1 (last-layer bias 1), PyTorch's does not
    gate = ours.layers[0].msg["sign"].phi.lin2
    gate_pub = pub.layers[0].msg["sign"].phi.lin2
    assert torch.all(gate.bias == 1) and not torch.all(gate_pub.bias == 1)
    bound = gate_pub.weight.shape[1] ** -0.5      # nn.Linear's default: U(-1/sqrt(fan_in), ..)
    assert gate_pub.bias.abs().max() <= bound and gate_pub.weight.abs().max() <= bound
    with torch.no_grad():
        assert not torch.allclose(ours(b), pub(b))


def test_bad_option_values_are_refused(batches):
    with pytest.raises(ValueError, match="init"):
        scalegmn.build("scalegmn", spec=batches["siren_nfn"], init="xavier", out_dim=1)
    with pytest.raises(ValueError, match="backward_edge_updates"):
        scalegmn.build("scalegmn", spec=batches["siren_nfn"], backward_edge_updates="some",
                       out_dim=1)


def test_published_style_preset_config():
    from scalegmn.train import load_config
    cfg = load_config("mnist_inr_scalegmn_published_style")
    ours = load_config("mnist_inr_scalegmn")
    for k, v in PUBLISHED_STYLE.items():
        assert getattr(cfg.model, k) == v
    # the same model size, data and schedule as ours: only the published-style keys differ
    a, b = cfg.to_dict(), ours.to_dict()
    diff = {k for k in a["model"] if a["model"][k] != b["model"][k]}
    assert diff == set(PUBLISHED_STYLE) and a["train"] == b["train"] and a["data"] == b["data"]


def _scales(net):
    emb = getattr(net, "embedding", net)
    return [emb.x_scale, emb.e_scale, emb.eb_scale]


def test_layer_scales_and_data_scale_are_independent(batches):
    """``layer_scales: false`` freezes the scales at their initial value; it must not undo
    ``data_scale`` (before the fix it reset the data scales to 1: the ablation "ours without
    learned scales" then also lost the data scaling)."""
    b = batches["siren_nfn"]
    torch.manual_seed(0)
    ours = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL)
    torch.manual_seed(0)
    frozen = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL,
                            layer_scales=False)
    for p, q in zip(_scales(ours), _scales(frozen)):
        assert p.requires_grad and not q.requires_grad
        assert torch.equal(p, q)
    assert not torch.all(_scales(frozen)[1] == 1)        # data scales: SIREN weights are small
    with torch.no_grad():
        assert torch.equal(ours(b), frozen(b))            # same function at initialisation
    # no data scaling, learned: the scales start at 1 and are trained
    learned = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL,
                             data_scale=False)
    for p in _scales(learned):
        assert p.requires_grad and torch.all(p == 1)


def test_frozen_scales_get_no_update(batches):
    """A training step leaves frozen scales where they were (no gradient, no weight decay)."""
    b = batches["siren_nfn"]
    net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL,
                         layer_scales=False).double()
    before = [p.detach().clone() for p in _scales(net)]
    head = [p.detach().clone() for p in net.readout.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    net(b).square().sum().backward()
    opt.step()
    for p, q in zip(_scales(net), before):
        assert torch.equal(p, q)
    # control: the step did move the trained parameters
    assert any(not torch.equal(p, q) for p, q in zip(net.readout.parameters(), head))


def test_backward_edge_updates_is_a_no_op_for_the_forward_model(batches):
    """``backward_edge_updates`` concerns ScaleGMN-B only: the forward ScaleGMN (the backend of
    the published-style train config) is the same model either way."""
    b = batches["siren_nfn"]
    outs = []
    for opt in ("every_group", "scale_only"):
        torch.manual_seed(0)
        net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL,
                             backward_edge_updates=opt).double()
        with torch.no_grad():
            outs.append(net(b))
    assert torch.equal(*outs)
