"""What is measured: the input networks (workloads), their batches, and the metanetworks.

A workload names a family of input networks: ``siren`` (2-32-32-1 SIRENs, the MNIST-INR
workload), ``cnn_zoo`` (the Small-CNN-Zoo CNN), ``mlp:2-32-32-1`` (ReLU MLPs of these widths)
or ``resnet18`` and ``zoo:NAME`` (a reference model of ``converters.models.ZOO_FACTORIES``,
e.g. ``zoo:vit_tiny``; converters only). Backends are built for a batch of them as an invariant task
with 10 outputs.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch_geometric.data import Batch

WORKLOADS = {
    "siren": "SIREN 2-32-32-1 INRs (the MNIST-INR workload)",
    "cnn_zoo": "Small-CNN-Zoo CNNs (4,970 parameters)",
}
#: the default order of backends; those not registered at run time are left out
DEFAULT_BACKENDS = ("scalegmn", "scalegmn-b", "gmn", "monomial-nfn", "magep-nfn", "np", "hnp",
                    "statnn", "mlp")
#: the backends with engines; the others run with engine "-"
ENGINE_BACKENDS = ("scalegmn", "scalegmn-b", "gmn")
#: pseudo-engines of ``ENGINE_BACKENDS``: what they build (``ModelConfig`` fields) and the malloc
#: policy of their measuring process. ``lean`` is the dense engine with ``checkpoint``
#: (memory-lean; malloc as ``scalegmn train`` gives it); ``reference`` a straightforward PyG
#: implementation of the same model: sparse gathers and scatter, textbook ``ScaleEq`` (no fused
#: matmuls), every last-layer message evaluated, glibc malloc left alone
PSEUDO_ENGINES = {"lean": {"build": {"engine": "dense", "checkpoint": True}, "malloc": "lean"},
                  "reference": {"build": {"engine": "sparse", "prune_last_layer": False,
                                          "fused": False}, "malloc": "default"}}


def mlp_workload(widths: Iterable[int]) -> str:
    """The workload name of ReLU MLPs with these widths, e.g. ``mlp:2-32-32-1``."""
    return "mlp:" + "-".join(str(int(w)) for w in widths)


def widths(workload: str) -> list:
    """The layer widths of an ``mlp:...`` workload."""
    return [int(w) for w in workload.split(":", 1)[1].split("-")]


def describe(workload: str) -> str:
    """A workload in words (``ReLU MLPs 2-8-1``, ``SIREN 2-32-32-1 INRs ...``)."""
    if workload.startswith("mlp:"):
        return f"ReLU MLPs {workload[4:]}"
    return WORKLOADS.get(workload, workload)


def make_model(workload: str) -> tuple:
    """A freshly initialised network of ``workload`` and an example input for
    ``converters.to_graph`` (None where not needed). Raises ``ValueError`` naming an unknown
    workload."""
    import converters
    if workload == "siren":
        return converters.models.Siren((2, 32, 32, 1), output_offset=0.5), None
    if workload == "cnn_zoo":
        return converters.models.cnn_zoo(), None
    if workload.startswith("mlp:"):
        return converters.models.mlp(widths(workload), "relu"), None
    if workload == "resnet18":
        return converters.models.ResNet18().eval(), torch.randn(1, 3, 64, 64)
    if workload.startswith("zoo:") and workload[4:] in converters.models.ZOO_FACTORIES:
        name = workload[4:]
        return (converters.models.ZOO_FACTORIES[name][0]().eval(),
                converters.models.example_input(name, 2))
    raise ValueError(f"unknown workload {workload!r}; choose from {sorted(WORKLOADS)}, "
                     f"mlp:<widths>, resnet18, "
                     f"zoo:{{{','.join(sorted(converters.models.ZOO_FACTORIES))}}}")


def example_input(model: torch.nn.Module, workload: str) -> torch.Tensor:
    """An input batch for ``model`` of ``workload``: (2, 1, 28, 28) images for ``cnn_zoo``,
    else (4, in_features) of its first linear layer."""
    if workload == "cnn_zoo":
        return torch.randn(2, 1, 28, 28)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return torch.randn(4, first.in_features)


def make_batch(workload: str, batch_size: int, seed: int = 0) -> Batch:
    """``batch_size`` freshly initialised networks of ``workload`` as one PyG batch (the first
    traced by ``to_graph``, the others read into its ``ArchSpec`` by ``from_state_dict``, 50x
    faster)."""
    import converters
    torch.manual_seed(seed)
    first = converters.to_graph(make_model(workload)[0])
    graphs = [first] + [converters.from_state_dict(make_model(workload)[0].state_dict(),
                                                   first.arch) for _ in range(batch_size - 1)]
    return converters.batch_graphs(graphs)


def build_model(backend: str, engine: str, batch: Batch, *, hidden: int, layers: int,
                readout: str = "last_layer", prune_last_layer: bool = True) -> torch.nn.Module:
    """``backend`` built for ``batch`` (an invariant task, 10 outputs). For ``ENGINE_BACKENDS``,
    ``engine`` is an engine (``sparse``, ``dense``, ``auto``) or one of ``PSEUDO_ENGINES``, and
    ``readout`` and ``prune_last_layer`` apply (a pseudo-engine's own settings win)."""
    import scalegmn
    if backend not in ENGINE_BACKENDS:
        return scalegmn.build(backend, "invariant", spec=batch, out_dim=10, hidden=hidden,
                              layers=layers)
    build = {"engine": engine, "prune_last_layer": prune_last_layer}
    build.update(PSEUDO_ENGINES.get(engine, {}).get("build", {}))
    return scalegmn.build(backend, "invariant", spec=batch, out_dim=10, hidden=hidden,
                          layers=layers, readout=readout, **build)


def engines_for(backend: str, engines: Iterable[str]) -> list:
    """The engines ``backend`` is measured with: ``engines`` for ``ENGINE_BACKENDS``, ``["-"]``
    for the others."""
    return list(engines) if backend in ENGINE_BACKENDS else ["-"]


def malloc_for(engine: str, default: str) -> str:
    """The malloc policy of a measuring process for ``engine``: a pseudo-engine's own, else
    ``default``."""
    return PSEUDO_ENGINES.get(engine, {}).get("malloc", default)


def default_backends() -> list:
    """``DEFAULT_BACKENDS`` that are registered now, then any other registered backend."""
    from scalegmn.registry import backends
    registered = list(backends())
    return [b for b in DEFAULT_BACKENDS if b in registered] + \
        [b for b in registered if b not in DEFAULT_BACKENDS]


def buildable(backends: Iterable[str]) -> tuple:
    """(backends that build on a small MLP batch, {backend: error} for those that do not)."""
    batch = make_batch(mlp_workload([2, 8, 8, 1]), 2)
    ok, failed = [], {}
    for b in backends:
        try:
            build_model(b, "auto", batch, hidden=8, layers=1)
            ok.append(b)
        except Exception as e:      # noqa: BLE001
            failed[b] = f"{type(e).__name__}: {e}"[:300]
    return ok, failed


__all__ = ["WORKLOADS", "DEFAULT_BACKENDS", "ENGINE_BACKENDS", "PSEUDO_ENGINES", "mlp_workload",
           "widths", "describe", "make_model", "example_input", "make_batch", "build_model",
           "engines_for", "malloc_for", "default_backends", "buildable"]
