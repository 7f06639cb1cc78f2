"""Probes: wall time, tensor memory, FLOPs, peak RSS, the matmul peak and the machine.

Each probe measures one thing of a call or of this process; none starts a process. The
measured functions of ``measure`` combine them inside a measuring process.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable, Optional

import torch

from .isolation import proc_kib, server_env

Step = Callable[[], object]


def device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``: where measurements run."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Step, repeats: int, max_s: Optional[float] = None, device: str = "cpu") -> float:
    """Median wall time (s) of ``fn()`` over up to ``repeats`` calls after one warm-up call;
    stops repeating once ``max_s`` seconds have been spent (at least one timed call). On
    ``cuda`` each call is synchronised."""
    fn()
    _sync(device)
    times = []
    while len(times) < max(repeats, 1):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if max_s is not None and sum(times) > max_s:
            break
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB)."""
    try:
        return proc_kib("VmHWM") / 1024
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def allocator_name(device: str) -> str:
    """``cuda caching (native)``; on the CPU ``glibc malloc keep`` (``scalegmn.allocator``
    applied) or ``default``, with a preloaded malloc replacement (``LD_PRELOAD``) and ``MALLOC_*``
    glibc tunables named too."""
    if device == "cuda":
        return f"cuda caching ({torch.cuda.get_allocator_backend()})"
    from scalegmn import allocator
    name = ("glibc malloc" if allocator.glibc_version() else "malloc") + " " + allocator.policy()
    extra = [f"{k}={v}" for k, v in sorted(os.environ.items())
             if k == "LD_PRELOAD" or k.startswith("MALLOC_")]
    return name + (f" ({', '.join(extra)})" if extra else "")


def memory_from_events(prof: "torch.profiler.profile") -> Optional[tuple]:
    """(peak, net) bytes from the profiler's allocation (+) and free (-) events in time order:
    the maximum of their running sum, and their sum; None when this torch does not expose the
    raw events (``kineto_results`` is not a public API)."""
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except Exception:       # noqa: BLE001
        return None
    live = peak = 0
    for ev in sorted(events, key=lambda e: e.start_ns()):
        live += ev.nbytes()
        peak = max(peak, live)
    return peak, live


def memory_from_averages(prof: "torch.profiler.profile") -> tuple:
    """(peak, net) bytes from ``key_averages()``: the largest inclusive per-op
    ``cpu_memory_usage`` (a lower bound of the peak) and the sum of ``self_cpu_memory_usage``
    (the same net as the events'); slow (it builds the whole event tree)."""
    averages = prof.key_averages()
    return (max((e.cpu_memory_usage for e in averages), default=0),
            sum(e.self_cpu_memory_usage for e in averages))


def memory_view(step: Step, device: str = "cpu") -> dict:
    """Tensor memory of one call of ``step`` (MiB), above what was allocated before it: the peak
    (``alloc_peak_mib``) and the net change (``alloc_net_mib``: what the step leaves allocated,
    e.g. gradients), with ``alloc_source`` and ``allocator``.

    CUDA: ``torch.cuda.max_memory_allocated`` and ``memory_allocated``. CPU: ``torch.profiler``
    with ``profile_memory=True``, from its allocation events (``memory_from_events``; their net
    equals the sum of ``self_cpu_memory_usage`` over ``key_averages()``, which is slower to
    build), else from ``key_averages()`` (``memory_from_averages``)."""
    if device == "cuda":
        return _cuda_memory_view(step)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    found, source = memory_from_events(prof), "torch.profiler memory events"
    if found is None:
        found, source = memory_from_averages(prof), "torch.profiler key_averages"
    return {"alloc_peak_mib": found[0] / 2**20, "alloc_net_mib": found[1] / 2**20,
            "alloc_source": source, "allocator": allocator_name(device)}


def _cuda_memory_view(step: Step) -> dict:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return {"alloc_peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20,
            "alloc_net_mib": (torch.cuda.memory_allocated() - base) / 2**20,
            "alloc_source": "torch.cuda.max_memory_allocated", "allocator": allocator_name("cuda")}


def count_flops(step: Step) -> int:
    """FLOPs of one call of ``step`` as counted by ``torch.utils.flop_counter.FlopCounterMode``
    (matrix products and convolutions, forward and backward; scatter/gather and elementwise
    operations count zero)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def op_profile(step: Step, row_limit: int = 12) -> str:
    """``torch.profiler``'s operator table of one call of ``step`` (CPU activity; CUDA too on a
    GPU), sorted by self time, ``row_limit`` rows."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device() == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        step()
        _sync(device())
    sort = "self_cuda_time_total" if device() == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit)


def matmul_peak(n: int = 2048, repeats: int = 10, threads: Optional[int] = None) -> dict:
    """This machine's float32 ``torch.mm`` throughput on ``n`` x ``n`` matrices: 2 n^3 FLOPs
    over the median time of ``repeats`` calls after warm-up (``gflops``), with ``n``,
    ``seconds``, ``threads``, ``device``."""
    if threads:
        torch.set_num_threads(threads)
    dev = device()
    a, b = (torch.randn(n, n, device=dev) for _ in range(2))
    seconds = time_call(lambda: torch.mm(a, b), repeats, device=dev)
    return {"n": n, "seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9,
            "threads": torch.get_num_threads(), "device": dev}


def machine() -> dict:
    """CPU model and kernels, logical and usable cores, memory (GiB), torch and Python versions,
    torch threads, platform, date, OMP_WAIT_POLICY of the measuring processes, the GPU if any,
    and the 1-minute load average now (``load_at_start``)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch": torch.__version__, "torch_threads":
            torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "cpu_capability": _cpu_capability(),
            "omp_wait_policy": server_env()["OMP_WAIT_POLICY"]}
    try:
        info["memory_gib"] = round(proc_kib("MemTotal", "/proc/meminfo") / 2**20, 1)
    except (OSError, TypeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_at_start"] = round(os.getloadavg()[0], 2)
    return info


def _cpu_capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:       # noqa: BLE001  (older torch)
        return "unknown"
