"""``scalegmn bench``: speed and memory of metanetworks, converters and data generation.

Modes (flags of ``scalegmn bench``; combine freely):

- default: one table, every backend and engine on one workload (``--workload``, ``--batch``, ...);
- ``--sweep depth|width|batch|edges|all``: scaling sweeps over the *input* networks (MLPs) with a
  fitted growth exponent per backend and engine, a log-log plot per sweep;
- ``--converters``: ``converters.to_graph`` / ``to_module`` times and peak RSS (an MLP, the
  CNN-zoo CNN, a ResNet-18) and SIREN fitting throughput;
- ``--efficiency``: this machine's float32 matmul peak (GFLOP/s) and the fraction of it that the
  dense ScaleGMN forward+backward step achieves;
- ``--allocator``: page faults and system time per step with glibc malloc as configured and
  with freed memory kept in the process;
- ``--docs``: all of the above, written to ``docs/benchmarks.md`` (figures and the raw JSON in
  ``docs/benchmarks/``) with a description of the machine;
- ``--quick``: small sizes and repeats (about a minute for ``--docs --quick`` on 2 cores);
- ``--render bench.json``: rewrite the report from saved measurements.

Every measurement runs in its own process, forked from a server process that has imported torch,
converters and scalegmn and run nothing else (``multiprocessing`` "forkserver"): peak RSS is per
measurement (reset when the process starts, so it counts the imported libraries plus what the
measurement used) and the import cost (~5 s) is paid once. Times are medians of repeats after one
warm-up call. A measurement that raises, runs out of memory (``--max-mem-gib``) or time
(``--timeout``) is a failed row; it never stops the run. Ratios are meaningful within one run only.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

WORKLOADS = {
    "siren": "SIREN 2-32-32-1 INRs (the MNIST-INR workload)",
    "cnn_zoo": "Small-CNN-Zoo CNNs (4,970 parameters)",
}
# the default order of backends; those not registered at run time are left out
DEFAULT_BACKENDS = ("scalegmn", "scalegmn-b", "gmn", "monomial-nfn", "magep-nfn", "np", "hnp",
                    "statnn", "mlp")
ENGINE_BACKENDS = ("scalegmn", "scalegmn-b", "gmn")     # the others run with engine "-"
# pseudo-engines of ENGINE_BACKENDS, what they build (ModelConfig fields), whether ScaleEq is
# fused, and the malloc policy of their measuring process: "lean" is the dense engine with
# ModelConfig.checkpoint (memory-lean; malloc as scalegmn train gives it); "reference" a
# straightforward PyG implementation of the same model: sparse gathers and scatter, textbook
# ScaleEq (no fused matmuls), every last-layer message evaluated, glibc malloc left alone
PSEUDO_ENGINES = {"lean": {"build": {"engine": "dense", "checkpoint": True}, "malloc": "lean"},
                  "reference": {"build": {"engine": "sparse", "prune_last_layer": False,
                                          "fused": False}, "malloc": "default"}}
PACKAGES_DIR = Path(__file__).resolve().parents[1]   # the folder holding scalegmn/ and converters/


# -- one process per measurement ---------------------------------------------------------------
_PRELOAD = ("torch", "torch_geometric", "torch.profiler", "torch.utils.flop_counter",
            "converters", "scalegmn", "scalegmn.gmn", "scalegmn.baselines", "scalegmn.nfn",
            "scalegmn.data.generate")
_SERVERS: dict = {}


def _proc_kib(field, path="/proc/self/status"):
    """A ``kB`` field of a /proc file (``VmHWM``, ``MemTotal``, ...); None if absent."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss():
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB)."""
    try:
        return _proc_kib("VmHWM") / 1024
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _limit_memory(max_mem_gib):
    """Cap the address space at what is mapped now plus ``max_mem_gib`` GiB (an allocation error
    instead of the machine's OOM killer)."""
    if not max_mem_gib:
        return
    try:
        cap = _proc_kib("VmSize") * 1024 + int(max_mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, TypeError):
        pass


def _call(request) -> dict:
    """In the measuring process: ``bench.<name>(**kwargs)``; an exception becomes ``error``."""
    _reset_peak_rss()
    _limit_memory(request.get("max_mem_gib"))
    try:
        return globals()[request["name"]](**request["kwargs"])
    except BaseException as e:      # noqa: BLE001  (every failure becomes a failed row)
        first = str(e).splitlines()[0] if str(e) else ""
        return {"error": f"{type(e).__name__}: {first}"[:300]}


def _fork_one(request) -> dict:
    """In the server: fork, run ``request`` in the child, wait up to its timeout."""
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                # the measuring process
        os.close(r)
        try:
            view = memoryview(json.dumps(_call(request), default=str).encode())
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    data = _read_until(r, time.monotonic() + request["timeout"])
    os.close(r)
    if data is None:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if data is None:
        return {"error": f"timeout after {request['timeout']:.0f} s"}
    if not data:
        return {"error": f"process died ({_status_text(status)}; out of memory?)"}
    return json.loads(data)


def _read_until(fd, deadline):
    """Everything written to ``fd`` until its writer closes it; None past ``deadline``."""
    import select
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _status_text(status):
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


def serve():
    """The server: import the heavy modules once, then fork one process per request line (JSON on
    stdin), answering one JSON line each on the original stdout. Runs no torch computation itself
    (a forked child then starts its own thread pools)."""
    import importlib
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                               # stray prints go to stderr, not the protocol
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from . import allocator
    allocator.apply(os.environ.get("SCALEGMN_MALLOC", "keep"))   # inherited by every fork
    for line in sys.stdin:
        proto.write(json.dumps(_fork_one(json.loads(line))) + "\n")
        proto.flush()


MALLOC = "keep"   # how the measuring processes set up malloc (``scalegmn.allocator``; --malloc)
AUTOCAST = ""     # torch.autocast dtype of the measured steps ("": none; --autocast)


def server_env(extra=None) -> dict:
    """Environment of the measuring processes: the folder holding these packages (a checkout
    or site-packages) first on ``PYTHONPATH``,
    ``OMP_WAIT_POLICY=PASSIVE`` unless set (with OpenMP's spinning threads, any other load on the
    machine made small steps up to 100x slower on 2 cores; passive waiting costs little), and
    ``SCALEGMN_MALLOC`` (``MALLOC``: the server applies ``scalegmn.allocator.apply`` with it, as
    ``scalegmn train`` does), ``SCALEGMN_AUTOCAST`` (``AUTOCAST``, read by ``measure``).
    ``extra`` is added last."""
    paths = [str(PACKAGES_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                   if p]
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": os.pathsep.join(paths),
            "SCALEGMN_MALLOC": MALLOC, "SCALEGMN_AUTOCAST": AUTOCAST, **(extra or {})}


class _Server:
    """A ``serve()`` subprocess; ``ask`` sends one request and waits for its answer."""

    def __init__(self, env=None):
        import subprocess
        import tempfile
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from scalegmn.bench import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=server_env(env))

    def ask(self, request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server exited: " + self._log_tail())
        return json.loads(line)

    def _log_tail(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout, self.log):
            if not f.closed:
                f.close()


def _start_server(env=None):
    """The (running) server for ``env``; started in the background if there is none."""
    key = tuple(sorted(server_env(env).items()))   # a server per complete environment
    server = _SERVERS.get(key)
    if server is None or server.proc.poll() is not None:
        import atexit
        server = _SERVERS[key] = _Server(env)
        atexit.register(server.close)
    return server


def isolated(name: str, kwargs: dict, timeout: float = 600, max_mem_gib: float | None = None,
             env: dict | None = None):
    """Run ``bench.<name>(**kwargs)`` in a fresh process forked from a server that has imported
    torch, converters and scalegmn (one server per ``env``, extra environment variables); its
    dict, or ``{"error": ...}`` if it raised, died, or ran past ``timeout`` seconds."""
    return _start_server(env).ask({"name": name, "kwargs": kwargs, "timeout": timeout,
                                   "max_mem_gib": max_mem_gib})


# -- inputs --------------------------------------------------------------------------------------
def mlp_workload(widths) -> str:
    """The workload name of ReLU MLPs with these widths, e.g. ``mlp:2-32-32-1``."""
    return "mlp:" + "-".join(str(int(w)) for w in widths)


def _widths(workload):
    return [int(w) for w in workload.split(":", 1)[1].split("-")]


def describe(workload) -> str:
    if workload.startswith("mlp:"):
        return f"ReLU MLPs {workload[4:]}"
    return WORKLOADS.get(workload, workload)


def make_model(workload):
    """A freshly initialised network of ``workload`` (``siren``, ``cnn_zoo``, ``mlp:2-32-1``,
    ``resnet18``) and an example input for ``converters.to_graph`` (None where not needed)."""
    import converters
    if workload == "siren":
        return converters.models.Siren((2, 32, 32, 1), output_offset=0.5), None
    if workload == "cnn_zoo":
        return converters.models.cnn_zoo(), None
    if workload.startswith("mlp:"):
        return converters.models.mlp(_widths(workload), "relu"), None
    if workload == "resnet18":
        return converters.models.ResNet18().eval(), torch.randn(1, 3, 64, 64)
    raise ValueError(f"unknown workload {workload!r}; choose from {sorted(WORKLOADS)}, "
                     "mlp:<widths>, resnet18")


def _batch(workload, batch_size, seed=0):
    """``batch_size`` freshly initialised networks of ``workload`` as one batch (the first traced
    by ``to_graph``, the others read into its ``ArchSpec`` by ``from_state_dict``, 50x faster)."""
    import converters
    torch.manual_seed(seed)
    first = converters.to_graph(make_model(workload)[0])
    graphs = [first] + [converters.from_state_dict(make_model(workload)[0].state_dict(),
                                                   first.arch) for _ in range(batch_size - 1)]
    return converters.batch_graphs(graphs)


# -- timing, memory, FLOPs -----------------------------------------------------------------------
def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn, repeats, max_s=None, device="cpu") -> float:
    """Median wall time (s) of ``fn()`` over up to ``repeats`` calls after one warm-up call;
    stops repeating once ``max_s`` seconds have been spent (at least one timed call)."""
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


def allocator_name(device) -> str:
    """``cuda caching (native)``; on the CPU ``glibc malloc keep`` (``scalegmn.allocator``
    applied) or ``default``, with a preloaded malloc replacement (``LD_PRELOAD``) and ``MALLOC_*``
    glibc tunables named too."""
    if device == "cuda":
        return f"cuda caching ({torch.cuda.get_allocator_backend()})"
    from . import allocator
    name = ("glibc malloc" if allocator.glibc_version() else "malloc") + " " + allocator.policy()
    extra = [f"{k}={v}" for k, v in sorted(os.environ.items())
             if k == "LD_PRELOAD" or k.startswith("MALLOC_")]
    return name + (f" ({', '.join(extra)})" if extra else "")


def memory_from_events(prof):
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


def memory_from_averages(prof):
    """(peak, net) bytes from ``key_averages()``: the largest inclusive per-op
    ``cpu_memory_usage`` (a lower bound of the peak) and the sum of ``self_cpu_memory_usage``
    (the same net as the events'); slow (it builds the whole event tree)."""
    averages = prof.key_averages()
    return (max((e.cpu_memory_usage for e in averages), default=0),
            sum(e.self_cpu_memory_usage for e in averages))


def memory_view(step, device="cpu") -> dict:
    """Tensor memory of one call of ``step`` (MiB), above what was allocated before it: the peak
    and the net change (what the step leaves allocated, e.g. gradients).

    CUDA: ``torch.cuda.max_memory_allocated`` and ``memory_allocated``. CPU: ``torch.profiler``
    with ``profile_memory=True``, from its allocation events (``memory_from_events``; their net
    equals the sum of ``self_cpu_memory_usage`` over ``key_averages()``, which costs ~0.5 s more
    per call), else from ``key_averages()`` (``memory_from_averages``)."""
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


def _cuda_memory_view(step):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return {"alloc_peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20,
            "alloc_net_mib": (torch.cuda.memory_allocated() - base) / 2**20,
            "alloc_source": "torch.cuda.max_memory_allocated", "allocator": allocator_name("cuda")}


def count_flops(step) -> int:
    """FLOPs of one call of ``step`` as counted by ``torch.utils.flop_counter.FlopCounterMode``
    (matrix products and convolutions, forward and backward; scatter/gather and elementwise
    operations count zero)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


# -- one metanetwork measurement -----------------------------------------------------------------
def _build(backend, engine, batch, hidden, layers, readout="last_layer"):
    """``backend`` built for ``batch`` (an invariant task, 10 outputs); ``engine`` may be one of
    ``PSEUDO_ENGINES`` for the message-passing backends."""
    import scalegmn
    if backend not in ENGINE_BACKENDS:
        return scalegmn.build(backend, "invariant", spec=batch, out_dim=10, hidden=hidden,
                              layers=layers)
    pseudo = PSEUDO_ENGINES.get(engine, {"build": {"engine": engine}})
    return scalegmn.build(backend, "invariant", spec=batch, out_dim=10, hidden=hidden,
                          layers=layers, readout=readout, **pseudo["build"])


def measure(backend, engine, workload, batch_size, hidden, layers, repeats, threads,
            max_s=None, profile=True, flops=True, readout="last_layer") -> dict:
    """One measurement (run inside its own process): forward time (no grad) and forward+backward
    time of ``backend``/``engine`` on ``batch_size`` graphs of ``workload`` (median of up to
    ``repeats`` after warm-up, fewer once ``max_s`` seconds are spent), graphs/s, peak RSS,
    parameter counts; with ``profile`` the memory view of one forward+backward step
    (``memory_view``), with ``flops`` its counted FLOPs (``count_flops``) and FLOP/s."""
    import scalegmn
    if threads:
        torch.set_num_threads(threads)
    device = _device()
    batch = _batch(workload, batch_size)
    net = _build(backend, engine, batch, hidden, layers, readout).to(device)
    batch = batch.to(device)
    amp = os.environ.get("SCALEGMN_AUTOCAST") or None     # ``--autocast``

    def autocast():
        return (torch.autocast(device, dtype=getattr(torch, amp)) if amp else
                contextlib.nullcontext())

    def fwd():
        with torch.no_grad(), autocast():
            net(batch)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        with autocast():
            loss = net(batch).float().sum()
        loss.backward()

    out = {"backend": backend, "engine": engine, "workload": workload, "batch": batch_size,
           "hidden": hidden, "layers": layers, "threads": torch.get_num_threads(),
           "readout": readout if backend in ENGINE_BACKENDS else None,
           "allocator": allocator_name(device),
           "device": device, "autocast": amp,
           "edges_per_graph": batch.num_edges // batch_size,
           "nodes_per_graph": batch.num_nodes // batch_size, **scalegmn.count_parameters(net)}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        out[f"{name}_s"] = time_call(fn, repeats, max_s, device)
        out[f"{name}_graphs_per_s"] = batch_size / out[f"{name}_s"]
    out["peak_rss_mib"] = peak_rss_mib()    # before the profiler's own bookkeeping
    if profile:
        out.update(memory_view(fwd_bwd, device))
    if flops:
        out["flops_forward_backward"] = count_flops(fwd_bwd)
        out["achieved_gflops"] = out["flops_forward_backward"] / out["forward_backward_s"] / 1e9
    return out


def engines_for(backend, engines):
    return list(engines) if backend in ENGINE_BACKENDS else ["-"]


def _measure_row(backend, engine, kwargs, timeout, max_mem_gib):
    t0 = time.perf_counter()
    pseudo = PSEUDO_ENGINES.get(engine)
    env = {"SCALEGMN_MALLOC": pseudo["malloc"]} if pseudo else None
    row = isolated("measure", {"backend": backend, "engine": engine, **kwargs}, timeout,
                   max_mem_gib, env=env)
    if "error" in row:
        row = {"backend": backend, "engine": engine, "error": row["error"]}
    row["wall_s"] = time.perf_counter() - t0        # the whole measurement, process included
    return row


def run(backends, engines, workload, batch_size, hidden, layers, repeats, threads, out=None,
        max_s=None, timeout=600, max_mem_gib=None, readout="last_layer"):
    """Every backend (and engine) on ``batch_size`` graphs of ``workload``: (text table, rows);
    rows also written as JSON to ``out`` when given."""
    kwargs = {"workload": workload, "batch_size": batch_size, "hidden": hidden, "layers": layers,
              "repeats": repeats, "threads": threads, "max_s": max_s, "readout": readout}
    rows = [_measure_row(b, e, kwargs, timeout, max_mem_gib)
            for b in backends for e in engines_for(b, engines)]
    table = format_table(rows, f"{describe(workload)}, batch {batch_size}, hidden {hidden}, "
                               f"layers {layers}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(rows, indent=1))
    return table, rows


def format_table(rows, title) -> str:
    """Fixed-width text table of ``measure`` rows."""
    lines = [title, f"{'backend':<13s} {'engine':<9s} {'params':>10s} {'fwd ms':>9s} "
                    f"{'f+b ms':>9s} {'graphs/s':>9s} {'peak MiB':>9s} {'alloc MiB':>9s} "
                    f"{'GFLOP/s':>8s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<13s} {r['engine']:<9s} failed: {r['error']}")
            continue
        lines.append(f"{r['backend']:<13s} {r['engine']:<9s} {r['trainable']:>10,d} "
                     f"{r['forward_s'] * 1e3:>9.1f} {r['forward_backward_s'] * 1e3:>9.1f} "
                     f"{r['forward_backward_graphs_per_s']:>9.1f} {r['peak_rss_mib']:>9.0f} "
                     f"{r.get('alloc_peak_mib', float('nan')):>9.1f} "
                     f"{r.get('achieved_gflops', float('nan')):>8.2f}")
    return "\n".join(lines + engine_ratios(rows))


def engine_ratios(rows) -> list:
    """One line per backend measured with the dense engine and another: speed-up of dense
    (forward+backward time ratio) and peak RSS of the other over dense's."""
    out = []
    by = {(r["backend"], r["engine"]): r for r in rows if "error" not in r}
    for (backend, engine), d in by.items():
        if engine != "dense":
            continue
        parts = [f"{other} {o['forward_backward_s'] / d['forward_backward_s']:.2f}x the time, "
                 f"{o['peak_rss_mib'] / d['peak_rss_mib']:.2f}x the peak RSS"
                 for other in ("sparse", "reference", "lean")
                 if (o := by.get((backend, other))) is not None]
        if parts:
            out.append(f"{backend}: against dense (forward+backward): " + "; ".join(parts))
    return out


# -- backends ------------------------------------------------------------------------------------
def default_backends() -> list:
    """``DEFAULT_BACKENDS`` that are registered now, then any other registered backend."""
    import scalegmn
    registered = list(scalegmn.registry.backends())
    return [b for b in DEFAULT_BACKENDS if b in registered] + \
        [b for b in registered if b not in DEFAULT_BACKENDS]


def buildable(backends) -> tuple:
    """(backends that build on a small MLP batch, {backend: error} for those that do not)."""
    batch = _batch(mlp_workload([2, 8, 8, 1]), 2)
    ok, failed = [], {}
    for b in backends:
        try:
            _build(b, "auto", batch, 8, 1)
            ok.append(b)
        except Exception as e:      # noqa: BLE001
            failed[b] = f"{type(e).__name__}: {e}"[:300]
    return ok, failed


# -- scaling sweeps ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
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


def sweep_point(name, x, batch):
    """(workload, batch size, x value) of point ``x`` of sweep ``name``."""
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


def _is_fatal(row):
    """A failure that a larger input would repeat (time, memory): skip the larger points."""
    return "error" in row and any(s in row["error"] for s in _FATAL)


def run_sweep(name, backends, engines, batch, hidden, layers, repeats, quick=False,
              max_s=None, timeout=600, max_mem_gib=None, threads=None, log=None) -> list:
    """Rows of sweep ``name``: every backend/engine at every point (``sweep``, ``x`` added);
    after a time or memory failure the larger points of that backend/engine are failed rows."""
    rows = []
    xs = SWEEPS[name].quick_xs if quick else SWEEPS[name].xs
    for backend in backends:
        for engine in engines_for(backend, engines):
            dead = None
            for x in xs:
                workload, bs, xval = sweep_point(name, x, batch)
                if dead is not None:
                    row = {"backend": backend, "engine": engine, "error": dead}
                else:
                    kwargs = {"workload": workload, "batch_size": bs, "hidden": hidden,
                              "layers": layers, "repeats": repeats, "threads": threads,
                              "max_s": max_s, "flops": False}
                    row = _measure_row(backend, engine, kwargs, timeout, max_mem_gib)
                    if _is_fatal(row):
                        dead = f"skipped after failure at x={xval}"
                row.update(sweep=name, x=xval, workload=workload, batch=bs)
                rows.append(row)
                if log:
                    log(_row_line(row))
    return rows


def _row_line(r):
    head = f"  {r.get('sweep', '')} x={r.get('x', '')} {r['backend']}/{r['engine']}"
    if "error" in r:
        return f"{head}: failed: {r['error']}"
    return f"{head}: fwd {r['forward_s'] * 1e3:.1f} ms, f+b {r['forward_backward_s'] * 1e3:.1f} ms"


def fit_exponent(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x): y ~ c x^k returns k; NaN with fewer than
    two usable points (positive, finite)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys)
           if x and y and x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    if len({p[0] for p in pts}) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _series(rows):
    """{(backend, engine): [successful rows sorted by x]} in first-seen order."""
    out = {}
    for r in rows:
        out.setdefault((r["backend"], r["engine"]), [])
        if "error" not in r:
            out[(r["backend"], r["engine"])].append(r)
    return {k: sorted(v, key=lambda r: r["x"]) for k, v in out.items()}


def exponents(rows) -> dict:
    """Growth exponents per ``"backend/engine"``: of forward time, forward+backward time (all
    points, and the larger half of the points, where fixed costs matter least) and of the
    allocation peak of one forward+backward step."""
    out = {}
    for (backend, engine), series in _series(rows).items():
        xs = [r["x"] for r in series]
        top = series[len(series) // 2:] if len(series) >= 4 else series
        out[f"{backend}/{engine}"] = {
            "forward": fit_exponent(xs, [r["forward_s"] for r in series]),
            "forward_backward": fit_exponent(xs, [r["forward_backward_s"] for r in series]),
            "forward_backward_upper": fit_exponent([r["x"] for r in top],
                                                   [r["forward_backward_s"] for r in top]),
            "alloc_peak": fit_exponent(xs, [r.get("alloc_peak_mib", 0) for r in series]),
            # against the input's weights (edges per graph): 1 = linear in the network's size
            # (for depth, x = L is not proportional to the weights: 2-32-1 has 96, each
            # further 32 x 32 layer adds 1,024)
            "forward_backward_weights": fit_exponent(
                [r.get("edges_per_graph", float("nan")) for r in top],
                [r["forward_backward_s"] for r in top]),
            "points": len(series)}
    return out


_LINESTYLE = {"dense": "-", "sparse": "--", "-": "-."}


def plot_sweep(name, rows, path):
    """Log-log PNG: forward time, forward+backward time and allocation peak against x, one line
    per backend/engine (colour: backend; line style: engine)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    panels = (("forward_s", 1e3, "forward (ms)"), ("forward_backward_s", 1e3,
              "forward + backward (ms)"), ("alloc_peak_mib", 1, "allocation peak, f+b (MiB)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    series = _series(rows)
    colours = _colours([b for b, _ in series])
    for (backend, engine), pts in series.items():
        label = backend if engine == "-" else f"{backend}/{engine}"
        for ax, (key, scale, _) in zip(axes, panels):
            ys = [r.get(key, float("nan")) * scale for r in pts]
            ax.plot([r["x"] for r in pts], ys, _LINESTYLE.get(engine, ":"), marker="o", ms=3,
                    color=colours[backend], label=label)
    xs = sorted({r["x"] for r in rows})
    for ax, (_, _, ylabel) in zip(axes, panels):
        ax.set(xscale="log", yscale="log", xlabel=SWEEPS[name].xlabel, ylabel=ylabel)
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*axes[1].get_legend_handles_labels(), loc="center left", fontsize=8,
               bbox_to_anchor=(0.885, 0.5))
    fig.suptitle(f"sweep: {name} ({SWEEPS[name].text})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _colours(backends):
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(backends))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {b: cmap(i % cmap.N) for i, b in enumerate(names)}


# -- Markdown ------------------------------------------------------------------------------------
def md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v, spec=".2f"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def sweep_markdown(name, rows, settings) -> str:
    """Forward+backward ms per point and the fitted exponents of one sweep."""
    xs = sorted({r["x"] for r in rows})
    exps = exponents(rows)
    cells = {(r["backend"], r["engine"], r["x"]): r for r in rows}
    body = []
    for key, e in exps.items():
        backend, engine = key.split("/", 1)
        vals = [cells.get((backend, engine, x), {}) for x in xs]
        body.append([backend, engine] + [
            "fail" if "error" in v or not v else _fmt(v["forward_backward_s"] * 1e3, ".1f")
            for v in vals] + [_fmt(e["forward"]), _fmt(e["forward_backward"]),
                              _fmt(e["forward_backward_upper"]),
                              _fmt(e.get("forward_backward_weights")), _fmt(e["alloc_peak"])])
    headers = ["backend", "engine"] + [f"{x:,}" for x in xs] + [
        "k fwd", "k f+b", "k f+b (upper half)", "k f+b vs weights (upper half)", "k alloc"]
    failures = sorted({f"{r['backend']}/{r['engine']}: {r['error']}" for r in rows
                       if "error" in r and not r["error"].startswith("skipped")})
    text = [f"### Sweep: {name}", "", f"{SWEEPS[name].text}; x = {SWEEPS[name].xlabel}. "
            f"{settings}. Cells: forward+backward ms. k: fitted growth exponent (time ~ x^k) "
            "over all points; upper half: over the larger half of the points, where fixed "
            "per-call costs matter least; vs weights: of time against the input network's number "
            "of weights (edges), over the same points (1 = linear in the network's size); "
            "k alloc: of the allocation peak of one forward+backward step.", "",
            md_table(headers, body)]
    if failures:
        text += ["", "Failed: " + "; ".join(failures)]
    return "\n".join(text)


def rows_markdown(rows) -> str:
    """The default table (one workload, every backend and engine) in Markdown."""
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["backend"], r["engine"], f"failed: {r['error']}"] + [""] * 6)
            continue
        body.append([r["backend"], r["engine"], f"{r['trainable']:,}",
                     _fmt(r["forward_s"] * 1e3, ".1f"), _fmt(r["forward_backward_s"] * 1e3, ".1f"),
                     _fmt(r["forward_backward_graphs_per_s"], ".0f"),
                     _fmt(r["peak_rss_mib"], ".0f"), _fmt(r.get("alloc_peak_mib"), ".1f"),
                     _fmt(r.get("achieved_gflops"), ".2f")])
    ratios = engine_ratios(rows)
    return md_table(["backend", "engine", "params", "fwd ms", "f+b ms", "graphs/s (f+b)",
                     "peak RSS MiB", "alloc peak MiB", "GFLOP/s (f+b)"], body) + (
        "\n\n" + "\n".join(f"- {line}" for line in ratios) if ratios else "")


# -- converters and data generation --------------------------------------------------------------
CONVERTER_CASES = ("mlp:784-512-512-10", "cnn_zoo", "resnet18")


def convert_case(workload, repeats=3) -> dict:
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
    x = example if example is not None else _example_input(model, workload)
    with torch.no_grad():
        exact = bool(torch.equal(back(x), model(x)))
    graph_bytes = sum(t.numel() * t.element_size() for _, t in graph if torch.is_tensor(t))
    return {"workload": workload, "params": params, "nodes": graph.num_nodes,
            "edges": graph.num_edges, "graph_mib": graph_bytes / 2**20, "to_graph_s": to_graph_s,
            "to_module_s": to_module_s, "round_trip_exact": exact, "peak_rss_mib": peak_rss_mib()}


def _example_input(model, workload):
    if workload == "cnn_zoo":
        return torch.randn(2, 1, 28, 28)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return torch.randn(4, first.in_features)


def siren_fit(batch=16, steps=20, size=28) -> dict:
    """SIREN fitting throughput of ``scalegmn.data.generate.fit_sirens`` (2-32-32-1 SIRENs, DWSNets
    convention, Adam): ``batch`` random ``size`` x ``size`` images fitted for ``steps`` steps at
    once; SIRENs/s at that many steps, optimiser steps x SIRENs per second, and the time per
    SIREN extrapolated to the data set's 200 steps (run in its own process)."""
    from .data.conventions import DWSNETS
    from .data.generate import fit_sirens
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


def run_converters(cases=CONVERTER_CASES, repeats=3, fit_batch=16, fit_steps=20, timeout=600,
                   max_mem_gib=None) -> dict:
    """``convert_case`` for each workload and ``siren_fit``, each in its own process."""
    rows = []
    for case in cases:
        row = isolated("convert_case", {"workload": case, "repeats": repeats}, timeout, max_mem_gib)
        rows.append({"workload": case, **row})
    fit = isolated("siren_fit", {"batch": fit_batch, "steps": fit_steps}, timeout, max_mem_gib)
    return {"converters": rows, "siren_fit": fit}


def converters_markdown(result) -> str:
    body = []
    for r in result["converters"]:
        if "error" in r:
            body.append([r["workload"], f"failed: {r['error']}"] + [""] * 6)
            continue
        body.append([r["workload"], f"{r['params']:,}", f"{r['nodes']:,}", f"{r['edges']:,}",
                     _fmt(r["to_graph_s"] * 1e3, ".1f"), _fmt(r["to_module_s"] * 1e3, ".1f"),
                     "yes" if r["round_trip_exact"] else "NO", _fmt(r["peak_rss_mib"], ".0f")])
    text = [md_table(["network", "params", "nodes", "edges", "to_graph ms", "to_module ms",
                      "exact round trip", "peak RSS MiB"], body), ""]
    f = result["siren_fit"]
    if "error" in f:
        text.append(f"SIREN fitting failed: {f['error']}")
    else:
        text.append(f"SIREN fitting (`fit_sirens`, 2-32-32-1, {f['image']} images, batch "
                    f"{f['batch']}, **{f['steps']} Adam steps**, {f['threads']} threads): "
                    f"{f['seconds']:.2f} s, **{f['sirens_per_s']:.1f} SIRENs/s** at "
                    f"{f['steps']} steps ({f['siren_steps_per_s']:.0f} SIREN-steps/s; "
                    f"{f['s_per_siren_200_steps']:.2f} s per SIREN at the data set's 200 steps, "
                    f"extrapolated linearly); peak RSS {f['peak_rss_mib']:.0f} MiB.")
    return "\n".join(text)


# -- efficiency ----------------------------------------------------------------------------------
def matmul_peak(n=2048, repeats=10, threads=None) -> dict:
    """This machine's float32 ``torch.mm`` throughput on ``n`` x ``n`` matrices: 2 n^3 FLOPs
    over the median time of ``repeats`` calls after warm-up (GFLOP/s)."""
    if threads:
        torch.set_num_threads(threads)
    device = _device()
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    seconds = time_call(lambda: torch.mm(a, b), repeats, device=device)
    return {"n": n, "seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9,
            "threads": torch.get_num_threads(), "device": device}


def run_efficiency(workload, batch, hidden, layers, repeats, threads=None, max_s=None,
                   timeout=600, max_mem_gib=None, n=2048, step=None) -> dict:
    """Matmul peak and the dense ScaleGMN forward+backward step's counted FLOPs over its
    measured time, each in its own process (``step``: that measurement if already made);
    ``fraction`` = achieved / peak."""
    peak = isolated("matmul_peak", {"n": n, "repeats": max(repeats, 5), "threads": threads},
                    timeout, max_mem_gib)
    if step is None:
        step = _measure_row("scalegmn", "dense", {
            "workload": workload, "batch_size": batch, "hidden": hidden, "layers": layers,
            "repeats": repeats, "threads": threads, "max_s": max_s}, timeout, max_mem_gib)
    out = {"matmul": peak, "scalegmn_dense": step}
    if "error" not in peak and "error" not in step:
        out["fraction"] = step["achieved_gflops"] / peak["gflops"]
    return out


def efficiency_markdown(eff) -> str:
    peak, step = eff["matmul"], eff["scalegmn_dense"]
    if "fraction" not in eff:
        return f"Efficiency measurement failed: {peak.get('error') or step.get('error')}"
    return (f"float32 `torch.mm` {peak['n']}x{peak['n']} ({peak['threads']} threads, "
            f"{peak['device']}): **{peak['gflops']:.1f} GFLOP/s** (the machine's matmul peak "
            f"here). Dense ScaleGMN forward+backward on {describe(step['workload'])} (batch "
            f"{step['batch']}, hidden {step['hidden']}, {step['layers']} layers): "
            f"{step['flops_forward_backward'] / 1e9:.2f} GFLOP counted by `FlopCounterMode` in "
            f"{step['forward_backward_s'] * 1e3:.1f} ms = **{step['achieved_gflops']:.2f} "
            f"GFLOP/s, {100 * eff['fraction']:.1f} % of the matmul peak**.")


# -- allocator -----------------------------------------------------------------------------------


def step_rusage(workload, batch_size, hidden, layers, steps=3, backend="scalegmn",
                engine="dense") -> dict:
    """Per forward+backward step after warm-up (run in its own process): wall, user and system
    CPU seconds and minor page faults (each first touch of memory the allocator got from the
    OS), under this process's allocator settings."""
    batch = _batch(workload, batch_size)
    net = _build(backend, engine, batch, hidden, layers)

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


def run_allocator_check(workload, batch, hidden, layers, timeout=600, max_mem_gib=None) -> dict:
    """``step_rusage`` with glibc malloc left alone, and with ``scalegmn.allocator``'s ``keep``
    and ``lean`` policies."""
    kwargs = {"workload": workload, "batch_size": batch, "hidden": hidden, "layers": layers}
    return {m: isolated("step_rusage", kwargs, timeout, max_mem_gib, env={"SCALEGMN_MALLOC": m})
            for m in ("default", "keep", "lean")}


def allocator_markdown(check) -> str:
    rows = []
    for name, r in check.items():
        if "error" in r:
            rows.append([name, f"failed: {r['error']}", "", "", "", "", ""])
            continue
        rows.append([name, r["allocator"], _fmt(r["wall_s"] * 1e3, ".0f"),
                     _fmt(r["user_s"] * 1e3, ".0f"), _fmt(r["sys_s"] * 1e3, ".0f"),
                     _fmt(r["page_faults"], ",.0f"), _fmt(r.get("peak_rss_mib"), ".0f")])
    r = next(iter(check.values()))
    head = (f"Dense ScaleGMN forward+backward, {describe(r.get('workload', '?'))}, batch "
            f"{r.get('batch', '?')}, hidden {r.get('hidden', '?')}, {r.get('layers', '?')} "
            "layers (the batch sweep's largest point); per step after warm-up. glibc malloc "
            "returns freed memory to the OS (blocks above its mmap threshold, adaptive but at "
            "most 32 MiB by default, are unmapped; the top of the heap is trimmed), so every "
            "step faults memory in again (system time); `keep` (`scalegmn.allocator`, what "
            "`scalegmn train` and this benchmark use unless told otherwise) serves every block "
            "from the heap and never trims it, so that the process keeps its memory; `lean` "
            "(what the memory-lean mode uses) maps every block of 64 KiB or more on its own and "
            "unmaps it on free: the least memory, the most page faults.")
    return head + "\n\n" + md_table(["malloc", "allocator", "wall ms", "user CPU ms",
                                      "system CPU ms", "page faults", "peak RSS MiB"],
                                     rows) + _keep_gain(check)


def _keep_gain(check):
    d, k = check.get("default", {}), check.get("keep", {})
    if "wall_s" not in d or "wall_s" not in k:
        return ""
    text = (f"\n\nHere `keep` makes the step {d['wall_s'] / k['wall_s']:.2f}x as fast; system "
            f"time is {100 * d['sys_s'] / (d['user_s'] + d['sys_s']):.0f} % of the default's CPU "
            "time.")
    if "edges" not in d:
        return text
    state_mib = d["edges"] * d["hidden"] * 4 / 2**20
    return text + (f" One float32 edge-state tensor of this batch ({d['edges']:,} edges x hidden "
            f"{d['hidden']}) is {state_mib:.1f} MiB; past 32 MiB glibc maps every such tensor "
            "anew and it is faulted in page by page, so without `keep` the largest points of "
            "the sweeps grow faster than linearly.")


# -- machine ---------------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model, cores, memory, torch version and threads of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")]
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
        info["memory_gib"] = round(_proc_kib("MemTotal", "/proc/meminfo") / 2**20, 1)
    except (OSError, TypeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_at_start"] = round(os.getloadavg()[0], 2)
    return info


def _cpu_capability():
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:       # noqa: BLE001  (older torch)
        return "unknown"


def _load_text(m):
    if "load_at_start" not in m:
        return ""
    text = f"; 1-minute load average {m['load_at_start']} at the start"
    if m["load_at_start"] > 0.5 * m["usable_cpus"]:
        text += " (other work was running: times are inflated and noisy)"
    if "load_at_end" in m:
        text += f", {m['load_at_end']} at the end (this run included)"
    return text


def machine_markdown(m) -> str:
    lines = [f"- CPU: {m['cpu']} (torch kernels: {m.get('cpu_capability', '?')}); "
             f"{m['logical_cpus']} logical CPUs, {m['usable_cpus']} usable by this process; "
             f"memory {m.get('memory_gib', '?')} GiB",
             f"- torch {m['torch']} ({m['torch_threads']} threads, OMP_WAIT_POLICY="
             f"{m.get('omp_wait_policy', '?')}), Python {m['python']}, {m['platform']}",
             f"- measured {m['date']}" + _load_text(m),
             f"- the whole run took {m['wall_s']:.0f} s" if "wall_s" in m else ""]
    if "gpu" in m:
        lines.insert(1, f"- GPU: {m['gpu']}")
    return "\n".join(line for line in lines if line)


# -- the report ------------------------------------------------------------------------------------
def write_report(results, md_path, img_dir, command) -> Path:
    """Markdown (``md_path``), JSON (next to the images) and one PNG per sweep (``img_dir``)."""
    md_path, img_dir = Path(md_path), Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    (img_dir / "bench.json").write_text(json.dumps(results, indent=1, default=str))
    text = ["# Benchmarks", "", f"Generated by `{command}`; every measurement in its own "
            "process (see `scalegmn/bench.py`). Times are medians after warm-up; machines are "
            "noisy, so compare within this page only.", "", "## Machine", "",
            machine_markdown(results["machine"])]
    if "failed_backends" in results and results["failed_backends"]:
        text += ["", "Backends left out (they do not build): " + "; ".join(
            f"{k}: {v}" for k, v in results["failed_backends"].items())]
    text += _report_sections(results, md_path, img_dir)
    md_path.write_text("\n".join(text) + "\n")
    return md_path


def _report_sections(results, md_path, img_dir) -> list:
    s = results["settings"]
    text = []
    if "table" in results:
        t = s["table"]
        text += ["", "## Backends and engines", "", f"{describe(t['workload'])}, batch "
                 f"{t['batch']}, hidden {t['hidden']}, {t['layers']} layers, up to {t['repeats']} "
                 "repeats. alloc peak: tensor memory of one forward+backward step above the "
                 "parameters and input (memory view); GFLOP/s: counted matmul FLOPs over the "
                 "measured time.", "", rows_markdown(results["table"])]
    if "paper" in results:
        text += ["", "## ScaleGMN at the published workloads", "",
                 paper_markdown(results["paper"])]
    if "efficiency" in results:
        text += ["", "## Efficiency", "", efficiency_markdown(results["efficiency"])]
    if "sweeps" in results:
        text += ["", "## Scaling sweeps", "", _exponent_summary(results["sweeps"])]
        for name, rows in results["sweeps"].items():
            png = img_dir / f"sweep_{name}.png"
            plot_sweep(name, rows, png)
            rel = os.path.relpath(png, md_path.parent)
            text += ["", sweep_markdown(name, rows, s["sweep"]), "", f"![sweep {name}]({rel})"]
    if "allocator" in results:
        text += ["", "## Memory allocator", "", allocator_markdown(results["allocator"])]
    if "converters" in results:
        text += ["", "## Converters and data generation", "",
                 converters_markdown(results["converters"])]
    return text


def _exponent_summary(sweeps) -> str:
    """One table: forward+backward growth exponent per backend/engine and sweep."""
    exps = {name: exponents(rows) for name, rows in sweeps.items()}
    keys = list(dict.fromkeys(k for e in exps.values() for k in e))
    body = [[k] + [_pair(exps[n].get(k, {})) for n in sweeps] for k in keys]
    return ("Growth exponent k of forward+backward time (time ~ x^k, least squares on log-log): "
            "all points of each sweep / the larger half of them. For width, k = 2 is linear in "
            "the number of weights; for edges, k = 1 is.\n\n"
            + md_table(["backend/engine"] + list(sweeps), body))


def _pair(e):
    nan = float("nan")
    return f"{_fmt(e.get('forward_backward', nan))} / {_fmt(e.get('forward_backward_upper', nan))}"


# -- command line ----------------------------------------------------------------------------------
# sizes and repeats of the default table and of the sweeps; --batch etc. override them
QUICK = {"batch": 8, "hidden": 16, "layers": 2, "repeats": 2, "max_s": 0.5}
FULL = {"batch": 128, "hidden": 128, "layers": 4, "repeats": 3, "max_s": 5.0}
DOCS = {"batch": 32, "hidden": 64, "layers": 4, "repeats": 3, "max_s": 5.0}   # ~15 min in all
SWEEP_QUICK = {"batch": 8, "hidden": 16, "layers": 2, "repeats": 1, "max_s": 0.5}
SWEEP_FULL = {"batch": 4, "hidden": 32, "layers": 2, "repeats": 3, "max_s": 1.5}


def _parser():
    import argparse
    p = argparse.ArgumentParser(prog="scalegmn bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--backends", nargs="+", default=None,
                   help="default: the registered ones of " + ", ".join(DEFAULT_BACKENDS))
    p.add_argument("--engines", nargs="+", default=["sparse", "dense"],
                   choices=["sparse", "dense", "lean", "reference"],
                   help="of scalegmn, scalegmn-b, gmn: lean = dense with checkpointing; reference "
                   "= a straightforward PyG scatter implementation (no fusions, no pruning, "
                   "glibc malloc default)")
    p.add_argument("--readout", choices=("last_layer", "full_graph"), default="last_layer",
                   help="of scalegmn, scalegmn-b, gmn (last_layer: the published MNIST-INR one)")
    p.add_argument("--workload", default="siren", help="siren, cnn_zoo or mlp:2-32-32-1")
    for k in ("batch", "hidden", "layers", "repeats"):
        p.add_argument(f"--{k}", type=int, default=None, help=_default_help(k))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sweep", nargs="+", choices=sorted(SWEEPS) + ["all"], default=None)
    p.add_argument("--converters", action="store_true", help="converter and SIREN-fitting times")
    p.add_argument("--efficiency", action="store_true", help="matmul peak and achieved FLOP/s")
    p.add_argument("--allocator", action="store_true",
                   help="page faults, system time and peak RSS per step with malloc default, "
                   "keep and lean")
    p.add_argument("--malloc", choices=("keep", "lean", "default"), default="keep",
                   help="malloc policy of the measuring processes (scalegmn.allocator; keep: as "
                   "scalegmn train; default: glibc left alone); the lean and reference engines "
                   "use lean and default")
    p.add_argument("--autocast", choices=("bfloat16", "float16"),
                   help="run the measured steps under torch.autocast with this dtype (on a GPU: "
                   "mixed precision; the rows say so)")
    p.add_argument("--paper", action="store_true",
                   help="ScaleGMN at the published workloads: MNIST-INR config (SIREN INRs, batch "
                   "128, hidden 128, 4 layers) with every engine, Small-CNN-Zoo CNNs at batch 64")
    p.add_argument("--docs", action="store_true",
                   help="everything, written to docs/benchmarks.md and docs/benchmarks/")
    p.add_argument("--quick", action="store_true", help="small sizes and repeats (~1 minute)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement "
                   "(default 300, 60 with --quick)")
    p.add_argument("--max-mem-gib", type=float, default=8.0,
                   help="address space a measurement may add (GiB; 0: no cap)")
    p.add_argument("--render", metavar="JSON", default=None, help="write the report (--out, "
                   "--docs) from a saved bench.json instead of measuring")
    p.add_argument("--out", default=None, help="a directory (Markdown, JSON, plots), or a .json "
                   "file for the rows of the default table")
    return p


def _default_help(k):
    text = (f"table: {FULL[k]} ({DOCS[k]} with --docs, {QUICK[k]} with --quick)")
    if k != "batch":
        text += f"; sweeps: {SWEEP_FULL[k]} ({SWEEP_QUICK[k]} with --quick)"
    return text


def _settings(args):
    table = dict(QUICK if args.quick else DOCS if args.docs else FULL)
    for k in ("batch", "hidden", "layers", "repeats"):
        if getattr(args, k) is not None:
            table[k] = getattr(args, k)
    sweep = dict(SWEEP_QUICK if args.quick else SWEEP_FULL)
    for k in ("hidden", "layers", "repeats"):
        if getattr(args, k) is not None:
            sweep[k] = getattr(args, k)
    return table, sweep


def _backends(args, results):
    if args.backends:
        return args.backends
    ok, failed = buildable(default_backends())
    results["failed_backends"] = failed
    return ok


def main(argv=None):
    global MALLOC, AUTOCAST
    args = _parser().parse_args(argv)
    MALLOC = args.malloc
    AUTOCAST = args.autocast or ""
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return 0
    if args.docs and args.out is None:
        args.out = "docs"
    if args.render:
        results = json.loads(Path(args.render).read_text())
        _finish(args, results, [])
        return 0
    sweeps = (sorted(SWEEPS, key=list(SWEEPS).index) if args.docs or "all" in (args.sweep or [])
              else args.sweep or [])
    do_conv, do_eff = args.converters or args.docs, args.efficiency or args.docs
    do_table = args.docs or not (sweeps or args.converters or args.efficiency or args.allocator
                                 or args.paper)
    t0 = time.perf_counter()
    results = collect(args, sweeps, do_table, do_conv, do_eff)
    results["machine"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if hasattr(os, "getloadavg"):
        results["machine"]["load_at_end"] = round(os.getloadavg()[0], 2)
    _finish(args, results, sys.argv[1:] if argv is None else list(argv))
    return 0


def collect(args, sweeps, do_table, do_conv, do_eff) -> dict:
    """Run the selected parts, printing as they finish; the results dict of ``write_report``."""
    table, sweep = _settings(args)
    _start_server()         # its imports overlap with the work below
    common = {"timeout": args.timeout or (60 if args.quick else 300),
              "max_mem_gib": args.max_mem_gib or None}
    results = {"machine": machine(), "settings": {"table": {**table, "workload": args.workload},
                                                  "malloc": MALLOC,
                                                  "sweep": _sweep_text(sweep),
                                                  "quick": args.quick}}
    backends = _backends(args, results) if (do_table or sweeps) else []
    if do_table:
        text, results["table"] = run(backends, args.engines, args.workload, table["batch"],
                                     table["hidden"], table["layers"], table["repeats"],
                                     args.threads, max_s=table["max_s"], readout=args.readout,
                                     **common)
        print(text, flush=True)
    if args.paper or args.docs:
        results["paper"] = run_paper(args.threads, quick=args.quick, **common)
    if do_eff:
        _collect_efficiency(args, table, results, common)
    if sweeps:
        results["sweeps"] = {name: _collect_sweep(name, args, backends, sweep, common)
                             for name in sweeps}
    if args.docs or args.allocator:
        big = (SWEEPS["batch"].quick_xs if args.quick else SWEEPS["batch"].xs)[-1]
        results["allocator"] = run_allocator_check(
            mlp_workload([2, 32, 32, 1]), big, sweep["hidden"], sweep["layers"], **common)
        print(allocator_markdown(results["allocator"]), flush=True)
    if do_conv:
        results["converters"] = run_converters(
            ("mlp:2-32-32-1", "cnn_zoo", "resnet18") if args.quick else CONVERTER_CASES,
            repeats=1 if args.quick else 3, fit_batch=8 if args.quick else 32,
            fit_steps=5 if args.quick else 50, **common)
        print(converters_markdown(results["converters"]), flush=True)
    return results


# the published workloads (issue 9): ScaleGMN's MNIST-INR classification config, every engine;
# Small-CNN-Zoo CNNs at batch 64
PAPER = [{"workload": "siren", "batch_size": 128, "hidden": 128, "layers": 4,
          "engines": ["sparse", "dense", "lean", "reference"]},
         {"workload": "cnn_zoo", "batch_size": 64, "hidden": 128, "layers": 4,
          "engines": ["sparse", "dense"]}]


def run_paper(threads=None, quick=False, timeout=600, max_mem_gib=None) -> list:
    """``run`` of ScaleGMN at each ``PAPER`` workload (readout last_layer), then the matmul peak
    (``matmul_peak``, in its own process) so the dense engine's fraction of it comes from the
    same run; with ``quick``, at batch 4 and hidden 16 (a smoke test of the same code)."""
    out = []
    peak = {}
    for case in PAPER:
        size = ({"batch_size": 4, "hidden": 16, "layers": 2} if quick else
                {k: case[k] for k in ("batch_size", "hidden", "layers")})
        text, rows = run(["scalegmn"], case["engines"], case["workload"], threads=threads,
                         repeats=1 if quick else 2, max_s=None if quick else 10.0,
                         timeout=timeout * (1 if quick else 3), max_mem_gib=max_mem_gib, **size)
        print(text, flush=True)
        if not peak:
            peak = isolated("matmul_peak", {"repeats": 3 if quick else 10, "threads": threads},
                            timeout, max_mem_gib)
        out.append({"workload": case["workload"], **size, "rows": rows,
                    "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "matmul_gflops": peak.get("gflops")})
    return out


def paper_markdown(paper) -> str:
    parts = ["ScaleGMN (readout `last_layer`, as the published MNIST-INR config) in one run. "
             "Engines: `sparse` (PyG gathers and `scatter`), `dense` (reshapes and batched "
             "matmuls), both with the fused `ScaleEq`, the pruned last layer and malloc `keep`; "
             "`lean`: dense with `checkpoint=True` (chunked recomputation) and malloc `lean`; "
             "`reference`: a straightforward PyG scatter implementation of the same model "
             "(sparse, textbook `ScaleEq`, every last-layer message, glibc malloc untouched)."]
    for case in paper:
        parts += ["", f"### {describe(case['workload'])}, batch {case['batch_size']}, hidden "
                      f"{case['hidden']}, {case['layers']} layers", "",
                  f"Measured {case.get('measured', '')}.", "", rows_markdown(case["rows"])]
        dense = [r for r in case["rows"] if r.get("engine") == "dense" and "achieved_gflops" in r]
        peak_gflops = case.get("matmul_gflops")
        if peak_gflops and dense:
            parts += ["", f"Dense: {dense[0]['achieved_gflops']:.1f} GFLOP/s = "
                          f"**{100 * dense[0]['achieved_gflops'] / peak_gflops:.0f} % of the "
                          f"float32 2048 x 2048 `torch.mm` peak** measured right after "
                          f"({peak_gflops:.1f} GFLOP/s)."]
    return "\n".join(parts)


def _sweep_text(sweep):
    return (f"Batch {sweep['batch']} (except the batch sweep), metanetwork hidden "
            f"{sweep['hidden']}, {sweep['layers']} layers, up to {sweep['repeats']} repeats")


def _collect_efficiency(args, table, results, common):
    done = [r for r in results.get("table", []) if (r["backend"], r["engine"]) ==
            ("scalegmn", "dense") and "error" not in r]
    results["efficiency"] = run_efficiency(
        args.workload, table["batch"], table["hidden"], table["layers"], table["repeats"],
        args.threads, table["max_s"], step=done[0] if done else None, **common)
    print(efficiency_markdown(results["efficiency"]), flush=True)


def _collect_sweep(name, args, backends, sweep, common):
    print(f"sweep {name}", flush=True)
    rows = run_sweep(name, backends, args.engines, sweep["batch"], sweep["hidden"],
                     sweep["layers"], sweep["repeats"], args.quick, sweep["max_s"],
                     threads=args.threads, log=lambda line: print(line, flush=True), **common)
    print(sweep_markdown(name, rows, _sweep_text(sweep)), flush=True)
    return rows


def _finish(args, results, argv):
    command = results.setdefault("command", " ".join(["scalegmn bench"] + [str(a) for a in argv]))
    if args.out and str(args.out).endswith(".json"):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results.get("table", results), indent=1,
                                             default=str))
    elif args.out and args.docs:
        out = Path(args.out)
        print("wrote", write_report(results, out / "benchmarks.md", out / "benchmarks", command))
    elif args.out:
        out = Path(args.out)
        print("wrote", write_report(results, out / "bench.md", out, command))


if __name__ == "__main__":
    sys.exit(main())
