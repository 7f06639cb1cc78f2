"""One measurement: the functions a measuring process runs, and ``measure_row`` which runs one.

The functions here (``measure``, ``profile_step``, ``convert_case``, ``siren_fit``,
``step_rusage``; ``probes.matmul_peak``) run inside their own process (``isolation.isolated``):
keyword arguments in, a JSON-able dict out. Peak RSS is then per measurement.
"""
from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .isolation import isolated
from .probes import (allocator_name, count_flops, device, memory_view, op_profile, peak_rss_mib,
                     time_call)
from .settings import BenchSettings
from .workloads import (ENGINE_BACKENDS, build_model, example_input, make_batch, make_model,
                        malloc_for)


@dataclass(frozen=True)
class Case:
    """What one metanetwork measurement runs: ``backend`` with ``engine`` (``-`` for backends
    without engines) on ``batch_size`` networks of ``workload``, ``hidden`` width, ``layers``
    message-passing layers; ``readout`` and ``prune_last_layer`` of the engine backends."""
    backend: str
    engine: str
    workload: str
    batch_size: int
    hidden: int
    layers: int
    readout: str = "last_layer"
    prune_last_layer: bool = True


def _steps(*, backend: str, engine: str, workload: str, batch_size: int, hidden: int,
           layers: int, readout: str, prune_last_layer: bool, threads: Optional[int],
           autocast: Optional[str]) -> tuple:
    """(net, batch, device, forward step, forward+backward step) of one case."""
    if threads:
        torch.set_num_threads(threads)
    dev = device()
    batch = make_batch(workload, batch_size)
    net = build_model(backend, engine, batch, hidden=hidden, layers=layers, readout=readout,
                      prune_last_layer=prune_last_layer).to(dev)
    batch = batch.to(dev)

    def amp():
        return (torch.autocast(dev, dtype=getattr(torch, autocast)) if autocast else
                contextlib.nullcontext())

    def fwd():
        with torch.no_grad(), amp():
            net(batch)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        with amp():
            loss = net(batch).float().sum()
        loss.backward()
    return net, batch, dev, fwd, fwd_bwd


def measure(*, backend: str, engine: str, workload: str, batch_size: int, hidden: int,
            layers: int, repeats: int = 3, threads: Optional[int] = None,
            max_s: Optional[float] = None, memory: bool = True, flops: bool = True,
            readout: str = "last_layer", prune_last_layer: bool = True,
            autocast: Optional[str] = None) -> dict:
    """One metanetwork measurement (run inside its own process).

    Forward time (no grad) and forward+backward time of ``backend``/``engine`` on
    ``batch_size`` graphs of ``workload`` (median of up to ``repeats`` after warm-up, fewer once
    ``max_s`` seconds are spent), graphs/s, peak RSS, parameter counts; with ``memory`` the
    memory view of one forward+backward step (``probes.memory_view``), with ``flops`` its
    counted FLOPs (``probes.count_flops``) and FLOP/s. ``autocast``: a dtype name
    (``bfloat16``, ``float16``) the steps run under ``torch.autocast`` with; ``threads``: torch
    threads (None: torch's default)."""
    import scalegmn
    net, batch, dev, fwd, fwd_bwd = _steps(
        backend=backend, engine=engine, workload=workload, batch_size=batch_size, hidden=hidden,
        layers=layers, readout=readout, prune_last_layer=prune_last_layer, threads=threads,
        autocast=autocast)
    engine_backend = backend in ENGINE_BACKENDS
    out = {"backend": backend, "engine": engine, "workload": workload, "batch": batch_size,
           "hidden": hidden, "layers": layers, "threads": torch.get_num_threads(),
           "readout": readout if engine_backend else None,
           "prune_last_layer": prune_last_layer if engine_backend else None,
           "allocator": allocator_name(dev), "device": dev, "autocast": autocast,
           "edges_per_graph": batch.num_edges // batch_size,
           "nodes_per_graph": batch.num_nodes // batch_size, **scalegmn.count_parameters(net)}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        out[f"{name}_s"] = time_call(fn, repeats, max_s, dev)
        out[f"{name}_graphs_per_s"] = batch_size / out[f"{name}_s"]
    out["peak_rss_mib"] = peak_rss_mib()    # before the profiler's own bookkeeping
    if memory:
        out.update(memory_view(fwd_bwd, dev))
    if flops:
        out["flops_forward_backward"] = count_flops(fwd_bwd)
        out["achieved_gflops"] = out["flops_forward_backward"] / out["forward_backward_s"] / 1e9
    return out


def profile_step(*, backend: str, engine: str, workload: str, batch_size: int, hidden: int,
                 layers: int, readout: str = "last_layer", prune_last_layer: bool = True,
                 threads: Optional[int] = None, autocast: Optional[str] = None,
                 row_limit: int = 12) -> dict:
    """``torch.profiler``'s operator table (``table``, text sorted by self time) of one
    forward+backward step of a case after one warm-up step (run inside its own process)."""
    _, _, _, _, fwd_bwd = _steps(
        backend=backend, engine=engine, workload=workload, batch_size=batch_size, hidden=hidden,
        layers=layers, readout=readout, prune_last_layer=prune_last_layer, threads=threads,
        autocast=autocast)
    fwd_bwd()
    return {"backend": backend, "engine": engine, "workload": workload, "batch": batch_size,
            "table": op_profile(fwd_bwd, row_limit)}


def _case_kwargs(case: Case, settings: BenchSettings) -> dict:
    return {**asdict(case), "threads": settings.threads, "autocast": settings.autocast}


def measure_row(case: Case, settings: BenchSettings, *, repeats: int,
                max_s: Optional[float] = None, flops: bool = True,
                timeout: Optional[float] = None) -> dict:
    """``measure`` of ``case`` in its own process (malloc: the engine's own for pseudo-engines,
    else ``settings.malloc``; ``timeout`` defaults to ``settings.timeout``): its row, or
    ``{"backend", "engine", "error"}``; ``wall_s`` added (the whole measurement, process
    included)."""
    t0 = time.perf_counter()
    row = isolated(measure, {**_case_kwargs(case, settings), "repeats": repeats, "max_s": max_s,
                             "flops": flops},
                   timeout=settings.timeout if timeout is None else timeout,
                   max_mem_gib=settings.max_mem_gib,
                   malloc=malloc_for(case.engine, settings.malloc))
    if "error" in row:
        row = {"backend": case.backend, "engine": case.engine, "error": row["error"]}
    row["wall_s"] = time.perf_counter() - t0
    return row


def profile_row(case: Case, settings: BenchSettings) -> dict:
    """``profile_step`` of ``case`` in its own process (malloc as ``measure_row``)."""
    return isolated(profile_step, _case_kwargs(case, settings), timeout=settings.timeout,
                    max_mem_gib=settings.max_mem_gib,
                    malloc=malloc_for(case.engine, settings.malloc))


# -- converters, data generation, allocator ------------------------------------------------------
def convert_case(*, workload: str, repeats: int = 3) -> dict:
    """Times (s, median of ``repeats`` after warm-up) of ``converters.to_graph`` and
    ``converters.to_module`` on one network of ``workload``, exactness of the round trip, graph
    size, and the process's peak RSS (run in its own process)."""
    import converters
    torch.manual_seed(0)
    model, example = make_model(workload)
    params = sum(p.numel() for p in model.parameters())
    to_graph_s = time_call(lambda: converters.to_graph(model, example), repeats)
    graph = converters.to_graph(model, example)
    to_module_s = time_call(lambda: converters.to_module(graph), repeats)
    back = converters.to_module(graph)
    x = example if example is not None else example_input(model, workload)
    with torch.no_grad():
        exact = bool(torch.equal(back(x), model(x)))
    graph_bytes = sum(t.numel() * t.element_size() for _, t in graph if torch.is_tensor(t))
    return {"workload": workload, "params": params, "nodes": graph.num_nodes,
            "edges": graph.num_edges, "graph_mib": graph_bytes / 2**20, "to_graph_s": to_graph_s,
            "to_module_s": to_module_s, "round_trip_exact": exact, "peak_rss_mib": peak_rss_mib()}


def siren_fit(*, batch: int = 16, steps: int = 20, size: int = 28) -> dict:
    """SIREN fitting throughput of ``scalegmn.data.generate.fit_sirens`` (2-32-32-1 SIRENs,
    DWSNets convention, Adam): ``batch`` random ``size`` x ``size`` images fitted for ``steps``
    steps at once; SIRENs/s at that many steps, optimiser steps x SIRENs per second, and the time
    per SIREN extrapolated to the data set's 200 steps (run in its own process)."""
    from scalegmn.data.conventions import DWSNETS
    from scalegmn.data.generate import fit_sirens
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, size, size, generator=g)
    fit_sirens(images[:2], [0, 1], DWSNETS, steps=2)       # warm-up
    t0 = time.perf_counter()
    fit_sirens(images, list(range(batch)), DWSNETS, steps=steps)
    seconds = time.perf_counter() - t0
    return {"batch": batch, "steps": steps, "image": f"{size}x{size}", "seconds": seconds,
            "sirens_per_s": batch / seconds, "siren_steps_per_s": batch * steps / seconds,
            "s_per_siren_200_steps": seconds / batch * 200 / steps,
            "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


def step_rusage(*, workload: str, batch_size: int, hidden: int, layers: int, steps: int = 3,
                backend: str = "scalegmn", engine: str = "dense") -> dict:
    """Per forward+backward step after warm-up (run in its own process): wall, user and system
    CPU seconds and minor page faults (each first touch of memory the allocator got from the
    OS), under this process's allocator settings."""
    batch = make_batch(workload, batch_size)
    net = build_model(backend, engine, batch, hidden=hidden, layers=layers)

    def step():
        net.zero_grad(set_to_none=True)
        net(batch).sum().backward()
    step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    return {"backend": backend, "engine": engine, "workload": workload, "batch": batch_size,
            "hidden": hidden, "layers": layers, "steps": steps, "edges": batch.num_edges,
            "allocator": allocator_name("cpu"), "wall_s": wall / steps,
            "user_s": (r1.ru_utime - r0.ru_utime) / steps,
            "sys_s": (r1.ru_stime - r0.ru_stime) / steps,
            "page_faults": (r1.ru_minflt - r0.ru_minflt) / steps, "peak_rss_mib": peak_rss_mib()}


__all__ = ["Case", "measure", "profile_step", "measure_row", "profile_row", "convert_case",
           "siren_fit", "step_rusage"]
