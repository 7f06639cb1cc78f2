"""Elementwise activations beyond ReLU/tanh/sine: every fx form of every table row is read, each
activation's neurons get the group derived in docs/design.md, round trips are bitwise, 20 random
actions keep the function (float64, 1e-9), actions outside the group change it, and ScaleGMN
stays equivariant on graphs that contain them."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch

import converters as C
from converters.groups import ACTIVATIONS
from converters.ops.activation import ACTS
from zoo import make
from checks import TOL, rel_err


class Fn(nn.Module):
    """A user module applying ``f`` (traced through: the function form is what fx records)."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


#: (id, activation layer, expected group of the neurons feeding it)
CASES = [
    ("relu6", nn.ReLU6(), "perm"),
    ("relu6-fn", Fn(F.relu6), "perm"),
    ("hardtanh", nn.Hardtanh(-0.5, 2.0), "perm"),
    ("hardtanh-odd", nn.Hardtanh(), "sign"),
    ("hardtanh-fn-odd", Fn(lambda h: F.hardtanh(h, -3.0, 3.0)), "sign"),
    ("elu", nn.ELU(0.7), "perm"),
    ("elu-fn", Fn(lambda h: F.elu(h, 0.5)), "perm"),
    ("selu", nn.SELU(), "perm"),
    ("selu-fn", Fn(torch.selu), "perm"),
    ("celu", nn.CELU(1.3), "perm"),
    ("celu-fn", Fn(lambda h: torch.celu(h, 0.8)), "perm"),
    ("softplus", nn.Softplus(2.0, 5.0), "perm"),
    ("softplus-fn", Fn(lambda h: F.softplus(h, 0.5, 3.0)), "perm"),
    ("hardswish", nn.Hardswish(), "perm"),
    ("hardsigmoid", nn.Hardsigmoid(), "perm"),
    ("mish", nn.Mish(), "perm"),
    ("logsigmoid", nn.LogSigmoid(), "perm"),
    ("clamp", Fn(lambda h: torch.clamp(h, -1, 3)), "perm"),
    ("clamp-min", Fn(lambda h: torch.clamp_min(h, 0.5)), "perm"),
    ("clamp-relu", Fn(lambda h: h.clamp(min=0)), "scale"),
    ("clamp-max0", Fn(lambda h: h.clamp_max(0.0)), "scale"),
    ("clip-odd", Fn(lambda h: torch.clip(h, -2.0, 2.0)), "sign"),
    ("abs", Fn(torch.abs), "scale"),
    ("abs-method", Fn(lambda h: h.abs()), "scale"),
    ("rrelu", nn.RReLU(0.1, 0.3), "scale"),
    ("rrelu-default", nn.RReLU(), "scale"),
]
#: activations the zoo tests (test_actions, test_roundtrip) already cover
COVERED_BY_ZOO = {"identity", "relu", "leaky_relu", "tanh", "sin", "sigmoid", "gelu", "silu"}


def _model(act, dtype=torch.float64, seed=0):
    """Linear(3, 6) -> act -> Linear(6, 2) with weights and inputs large enough that every
    saturation point (6 for ReLU6, the clamp bounds) is crossed; (model, x)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), copy.deepcopy(act), nn.Linear(6, 2)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 2)
    return model.eval(), torch.randn(64, 3, generator=g, dtype=dtype) * 2


def _moved(model, g, q):
    """The model under the action 'hidden neuron 0 of node set 1 multiplied by q'."""
    f = torch.ones(g.num_nodes, dtype=torch.float64)
    f[int((g.layer == 1).nonzero()[0, 0])] = q
    sd = C.Action(torch.arange(g.num_nodes), f).apply_state_dict(g.arch, model.state_dict())
    moved = copy.deepcopy(model)
    moved.load_state_dict(sd)
    return moved


def test_every_activation_has_a_test():
    # PReLU and softmax are their own ops (test_prelu.py, test_softmax.py)
    assert set(ACTS) == set(ACTIVATIONS) - {"prelu", "softmax", "log_softmax"}
    names = {C.to_graph(*_model(act)).arch.nodesets[1]["act"] for _, act, _ in CASES}
    assert names | COVERED_BY_ZOO == set(ACTS)


@pytest.mark.parametrize("row", sorted(ACTS))
def test_every_fx_form_of_the_table_is_read(row):
    """Each module, function and method a row lists converts to that activation and back."""
    r = ACTS[row]
    arg = (0.5,) if row == "clamp" else ()
    layers = [t() for t in r.modules]
    layers += [Fn(lambda h, f=f: f(h, *arg)) for f in r.functions]
    layers += [Fn(lambda h, m=m: getattr(h, m)(*arg)) for m in r.methods]
    assert layers or row == "identity"
    for layer in layers:
        model, x = _model(layer)
        g = C.to_graph(model, x)
        assert g.arch.nodesets[1]["act"] == row, (row, layer)
        assert torch.equal(C.to_module(g)(x), model(x)), (row, layer)


@pytest.mark.parametrize("name, act, group", CASES, ids=[c[0] for c in CASES])
def test_activation_group_round_trip_and_actions(name, act, group):
    for dtype in (torch.float32, torch.float64):
        model, x = _model(act, dtype)
        g = C.to_graph(model, x)
        back = C.to_module(g)
        for k, v in model.state_dict().items():
            assert torch.equal(back.state_dict()[k], v) and back.state_dict()[k].dtype == v.dtype
        assert torch.equal(back(x), model(x))
    assert [ns["group"] for ns in g.arch.nodesets] == ["fixed", group, "fixed"]
    y = model(x)
    dense = C.functional_forward(C.to_dense(g), x)[0]
    assert rel_err(dense, y) < 1e-12
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        assert rel_err(a.apply_module(model, x)(x), y) < TOL
    # actions outside the group change the function; inside it they do not
    outside = {"perm": [2.0, -1.0, 0.5], "scale": [-1.0, -2.0], "sign": [2.0, 0.5, -3.0]}[group]
    inside = {"perm": [], "scale": [3.0, 0.25], "sign": [-1.0]}[group]
    for q in outside:
        assert rel_err(_moved(model, g, q)(x), y) > 1e-6, (name, q)
    for q in inside:
        assert rel_err(_moved(model, g, q)(x), y) < TOL, (name, q)


def test_clamp_bounds_must_be_constants():
    class TensorBound(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c, self.b = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.b(torch.clamp(self.a(x), min=self.c(x)))

    with pytest.raises(C.UnsupportedLayerError, match="'min' must be a Python constant"):
        C.to_graph(TensorBound())


def test_scalegmn_stays_equivariant_on_graphs_with_the_new_activations():
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    small = dict(hidden=8, layers=2)
    graphs = [C.to_graph(*make(n, seed=s)) for n in ("acts_perm", "acts_clamp", "mlp_relu")
              for s in range(2)]
    mixed = C.batch_graphs(graphs)
    same = Batch.from_data_list([C.to_graph(*make("acts_clamp", seed=s)) for s in range(3)])
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=mixed, out_dim=2, **small)
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert {"perm", "scale", "sign"} <= set(errors)
        assert_sensitive(net, mixed, "uncoupled")
        editor = scalegmn.build(backend, "equivariant", spec=same, **small)
        assert_equivariant(editor, same, n_actions=2)
        assert_sensitive(editor, same, "unclaimed")


class InplaceReuse(nn.Module):
    """An in-place activation whose input is read again: the model's second reader sees the
    activated values (in-place), so a graph reading the pre-activation would be wrong."""

    def __init__(self, form):
        super().__init__()
        self.form = form
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)
        self.act = nn.ReLU6(inplace=True) if form == "module" else None

    def forward(self, x):
        h = self.a(x)
        if self.form == "module":
            r = self.act(h)
        elif self.form == "function":
            r = F.elu(h, 0.5, True)
        else:
            r = F.relu(h, inplace=True)
        return self.b(r) + self.c(h)


@pytest.mark.parametrize("form", ["module", "function", "keyword"])
def test_an_inplace_activation_of_a_reused_tensor_is_refused(form):
    what = {"module": "'act' (ReLU6)", "function": "(elu)", "keyword": "(relu)"}[form]
    with pytest.raises(C.UnsupportedLayerError) as info:
        C.to_graph(InplaceReuse(form).eval(), torch.zeros(2, 3))
    assert what in str(info.value) and "in-place op on a tensor that is used elsewhere" in str(
        info.value), str(info.value)
    # in place on a tensor read once is fine
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU6(inplace=True), nn.Linear(4, 2)).eval()
    x = torch.randn(5, 3)
    assert torch.equal(C.to_module(C.to_graph(model, x))(x), model(x))
