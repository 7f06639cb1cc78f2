"""Bad input gives a clear error naming the culprit."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters as C
from converters import UnsupportedLayerError


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True, proj_size=2)   # (bidirectional converts)
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class WithAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(4, 2, batch_first=True, add_bias_kv=True)

    def forward(self, x):
        return self.att(x, x, x)[0]


class WithTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 8, batch_first=True, activation=F.silu)

    def forward(self, x):
        return self.enc(x)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g


class CustomFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.b(Clamp.apply(self.a(x)))


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.a(torch.relu(self.a(x)))))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class TrainingBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        h = self.a(x)
        if self.training:
            h = h * 0.5
        return self.b(torch.relu(h))


class RandomInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)

    def forward(self, x):
        return self.a(x) + torch.randn(2)


class RawParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        return F.linear(x, self.w)


class SliceAssign(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        h[:, :2] += self.b(x)
        return h


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.spare = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        return self.a(x)


@pytest.mark.parametrize("model, example, where, what", [
    (WithLSTM(), torch.zeros(2, 5, 3), "rnn", "proj_size=2"),
    (WithAttention(), torch.zeros(2, 5, 4), "att", "add_bias_kv"),
    (WithTransformer(), torch.zeros(2, 5, 4), "enc", "TransformerEncoderLayer"),
    (nn.Sequential(nn.Linear(4, 4), nn.TransformerDecoderLayer(4, 2, 8)), torch.zeros(2, 5, 4),
     "1", "TransformerDecoderLayer"),
    (DataDependent(), torch.zeros(2, 3), "DataDependent", "control flow"),
    (CustomFunction(), torch.zeros(2, 3), "CustomFunction", "Clamp"),
    (Reused(), torch.zeros(2, 3), "a", "more than once"),
    (Tied(), torch.zeros(2, 3), "b", "tied"),
    (TrainingBranch(), torch.zeros(2, 3), "TrainingBranch", "train and eval"),
    (RandomInForward(), torch.zeros(2, 3), "_tensor_constant", "constant tensor"),
    (RawParameter(), torch.zeros(2, 3), "w", "outside a supported module"),
    (SliceAssign(), torch.zeros(2, 3), "SliceAssign", "slice assignment"),
    (Unused(), torch.zeros(2, 3), "Unused", "spare.weight"),
    (nn.Sequential(nn.Linear(3, 4), nn.RReLU(), nn.Linear(4, 1)), torch.zeros(2, 3), "1",
     "RReLU"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(9, 1)),
     torch.zeros(1, 1, 4, 4), "'3' (Linear)", "example_input of shape (1, 1, 4, 4) failed"),
    (nn.Sequential(nn.Linear(3, 4), nn.Softmin(dim=1)), torch.zeros(2, 3), "1", "Softmin"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv1d(2, 2, 1)), torch.zeros(1, 1, 5, 5),
     "'1' (Conv1d)", "example_input"),
])
def test_unsupported_models_name_the_culprit(model, example, where, what):
    with pytest.raises(UnsupportedLayerError) as info:
        C.to_graph(model, example)
    msg = str(info.value)
    assert where in msg and what in msg, msg


def test_model_is_left_in_its_mode():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)).train()
    C.to_graph(model)
    assert model.training


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights(bad):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[2].weight[0, 1] = bad
    with pytest.raises(ValueError, match=r"'2.weight' contains NaN or inf"):
        C.to_graph(model)
    g = C.to_graph(model, allow_nonfinite=True)   # the documented escape hatch
    back = C.to_module(g)
    assert torch.equal(back.get_submodule('2').weight.isnan(), model[2].weight.isnan())


def test_state_dict_that_does_not_match_arch():
    spec = C.arch.mlp([2, 8, 1])
    good = C.models.mlp([2, 8, 1]).state_dict()
    wrong_shape = dict(good, **{"0.weight": torch.zeros(8, 3)})
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(8, 3\), arch expects \(8, 2\)"):
        C.from_state_dict(wrong_shape, spec)
    missing = {k: v for k, v in good.items() if k != "2.bias"}
    with pytest.raises(KeyError, match="2.bias"):
        C.from_state_dict(missing, spec)
    extra = dict(good, **{"4.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="4.weight"):
        C.from_state_dict(extra, spec)
    with pytest.raises(TypeError, match="ArchSpec"):
        C.from_state_dict(good, "mlp")


def test_edited_structure_is_refused_on_the_way_back():
    g = C.to_graph(nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 1)))
    g.x[3, 0] = 1.0   # a bias on a bias-free layer
    with pytest.raises(ValueError, match="'0'.*no parameter"):
        C.to_module(g)
    C.to_module(g, strict=False)


def test_cannot_infer_input_shape_without_example():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 1))
    with pytest.raises(UnsupportedLayerError, match="example_input"):
        C.to_graph(model)
    assert C.to_graph(model, torch.zeros(1, 1, 7, 7)).arch.kernel_shape == (5, 5)


def test_tracing_leaves_autograd_functions_working():
    C.to_graph(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    with pytest.raises(UnsupportedLayerError):
        C.to_graph(CustomFunction(), torch.zeros(2, 3))
    x = torch.randn(4, 3, requires_grad=True)
    Clamp.apply(x).sum().backward()       # a custom Function still runs its own forward
    assert torch.equal(x.grad, torch.ones(4, 3))


class CatBlock(nn.Module):
    """3 -> a (6) -> cat of ``mode`` -> b -> 6 -> 2; ``distinct`` is the representable control."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.a, self.g = nn.Linear(3, 6), nn.Linear(3, 6)
        n_in = {"same": 12, "triple": 18, "nested": 18, "view": 12, "input": 6,
                "distinct": 15}[mode]
        self.b, self.c = nn.Linear(n_in, 6), nn.Linear(6, 2)

    def forward(self, x):
        h, g = torch.relu(self.a(x)), torch.tanh(self.g(x))
        cat = {"same": lambda: torch.cat([h, h], 1),
               "triple": lambda: torch.cat([h, g, h], 1),
               "nested": lambda: torch.cat([torch.cat([h, g], 1), h], 1),
               "view": lambda: torch.cat([h, h.view(h.size(0), -1)], 1),
               "input": lambda: torch.cat([x, x * 2.0], 1),
               "distinct": lambda: torch.cat([x, h, g], 1)}[self.mode]()
        return self.c(torch.relu(self.b(cat)))


class Wrapped(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize("mode, culprit", [("same", "'block.a'"), ("triple", "'block.a'"),
                                           ("nested", "'block.a'"), ("view", "'block.a'"),
                                           ("input", "'input'")])
def test_a_value_twice_in_one_cat_is_refused(mode, culprit):
    model = Wrapped(CatBlock(mode)).double().eval()
    with pytest.raises(UnsupportedLayerError) as info:
        C.to_graph(model, torch.zeros(2, 3, dtype=torch.float64))
    msg = str(info.value)
    assert "unsupported at 'block:cat" in msg, msg        # the module path of the cat
    assert f"the neurons of {culprit} appear twice in one concatenation" in msg, msg


def test_one_layer_and_its_activation_in_one_cat_is_refused():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 6), nn.Linear(12, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.cat([torch.relu(h), torch.tanh(h)], 1))

    with pytest.raises(UnsupportedLayerError, match=r"'cat' \(cat\): the neurons of 'a' appear "
                                                    r"twice"):
        C.to_graph(M())


def test_other_ops_fed_one_value_twice_are_refused():
    class M(nn.Module):
        def __init__(self, op):
            super().__init__()
            self.op, self.a, self.b = op, nn.Linear(3, 4), nn.Linear(4, 2)
            self.bn1, self.bn2 = (nn.BatchNorm1d(4), nn.BatchNorm1d(4)) if op == "bn" else (
                None, None)

        def forward(self, x):
            h = torch.relu(self.a(x))
            if self.op == "mul":
                return self.b(h * h)
            if self.op == "add":
                return self.b(torch.add(h, h))
            if self.op == "stack":
                return self.b(torch.stack([h, h], 1).sum(1))
            return self.b(self.bn1(h) + self.bn2(h))

    # h * h converts (a product of one layer with itself: tests/test_products.py)
    for op, culprit in [("add", "'add' (add)"),
                        ("stack", "'stack' (function stack)"), ("bn", "'bn2' (BatchNorm1d)")]:
        with pytest.raises(UnsupportedLayerError) as info:
            C.to_graph(M(op).eval())
        assert culprit in str(info.value), str(info.value)
    assert "already normalised by the BatchNorm 'bn1'" in str(info.value)


def test_layout_refuses_a_spec_that_reads_a_node_set_twice():
    spec = C.to_graph(CatBlock("distinct")).arch.to_dict()
    for op in spec["ops"]:
        if op["op"] == "cat":
            op["in"] = [op["in"][1], op["in"][1], op["in"][2]]  # [h, h, g]: edited by hand
    with pytest.raises(ValueError, match="'b' reads node sets .* only once"):
        C.from_state_dict(CatBlock("distinct").state_dict(), C.ArchSpec.from_dict(spec))


def test_an_ordinary_cat_round_trips_and_keeps_its_function():
    torch.manual_seed(0)
    model = Wrapped(CatBlock("distinct")).double().eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    g = C.to_graph(model, x)
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert len(pairs) == g.num_edges == 15 * 6 + 6 * 3 + 6 * 3 + 2 * 6
    back = C.to_module(g)
    assert torch.equal(back(x), model(x))
    y, gen = model(x), torch.Generator().manual_seed(0)
    identity = C.Action(torch.arange(g.num_nodes), torch.ones(g.num_nodes, dtype=torch.float64))
    assert torch.equal(identity.apply_module(model, x)(x), y)
    for _ in range(20):
        moved = C.sample_action(g, generator=gen).apply_module(model, x)
        assert ((moved(x) - y).abs().max() / y.abs().max()).item() < 1e-9


REFUSED_LAYERS = {
    "Transformer": (lambda: nn.Transformer(16, 2, 1, 1, 32, batch_first=True), "transformer"),
    "EmbeddingBag": (lambda: nn.EmbeddingBag(10, 16), "EmbeddingBag is not supported"),
    "LSTMCell": (lambda: nn.LSTMCell(16, 16), "recurrent"),
    "GRUCell": (lambda: nn.GRUCell(16, 16), "recurrent"),
    "RNNCell": (lambda: nn.RNNCell(16, 16), "recurrent"),
    "LocalResponseNorm": (lambda: nn.LocalResponseNorm(2), "this normalisation is not supported"),
    "Upsample": (lambda: nn.Upsample(scale_factor=2), "not supported"),
}


class Body(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.pre, self.layer = nn.Linear(16, 16), layer

    def forward(self, x):
        return self.layer(self.pre(x))


class Outer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.body, self.head = Body(layer), nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("placement", ["bare", "sequential", "submodule"])
@pytest.mark.parametrize("kind", list(REFUSED_LAYERS))
def test_refused_layers_name_path_and_type_and_print_nothing(kind, placement, capfd):
    factory, reason = REFUSED_LAYERS[kind]
    layer = factory()
    model, where = {"bare": (layer, kind),
                    "sequential": (nn.Sequential(nn.Linear(16, 16), layer, nn.Linear(16, 2)), "1"),
                    "submodule": (Outer(layer), "body.layer")}[placement]
    model.eval()
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no warning either
        with pytest.raises(UnsupportedLayerError) as info:
            C.to_graph(model)
    assert capfd.readouterr() == ("", "")
    assert str(info.value).startswith(f"unsupported at '{where}' ({kind}): "), str(info.value)
    assert reason in str(info.value)
    assert info.value.where == where and info.value.what == kind


def test_a_failing_example_input_names_the_layer_and_prints_nothing(capfd):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(5, 2)))
    capfd.readouterr()
    with pytest.raises(UnsupportedLayerError, match=r"^unsupported at '2.0' \(Linear\): running "
                                                    r"the model on example_input of shape "
                                                    r"\(2, 3\) failed here: RuntimeError"):
        C.to_graph(model, torch.zeros(2, 3))
    assert capfd.readouterr() == ("", "")


class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.gate, self.b = nn.Linear(3, 4), nn.Sequential(Gate()), nn.Linear(4, 1)

    def forward(self, x):
        return self.b(self.gate(self.a(x)))


class NoneMask(nn.Module):
    def forward(self, x):
        return F._none_or_dtype(x)   # raises a RuntimeError on an fx proxy


def test_a_forward_that_cannot_be_traced_names_its_module():
    with pytest.raises(UnsupportedLayerError, match=r"^unsupported at 'gate.0' \(Gate\): forward "
                                                    r"cannot be traced .*control flow"):
        C.to_graph(GatedNet())
    model = nn.Sequential(nn.Linear(3, 3), NoneMask(), nn.Linear(3, 1))
    with pytest.raises(UnsupportedLayerError, match=r"^unsupported at '1' \(NoneMask\): forward "
                                                    r"cannot be traced by torch.fx: RuntimeError"):
        C.to_graph(model)


class FunctionalDropout(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.a, self.b = how, nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.how == "self.training":
            h = F.dropout(h, 0.5, self.training)
        elif self.how == "default":
            h = F.dropout(h, 0.25)          # training=True: active in eval mode too
        else:
            h = F.dropout(h, 0.5, training=False)
        return self.b(h)


class Nested(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.head = inner, nn.Linear(1, 1)

    def forward(self, x):
        return self.head(self.inner(x))


def modes(model):
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("model, where, what", [
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)), "'1'",
     "(BatchNorm1d): in training mode it normalises with the batch's statistics"),
    (Nested(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 1))), "'inner.1'", "(BatchNorm2d)"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.3), nn.Linear(4, 1)), "'2'",
     "(Dropout): in training mode it drops units at random (p=0.3)"),
    (Nested(FunctionalDropout("self.training")), "'inner:dropout'",
     "'inner' is in training mode, where this dropout (p=0.5) is active"),
])
def test_training_mode_that_changes_the_function_is_refused(model, where, what):
    model.train()
    example = torch.zeros(2, 1, 6, 6) if isinstance(model, Nested) and not isinstance(
        model.inner, FunctionalDropout) else torch.zeros(2, 3)
    with pytest.raises(UnsupportedLayerError) as info:
        C.to_graph(model, example)
    msg = str(info.value)
    assert msg.startswith(f"unsupported at {where} ") and what in msg, msg
    assert "call model.eval() before converting" in msg, msg
    assert all(modes(model)), "the refusal left the model in another mode"
    C.to_graph(model.eval(), example)   # the advice works


def test_training_mode_that_does_not_change_the_function_converts():
    x = torch.randn(5, 3)
    for model in (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.0), nn.Linear(4, 1)),
                  FunctionalDropout("off"), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4),
                                                          nn.ReLU(), nn.Linear(4, 1))):
        model.train()
        assert torch.equal(C.to_module(C.to_graph(model))(x), model(x))
        assert all(modes(model))
    model = FunctionalDropout("self.training").eval()
    assert torch.equal(C.to_module(C.to_graph(model))(x), model(x))


def test_functional_dropout_active_in_eval_mode_is_refused():
    with pytest.raises(UnsupportedLayerError, match=r"^unsupported at 'dropout' \(dropout\): this "
                                                    r"dropout \(p=0.25\) is active in eval mode "
                                                    r"too .*training=self.training"):
        C.to_graph(FunctionalDropout("default").eval())


def test_each_module_is_left_in_its_own_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.0),
                          nn.Linear(4, 1)).eval()
    model[3].train()
    model[2].train()
    before = modes(model)
    C.to_graph(model)
    assert modes(model) == before == [False, False, False, True, True, False]
