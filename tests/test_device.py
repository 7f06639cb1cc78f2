"""Device correctness of every backend, the harness, the tasks and the simulation check.

Without a GPU, every backend runs forward and backward on PyTorch's ``meta`` device, which refuses
what a GPU refuses (a host tensor made inside ``forward`` and mixed with device tensors) and what
a GPU pays for (a host synchronisation such as ``.item()``/``.tolist()``). The tests marked
``cuda`` run the real thing and are skipped where no GPU is present.
"""
import copy

import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn.testing import assert_equivariant, run_on_device
from zoo import make

SMALL = dict(hidden=8, layers=2)
FAMILIES = ["mlp_relu", "cnn_zoo_tanh"]   # scale and sign neurons, linear and conv layers
SCALEGMN_VARIANTS = [("scalegmn", {}), ("scalegmn", {"readout": "full_graph"}),
                     ("scalegmn", {"engine": "sparse"}), ("gmn", {}), ("scalegmn-b", {}),
                     ("scalegmn-b", {"backward_edges": "division_free"}),
                     ("scalegmn", {"checkpoint": True, "checkpoint_chunk": 1})]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def batch_of(name, n=2, dtype=torch.float64):
    return Batch.from_data_list([C.to_graph(*make(name, dtype=dtype, seed=s)) for s in range(n)])


@pytest.fixture(scope="module")
def batches():
    return {name: batch_of(name) for name in FAMILIES}


def _all_backends():
    for backend in scalegmn.backends():
        for task in ("invariant", "equivariant"):
            if not (backend == "statnn" and task == "equivariant"):
                yield backend, task


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, task", list(_all_backends()))
def test_every_backend_runs_on_another_device(batches, name, backend, task):
    b = batches[name]
    net = scalegmn.build(backend, task, spec=b, out_dim=3, **SMALL).double()
    out = run_on_device(net, b, "meta")
    assert (out.shape if task == "invariant" else out.edge_attr.shape) == (
        (2, 3) if task == "invariant" else b.edge_attr.shape)


@pytest.mark.parametrize("backend, extra", SCALEGMN_VARIANTS)
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_scalegmn_variants_run_on_another_device(backend, extra, task):
    b = C.batch_graphs([C.to_graph(*make(n, seed=0)) for n in ("mlp_relu", "cnn_zoo", "siren_nfn")])
    if extra.get("checkpoint"):
        b = batch_of("mlp_relu", 3)
    net = scalegmn.build(backend, task, spec=b, out_dim=3, **SMALL, **extra).double()
    run_on_device(net, b, "meta")


def test_the_device_check_catches_host_tensors_and_syncs():
    """Negative controls: a layer that makes a host tensor inside forward, and one that reads a
    value on the host, both fail the check, as on a GPU."""
    b = batch_of("mlp_relu")

    class HostTensor(nn.Module):
        def forward(self, batch):
            return batch.x.sum(0, keepdim=True) + torch.ones(1, batch.x.shape[1])

    class HostSync(nn.Module):
        def forward(self, batch):
            return batch.x * float(batch.x.abs().max())

    with pytest.raises(RuntimeError, match="device|meta"):
        run_on_device(HostTensor(), b, "meta", backward=False)
    with pytest.raises(RuntimeError, match="meta"):
        run_on_device(HostSync(), b, "meta", backward=False)


# -- on a GPU ---------------------------------------------------------------------------------
@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, task", list(_all_backends()))
def test_cuda_equivariance(batches, name, backend, task):
    b = copy.copy(batches[name]).to("cuda")
    net = scalegmn.build(backend, task, spec=b, out_dim=3, **SMALL).double().to("cuda")
    errors = assert_equivariant(net, b, n_actions=2)
    assert errors or net.claimed_groups() == ("fixed",)    # the flat MLP claims no symmetry


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("backend", scalegmn.backends())
def test_cuda_training_step(backend):
    b = batch_of("mlp_relu", 4, torch.float32).to("cuda")
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=3, **SMALL).to("cuda")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    loss = nn.functional.cross_entropy(net(b), torch.tensor([0, 1, 2, 0], device="cuda"))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(p0, p) for p0, p in zip(before, net.parameters()))


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_cuda_sparse_dense_and_cpu_agree(batches, backend, task):
    b = batches["cnn_zoo_tanh"]
    outs = {}
    for device in ("cpu", "cuda"):
        for engine in ("sparse", "dense"):
            torch.manual_seed(0)                 # the same weights in every build
            net = scalegmn.build(backend, task, spec=b, out_dim=3, engine=engine,
                                 **SMALL).double().to(device)
            out = net(copy.copy(b).to(device))
            v = out if task == "invariant" else out.delta_edge_attr
            outs[device, engine] = v.cpu()
    ref = outs["cpu", "dense"]
    for k, v in outs.items():
        assert torch.allclose(v, ref, rtol=1e-10, atol=1e-12), k


@cuda
@pytest.mark.cuda
def test_cuda_simulation_check():
    from scalegmn import simulate
    torch.manual_seed(0)
    model = C.models.mlp([2, 6, 6, 1], "relu").double()
    report = simulate.check(model, torch.randn(3, 2, dtype=torch.float64), backward=True,
                            device="cuda")
    assert report.passed(1e-9), report


@cuda
@pytest.mark.cuda
def test_cuda_bf16_autocast_forward():
    b = batch_of("siren_nfn", 4, torch.float32).to("cuda")
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=b, out_dim=10, **SMALL).to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(b)
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("engine", ["sparse", "dense"])
@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
def test_bf16_autocast_runs_on_every_engine(engine, backend):
    """Autocast (here on the CPU; bench --autocast on a GPU) gives the groups' node maps
    different output dtypes (bf16 after a Linear, float32 after a LayerNorm); the sparse engine
    used to fail writing them into one tensor (seen on an H200)."""
    b = batch_of("mlp_relu", 3, torch.float32)      # scale, fixed and linear neuron groups
    torch.manual_seed(0)
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=3, engine=engine, **SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(b)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
