"""NP and HNP reading every weight entry through a fixed Gaussian Fourier feature map
(``input_features: fourier``): the map itself, the permutation claim kept exactly (float64), the
negative controls, the projection as a saved buffer, the refusal by the scale/sign backends and
the config round trip."""
import io
import math

import pytest
import torch
import yaml
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn import nfn
from scalegmn.config import ModelConfig, WeightSpaceConfig
from scalegmn.testing import assert_equivariant, assert_sensitive
from zoo import make

FAMILIES = ["mlp_relu", "siren_nfn", "cnn_zoo"]      # ReLU and sine MLPs, a CNN (kernels k > 1)
FOURIER = dict(input_features="fourier", fourier_features=3, fourier_scale=3.0)
SMALL = dict(hidden=8, layers=2, out_dim=3)


def batch_of(name, n=3):
    return Batch.from_data_list([C.to_graph(*make(name, seed=s)) for s in range(n)])


@pytest.fixture(scope="module")
def batches():
    return {name: batch_of(name) for name in FAMILIES}


def build(backend, task, b, seed=0, **kw):
    torch.manual_seed(seed)
    return scalegmn.build(backend, task, spec=b, **{**SMALL, **FOURIER, **kw})


# -- the map ------------------------------------------------------------------------------------
def test_fourier_map_entry_by_entry():
    """Every entry x of every kernel position s becomes sin/cos(2 pi x B_j) at feature
    ``c * k + s`` (channel c = j for sin, m + j for cos), compared with a loop over entries."""
    ff = nfn.FourierFeatures(4, 2.5).double()
    g = torch.Generator().manual_seed(1)
    ws = nfn.WeightSpace((torch.randn(2, 3, 5, 9, generator=g, dtype=torch.float64),
                          torch.randn(2, 4, 3, 1, generator=g, dtype=torch.float64)),
                         (torch.randn(2, 3, 1, generator=g, dtype=torch.float64),
                          torch.randn(2, 4, 1, generator=g, dtype=torch.float64)))
    out = ff(ws)
    B = ff.B
    for t_in, t_out in zip(ws.weights + ws.biases, out.weights + out.biases):
        k = t_in.shape[-1]
        assert t_out.shape == (*t_in.shape[:-1], 8 * k)
        for idx in torch.cartesian_prod(*[torch.arange(d) for d in t_in.shape[:-1]]):
            idx = tuple(idx.tolist())
            for s in range(k):
                x = float(t_in[idx + (s,)])
                for j in range(4):
                    z = 2 * math.pi * x * float(B[j])
                    assert abs(float(t_out[idx + (j * k + s,)]) - math.sin(z)) < 1e-12
                    assert abs(float(t_out[idx + ((4 + j) * k + s,)]) - math.cos(z)) < 1e-12


def test_projection_is_fixed_and_scaled():
    """B comes from a fixed generator (not the global seed) and has standard deviation ~ scale."""
    torch.manual_seed(0)
    a = nfn.FourierFeatures(512, 10.0)
    torch.manual_seed(1)
    b = nfn.FourierFeatures(512, 10.0)
    assert torch.equal(a.B, b.B)
    assert 8.5 < float(a.B.std()) < 11.5
    assert torch.allclose(nfn.FourierFeatures(512, 3.0).B, a.B * 0.3)
    assert not a.B.requires_grad and "B" not in dict(a.named_parameters())
    with pytest.raises(ValueError, match="scale"):
        nfn.FourierFeatures(4, 0.0)


# -- symmetry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend", ["np", "hnp"])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_fourier_inputs_keep_permutation_equivariance(batches, name, backend, task):
    b = batches[name]
    net = build(backend, task, b)
    assert net.fourier is not None
    assert set(net.claimed_groups()) == {"fixed", "perm"}
    errors = assert_equivariant(net, b, n_actions=3)
    assert set(errors) == {"perm"}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend", ["np", "hnp"])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_fourier_inputs_negative_controls(batches, name, backend, task):
    """Another network, unclaimed factors (rescalings/sign flips: sin and cos are not
    homogeneous), swapped inputs/outputs and uncoupled row rescaling all change the output."""
    b = batches[name]
    net = build(backend, task, b)
    for kind in ("different", "unclaimed", "io_permutation", "uncoupled"):
        assert_sensitive(net, b, kind)


def test_harness_catches_a_map_that_is_not_entrywise(batches):
    """A map that depends on the neuron's index breaks the permutation claim: the test fails."""
    b = batches["mlp_relu"]
    net = build("np", "invariant", b)
    entrywise = net.fourier._map

    def positional(x):
        rows = torch.arange(x.shape[1], dtype=x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
        return entrywise(x + 0.1 * rows)

    net.fourier._map = positional
    with pytest.raises(AssertionError, match="perm"):
        assert_equivariant(net, b, n_actions=2)


def test_fourier_and_raw_inputs_differ(batches):
    """The option changes the model (the raw model has one input channel, no buffer)."""
    b = batches["mlp_relu"]
    raw = build("np", "invariant", b, input_features="raw")
    assert raw.fourier is None and not any("fourier" in k for k in raw.state_dict())
    assert raw.layers[0].A[0].in_features == 1
    ff = build("np", "invariant", b)
    assert ff.layers[0].A[0].in_features == 6


# -- the buffer in checkpoints ------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["np", "hnp"])
def test_projection_is_saved_and_reloaded(batches, backend):
    b = batches["cnn_zoo"]
    net = build(backend, "invariant", b, seed=0).eval()
    sd = net.state_dict()
    assert "fourier.B" in sd and sd["fourier.B"].shape == (3,)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    other = build(backend, "invariant", b, seed=7).eval()
    with torch.no_grad():
        assert not torch.equal(other(b), net(b))
        other.load_state_dict(torch.load(buf))
        assert torch.equal(other(b), net(b))
        # the loaded buffer is the one used: a different projection changes the output
        other.fourier.B.mul_(1.5)
        assert not torch.allclose(other(b), net(b))


# -- refusals and config ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["monomial-nfn", "magep-nfn", "statnn"])
def test_backends_that_cannot_take_fourier_inputs_refuse(batches, backend):
    with pytest.raises(ValueError, match=f"input_features='fourier'.*backend '{backend}'"):
        scalegmn.build(backend, spec=batches["mlp_relu"], **SMALL, **FOURIER)
    with pytest.raises(ValueError, match=backend):
        ModelConfig.from_dict({"backend": backend, "input_features": "fourier"})
    scalegmn.build(backend, spec=batches["mlp_relu"], **SMALL, input_features="raw")


def test_model_refuses_fourier_inputs_it_cannot_read(batches):
    """A backend registered under another name with a scale-equivariant model: the config does
    not know the name, the model refuses by itself."""
    name = "monomial-nfn-test-copy"
    if name not in scalegmn.backends():
        scalegmn.register(name, config=WeightSpaceConfig)(
            lambda cfg, spec: nfn.MonomialNFN(cfg, spec))
    with pytest.raises(ValueError, match=f"backend {name} \\(MonomialNFN\\) does not read"):
        scalegmn.build(name, spec=batches["mlp_relu"], **SMALL, **FOURIER)


@pytest.mark.parametrize("bad, match", [
    ({"input_features": "fft"}, "input_features='fft'; choose from"),
    ({"fourier_features": 0}, "fourier_features must be positive"),
    ({"fourier_features": 2.5}, "'model.fourier_features' must be int"),
    ({"fourier_scale": -1.0}, "fourier_scale must be a finite positive"),
    ({"fourier_scale": float("inf")}, "fourier_scale must be a finite positive"),
])
def test_bad_fourier_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict({"backend": "np", **bad})


@pytest.mark.parametrize("backend", ["np", "hnp"])
def test_config_round_trip(backend):
    cfg = ModelConfig.from_dict({"backend": backend, "input_features": "fourier",
                                 "fourier_features": 32, "fourier_scale": "10"})
    assert isinstance(cfg, WeightSpaceConfig) and cfg.fourier_scale == 10.0
    d = cfg.to_dict()
    assert d["input_features"] == "fourier" and d["fourier_features"] == 32
    assert ModelConfig.from_dict(d) == cfg
    assert ModelConfig.from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert cfg.replace(input_features="raw").input_features == "raw"
    assert WeightSpaceConfig(backend=backend).input_features == "raw"      # default unchanged


# -- the benchmark's INR classification runs ----------------------------------------------------
@pytest.mark.parametrize("suite", ["cpu", "paper"])
def test_benchmark_np_hnp_read_fourier_features_on_inrs(suite):
    """NP and HNP classify INRs from Fourier features with the published scale per data set
    (3 for MNIST, 10 for Fashion-MNIST; m = 128 at the paper sizes); other runs are unchanged."""
    from scalegmn.benchmark import runner
    from scalegmn.benchmark.suites import get_suite
    seen = set()
    for r in get_suite(suite):
        model = runner.run_config(r).model
        if r.task in ("mnist_inr", "fmnist_inr") and r.backend in ("np", "hnp"):
            assert model.input_features == "fourier", r.name
            assert model.fourier_scale == {"mnist_inr": 3.0, "fmnist_inr": 10.0}[r.task], r.name
            if suite == "paper":
                assert model.fourier_features == 128
            seen.add((r.task, r.backend))
        else:
            assert getattr(model, "input_features", "raw") == "raw", r.name
    assert seen == {(t, b) for t in ("mnist_inr", "fmnist_inr") for b in ("np", "hnp")}
