"""Property-based round trips and actions over random MLP and CNN shapes."""
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

import converters as C
from converters.models import make_activation

ACTS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "identity"]
SETTINGS = settings(deadline=None, max_examples=25, derandomize=True)


def _init(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def _check(model, x, seed):
    g = C.to_graph(model, x)
    back = C.to_module(g)
    assert torch.equal(back(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert torch.equal(C.from_dense(C.to_dense(g)).edge_attr, g.edge_attr)
    y = model(x)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        a = C.sample_action(g, gen)
        err = (a.apply_module(model, x)(x) - y).abs().max() / y.abs().max().clamp_min(1e-300)
        assert err < 1e-9


@SETTINGS
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       acts=st.lists(st.sampled_from(ACTS), min_size=4, max_size=4),
       bias=st.booleans(), seed=st.integers(0, 10_000))
def test_random_mlps(widths, acts, bias, seed):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(make_activation(acts[i]))
    model = _init(nn.Sequential(*layers).double(), seed)
    x = torch.randn(4, widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _check(model, x, seed)


@SETTINGS
@given(c1=st.integers(1, 3), mult=st.integers(1, 3), groups=st.sampled_from([1, 2]),
       k1=st.sampled_from([1, 3, 5]), k2=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), pool=st.sampled_from(
           ["gap", "max", "flatten"]), act=st.sampled_from(["relu", "tanh", "gelu"]),
       seed=st.integers(0, 10_000))
def test_random_cnns(c1, mult, groups, k1, k2, stride, padding, dilation, pool, act, seed):
    mid = 2 * mult            # divisible by groups
    layers = [nn.Conv2d(c1, mid, k1, stride=stride, padding=padding, dilation=dilation),
              make_activation(act), nn.Conv2d(mid, 2 * groups, k2, groups=groups, padding=1),
              make_activation(act)]
    if pool == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * groups, 3)]
    elif pool == "max":
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * groups, 3)]
    else:
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(2 * groups * 4, 3)]
    model = _init(nn.Sequential(*layers).double(), seed)
    x = torch.randn(3, c1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _check(model, x, seed)
