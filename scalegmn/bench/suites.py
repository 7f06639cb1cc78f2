"""The suites of ``scalegmn bench``: each runs measurements in their own processes and returns
rows (dicts); ``report`` formats them.

- ``table``: every backend and engine on one workload (the default);
- ``run_sweep``: a scaling sweep over the input networks (``SWEEPS``: depth, width, batch, edges);
- ``run_paper``: ScaleGMN at the published workloads (``PAPER``), every engine, and the matmul
  peak of the same run;
- ``run_efficiency``: the matmul peak and the dense ScaleGMN step's fraction of it;
- ``run_allocator_check``: page faults and system time per step under each malloc policy;
- ``run_converters``: converter times and SIREN-fitting throughput;
- ``run_profiles``: ``torch.profiler`` operator tables of one step per engine.

``Parts`` says which of them a run measures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .isolation import isolated
from .measure import Case, convert_case, measure_row, profile_row, siren_fit, step_rusage
from .probes import matmul_peak
from .settings import BenchSettings, Size
from .workloads import engines_for, mlp_workload

Rows = list  # of row dicts (one measurement each)
Log = Optional[Callable[[dict], None]]


@dataclass(frozen=True)
class Parts:
    """Which suites a run measures: the default ``table``, the ``paper`` workloads,
    ``efficiency``, ``sweeps`` (names of ``SWEEPS``), the ``allocator`` check, the
    ``converters`` and operator ``profile`` tables."""
    table: bool = True
    paper: bool = False
    efficiency: bool = False
    sweeps: tuple = ()
    allocator: bool = False
    converters: bool = False
    profile: bool = False


# -- the default table ---------------------------------------------------------------------------
def table_cases(settings: BenchSettings, backends: Iterable[str],
                size: Optional[Size] = None) -> list:
    """The ``Case`` of every backend (and engine) of the default table."""
    size = size or settings.table
    return [Case(b, e, settings.workload, size.batch, size.hidden, size.layers,
                 settings.readout, settings.prune_last_layer)
            for b in backends for e in engines_for(b, settings.engines)]


def table(settings: BenchSettings, backends: Iterable[str]) -> Rows:
    """Every backend (and engine) on ``settings.table.batch`` graphs of ``settings.workload``:
    one ``measure`` row each (failed measurements are rows with ``error``)."""
    size = settings.table
    return [measure_row(case, settings, repeats=size.repeats, max_s=size.max_s)
            for case in table_cases(settings, backends)]


# -- scaling sweeps ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """A scaling sweep: its points ``xs`` (``quick_xs`` with ``--quick``), the x axis in words
    and the input networks in words."""
    name: str
    xs: tuple
    quick_xs: tuple
    xlabel: str
    text: str


SWEEPS = {
    "depth": Sweep("depth", (2, 3, 4, 6, 8, 12, 16, 24), (2, 8),
                   "linear layers L of the input MLP",
                   "ReLU MLPs 2-32-...-32-1 with L linear layers (width 32)"),
    "width": Sweep("width", (8, 16, 32, 64, 128, 256), (8, 32), "width w of the input MLP",
                   "ReLU MLPs 2-w-w-1 (3 linear layers)"),
    "batch": Sweep("batch", (8, 16, 32, 64, 128, 256), (8, 32), "batch size (graphs)",
                   "ReLU MLPs 2-32-32-1; the batch size varies"),
    "edges": Sweep("edges", (8, 16, 32, 64, 128), (8, 32),
                   "edges (weights) per input graph", "ReLU MLPs 2-w-w-w-1 (4 linear layers), "
                   "w = 8, 16, ... varies"),
}


def sweep_point(name: str, x: int, batch: int) -> tuple:
    """(workload, batch size, x value) of point ``x`` of sweep ``name`` (``batch``: the batch
    size of the sweeps other than ``batch``)."""
    if name == "depth":
        return mlp_workload([2] + [32] * (x - 1) + [1]), batch, x
    if name == "width":
        return mlp_workload([2, x, x, 1]), batch, x
    if name == "batch":
        return mlp_workload([2, 32, 32, 1]), x, x
    if name == "edges":
        widths = [2, x, x, x, 1]
        return mlp_workload(widths), batch, sum(a * b for a, b in zip(widths, widths[1:]))
    raise ValueError(f"unknown sweep {name!r}; choose from {sorted(SWEEPS)}")


_FATAL = ("timeout", "process died", "MemoryError", "can't allocate", "out of memory")


def is_fatal(row: dict) -> bool:
    """A failure that a larger input would repeat (time, memory): skip the larger points."""
    return "error" in row and any(s in row["error"] for s in _FATAL)


def run_sweep(name: str, settings: BenchSettings, backends: Iterable[str], *,
              sweeps: Optional[dict] = None, log: Log = None) -> Rows:
    """Rows of sweep ``name`` (of ``sweeps``, default ``SWEEPS``): every backend/engine at
    every point (``sweep``, ``x``, ``workload``, ``batch`` set; no FLOP count), sizes from
    ``settings.sweep``, the quick points with ``settings.quick``. After a time or memory
    failure the larger points of that backend/engine are failed rows. ``log`` gets each row."""
    sweep = (sweeps or SWEEPS)[name]
    size = settings.sweep
    rows = []
    for backend in backends:
        for engine in engines_for(backend, settings.engines):
            dead = None
            for x in (sweep.quick_xs if settings.quick else sweep.xs):
                workload, bs, xval = sweep_point(name, x, size.batch)
                if dead is not None:
                    row = {"backend": backend, "engine": engine, "error": dead}
                else:
                    case = Case(backend, engine, workload, bs, size.hidden, size.layers)
                    row = measure_row(case, settings, repeats=size.repeats, max_s=size.max_s,
                                      flops=False)
                    if is_fatal(row):
                        dead = f"skipped after failure at x={xval}"
                row.update(sweep=name, x=xval, workload=workload, batch=bs)
                rows.append(row)
                if log:
                    log(row)
    return rows


# -- the published workloads ---------------------------------------------------------------------
#: the published workloads (issue 9): ScaleGMN's MNIST-INR classification config, every engine;
#: Small-CNN-Zoo CNNs at batch 64
PAPER = [{"workload": "siren", "batch_size": 128, "hidden": 128, "layers": 4,
          "engines": ["sparse", "dense", "lean", "reference"]},
         {"workload": "cnn_zoo", "batch_size": 64, "hidden": 128, "layers": 4,
          "engines": ["sparse", "dense"]}]


def run_paper(settings: BenchSettings, *, cases: Optional[list] = None,
              log: Log = None) -> list:
    """ScaleGMN (readout last_layer) at each of ``cases`` (default ``PAPER``) with its engines,
    then the matmul peak (``probes.matmul_peak``, in its own process) so the dense engine's
    fraction of it comes from the same run; with ``settings.quick``, at batch 4 and hidden 16
    (a smoke test of the same code). One dict per case (``workload``, sizes, ``rows``,
    ``measured``, ``matmul_gflops``); ``log`` gets each as it finishes."""
    out, peak = [], {}
    quick = settings.quick
    for case in PAPER if cases is None else cases:
        size = ({"batch_size": 4, "hidden": 16, "layers": 2} if quick else
                {k: case[k] for k in ("batch_size", "hidden", "layers")})
        rows = [measure_row(Case("scalegmn", engine, case["workload"], **size), settings,
                            repeats=1 if quick else 2, max_s=None if quick else 10.0,
                            timeout=settings.timeout * (1 if quick else 3))
                for engine in case["engines"]]
        if not peak:
            peak = isolated(matmul_peak, {"repeats": 3 if quick else 10,
                                          "threads": settings.threads},
                            timeout=settings.timeout, max_mem_gib=settings.max_mem_gib,
                            malloc=settings.malloc)
        result = {"workload": case["workload"], **size, "rows": rows,
                  "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "matmul_gflops": peak.get("gflops")}
        out.append(result)
        if log:
            log(result)
    return out


# -- efficiency ----------------------------------------------------------------------------------
def run_efficiency(settings: BenchSettings, *, step: Optional[dict] = None,
                   n: int = 2048) -> dict:
    """The matmul peak (``n`` x ``n``) and the dense ScaleGMN forward+backward step on the
    default table's workload and sizes (``step``: that measurement if already made), each in its
    own process; ``fraction`` = achieved / peak GFLOP/s when both succeeded."""
    size = settings.table
    peak = isolated(matmul_peak, {"n": n, "repeats": max(size.repeats, 5),
                                  "threads": settings.threads},
                    timeout=settings.timeout, max_mem_gib=settings.max_mem_gib,
                    malloc=settings.malloc)
    if step is None:
        case = Case("scalegmn", "dense", settings.workload, size.batch, size.hidden,
                    size.layers, settings.readout, settings.prune_last_layer)
        step = measure_row(case, settings, repeats=size.repeats, max_s=size.max_s)
    out = {"matmul": peak, "scalegmn_dense": step}
    if "error" not in peak and "error" not in step:
        out["fraction"] = step["achieved_gflops"] / peak["gflops"]
    return out


# -- allocator -----------------------------------------------------------------------------------
def run_allocator_check(settings: BenchSettings, *, workload: str, batch_size: int, hidden: int,
                        layers: int) -> dict:
    """``measure.step_rusage`` of the dense ScaleGMN step under each malloc policy (glibc left
    alone, ``scalegmn.allocator``'s ``keep`` and ``lean``), each in its own server:
    ``{policy: row}``."""
    kwargs = {"workload": workload, "batch_size": batch_size, "hidden": hidden, "layers": layers}
    return {m: isolated(step_rusage, kwargs, timeout=settings.timeout,
                        max_mem_gib=settings.max_mem_gib, malloc=m)
            for m in ("default", "keep", "lean")}


def allocator_suite(settings: BenchSettings) -> dict:
    """``run_allocator_check`` at the batch sweep's largest point (ReLU MLPs 2-32-32-1, sweep
    hidden and layers)."""
    big = (SWEEPS["batch"].quick_xs if settings.quick else SWEEPS["batch"].xs)[-1]
    return run_allocator_check(settings, workload=mlp_workload([2, 32, 32, 1]), batch_size=big,
                               hidden=settings.sweep.hidden, layers=settings.sweep.layers)


# -- converters and data generation --------------------------------------------------------------
#: the reference models of ``converters.models.ZOO_FACTORIES`` (named here so that importing
#: the suites does not import torch; a test checks the two lists agree)
ZOO_CONVERTER_CASES = ("zoo:vit_tiny", "zoo:gpt_tiny", "zoo:llama_block", "zoo:mobilenet_v2_tiny",
                       "zoo:unet_small", "zoo:lstm_classifier", "zoo:gru_classifier",
                       "zoo:text_cnn")
CONVERTER_CASES = ("mlp:784-512-512-10", "cnn_zoo", "resnet18") + ZOO_CONVERTER_CASES
QUICK_CONVERTER_CASES = ("mlp:2-32-32-1", "cnn_zoo", "resnet18") + ZOO_CONVERTER_CASES


def run_converters(settings: BenchSettings, *, cases: Iterable[str] = CONVERTER_CASES,
                   repeats: int = 3, fit_batch: int = 16, fit_steps: int = 20) -> dict:
    """``measure.convert_case`` for each workload of ``cases`` and ``measure.siren_fit``
    (``fit_batch`` SIRENs, ``fit_steps`` steps), each in its own process:
    ``{"converters": rows, "siren_fit": row}``."""
    limits = {"timeout": settings.timeout, "max_mem_gib": settings.max_mem_gib,
              "malloc": settings.malloc}
    rows = [{"workload": case, **isolated(convert_case, {"workload": case, "repeats": repeats},
                                          **limits)} for case in cases]
    fit = isolated(siren_fit, {"batch": fit_batch, "steps": fit_steps}, **limits)
    return {"converters": rows, "siren_fit": fit}


def converters_suite(settings: BenchSettings) -> dict:
    """``run_converters`` at the full sizes, or small ones with ``settings.quick``."""
    quick = settings.quick
    return run_converters(settings, cases=QUICK_CONVERTER_CASES if quick else CONVERTER_CASES,
                          repeats=1 if quick else 3, fit_batch=8 if quick else 32,
                          fit_steps=5 if quick else 50)


# -- operator profiles ---------------------------------------------------------------------------
def run_profiles(settings: BenchSettings, backends: Iterable[str]) -> dict:
    """``torch.profiler`` operator table of one forward+backward step of every backend (and
    engine) of the default table, each in its own process: ``{"backend/engine": text}`` (or
    ``"failed: ..."``)."""
    out = {}
    for case in table_cases(settings, backends):
        row = profile_row(case, settings)
        out[f"{case.backend}/{case.engine}"] = row.get("table") or f"failed: {row.get('error')}"
    return out


__all__ = ["Parts", "table_cases", "table", "Sweep", "SWEEPS", "sweep_point", "is_fatal",
           "run_sweep", "PAPER", "run_paper", "run_efficiency", "run_allocator_check",
           "allocator_suite", "CONVERTER_CASES", "ZOO_CONVERTER_CASES", "run_converters", "converters_suite",
           "run_profiles"]
