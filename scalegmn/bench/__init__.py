"""``scalegmn bench``: speed and memory of metanetworks, converters and data generation.

Modes (flags of ``scalegmn bench``; combine freely):

- default: one table, every backend and engine on one workload (``--workload``, ``--batch``, ...);
- ``--sweep depth|width|batch|edges|all``: scaling sweeps over the *input* networks (MLPs) with a
  fitted growth exponent per backend and engine, a log-log plot per sweep;
- ``--paper``: ScaleGMN at the published workloads, every engine, with the matmul peak of the
  same run;
- ``--converters``: ``converters.to_graph`` / ``to_module`` times and peak RSS (an MLP, the
  CNN-zoo CNN, a ResNet-18) and SIREN fitting throughput;
- ``--efficiency``: this machine's float32 matmul peak (GFLOP/s) and the fraction of it that the
  dense ScaleGMN forward+backward step achieves;
- ``--allocator``: page faults and system time per step with glibc malloc as configured and
  with freed memory kept in the process;
- ``--profile``: ``torch.profiler`` operator tables of one step per backend and engine;
- ``--preset engine-speed``: ScaleGMN's sparse against its dense engine at the MNIST-INR
  workload, with FLOP/s against the matmul peak;
- ``--docs``: all of the above, written to ``docs/benchmarks.md`` (figures and the raw JSON in
  ``docs/benchmarks/``) with a description of the machine;
- ``--quick``: small sizes and repeats (a smoke test of the same code);
- ``--render bench.json``: rewrite the report from saved measurements.

Every measurement runs in its own process, forked from a server process that has imported torch,
converters and scalegmn and run nothing else (``isolation``): peak RSS is per measurement (reset
when the process starts, so it counts the imported libraries plus what the measurement used) and
the import cost is paid once. Times are medians of repeats after one warm-up call. A
measurement that raises, runs out of memory (``--max-mem-gib``) or time (``--timeout``) is a
failed row; it never stops the run. Ratios are meaningful within one run only.

Modules, by concern:

- ``settings``: ``BenchSettings`` (one frozen dataclass: sizes, threads, malloc, autocast,
  limits), ``Size``, the presets;
- ``isolation``: the fork server, resource limits, ``isolated`` (a ``"module:function"`` run in
  its own process);
- ``probes``: time, tensor memory, FLOPs, peak RSS, operator profile, matmul peak, the machine;
- ``workloads``: input networks, their batches, the metanetworks built for them;
- ``measure``: the measured functions and ``measure_row`` (one measurement);
- ``suites``: the default table, sweeps, published workloads, efficiency, allocator,
  converters, profiles; each returns rows;
- ``report``: text tables, exponent fits, plots, Markdown;
- ``cli``: options -> settings -> suites -> report.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# imported on first use: the measuring server (``isolation.serve``) imports this package and
# must not load torch before it forks (with a GPU it preloads nothing)
_LAZY = {"main": ".cli", "isolated": ".isolation", "Case": ".measure", "measure": ".measure",
         "measure_row": ".measure", "count_flops": ".probes", "matmul_peak": ".probes",
         "memory_view": ".probes", "peak_rss_mib": ".probes", "time_call": ".probes",
         "exponents": ".report", "fit_exponent": ".report", "write_report": ".report",
         "PRESETS": ".settings", "BenchSettings": ".settings", "Size": ".settings",
         "SWEEPS": ".suites", "Parts": ".suites"}

__all__ = ["main", "isolated", "Case", "measure", "measure_row", "count_flops", "matmul_peak",
           "memory_view", "peak_rss_mib", "time_call", "exponents", "fit_exponent",
           "write_report", "PRESETS", "BenchSettings", "Size", "SWEEPS", "Parts"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
