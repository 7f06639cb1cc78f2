"""One process per measurement: a fork server, resource limits, and ``isolated``.

A server process imports torch, converters and scalegmn once (``PRELOAD``) and runs
no torch computation itself. For each request it forks a measuring process, which resets its
peak RSS, caps its address space, runs the requested function and writes its result back as one
JSON object. The parent (``scalegmn bench``) talks to the server over a pipe, one JSON line per
request and answer. There is one server per environment: malloc is process-wide and set up by
the server before it forks (``scalegmn.allocator.apply``), so each malloc policy has its own.

A measured function is named by a ``"module:function"`` string (or given as the function
itself), imported in the measuring process with ``importlib``.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

#: the folder holding scalegmn/ and converters/ (a checkout or site-packages)
PACKAGES_DIR = Path(__file__).resolve().parents[2]
#: what the server imports before it forks
PRELOAD = ("torch", "torch_geometric", "torch.profiler", "torch.utils.flop_counter",
           "converters", "scalegmn", "scalegmn.gmn", "scalegmn.baselines", "scalegmn.nfn",
           "scalegmn.data.generate", "scalegmn.bench.measure")
_SERVERS: dict = {}

Target = Union[str, Callable[..., dict]]


# -- /proc -----------------------------------------------------------------------------------------
def proc_kib(field: str, path: str = "/proc/self/status") -> Optional[int]:
    """A ``kB`` field of a /proc file (``VmHWM``, ``VmSize``, ``MemTotal``, ...); None if
    absent."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def limit_memory(max_mem_gib: Optional[float]) -> None:
    """Cap the address space at what is mapped now plus ``max_mem_gib`` GiB (an allocation error
    instead of the machine's OOM killer); no cap for None or 0, nor in a GPU server
    (``SCALEGMN_BENCH_PRELOAD=0``): CUDA reserves tens of GiB of address space when it starts,
    which such a cap turns into host allocation failures (seen on an H200)."""
    if not max_mem_gib or os.environ.get("SCALEGMN_BENCH_PRELOAD") == "0":
        return
    import resource
    try:
        cap = proc_kib("VmSize") * 1024 + int(max_mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, TypeError):
        pass


# -- targets ---------------------------------------------------------------------------------------
def target_name(target: Target) -> str:
    """``"module:function"`` of ``target`` (a function defined at a module's top level, or that
    string, checked for its form). Raises ``ValueError`` naming anything else."""
    if callable(target):
        name = f"{target.__module__}:{target.__qualname__}"
        if "<" in name or "." in target.__qualname__:
            raise ValueError(f"a measured function must be defined at a module's top level, got "
                             f"{name}")
        return name
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"a measured function is named 'module:function', got {target!r}")
    return target


def resolve(target: str) -> Callable[..., dict]:
    """The function a ``"module:function"`` string names (its module imported)."""
    module, _, name = target_name(target).partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"{target!r}: module {module} has no function {name!r}")
    return fn


# -- the measuring process -------------------------------------------------------------------------
def call(request: dict) -> dict:
    """In the measuring process: the function ``request["target"]`` names, called with
    ``request["kwargs"]``; any exception becomes ``{"error": "Type: first line"}``."""
    reset_peak_rss()
    limit_memory(request.get("max_mem_gib"))
    try:
        return resolve(request["target"])(**request["kwargs"])
    except BaseException as e:      # noqa: BLE001  (every failure becomes a failed row)
        first = str(e).splitlines()[0] if str(e) else ""
        return {"error": f"{type(e).__name__}: {first}"[:300]}


def fork_one(request: dict) -> dict:
    """In the server: fork, run ``request`` in the child (``call``), wait up to its timeout;
    a timeout or a child that died without answering becomes ``{"error": ...}``."""
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                # the measuring process
        os.close(r)
        try:
            view = memoryview(json.dumps(call(request), default=str).encode())
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


def _read_until(fd: int, deadline: float) -> Optional[bytes]:
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


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


# -- the server ------------------------------------------------------------------------------------
def serve() -> None:
    """The server: import ``PRELOAD`` once, apply the malloc policy ``SCALEGMN_MALLOC``, then fork
    one process per request line (JSON on stdin), answering one JSON line each on the original
    stdout. Runs no torch computation itself (a forked child then starts its own thread
    pools)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                               # stray prints go to stderr, not the protocol
    # with a GPU the server imports nothing: a CUDA context made (by any import) before a fork
    # is unusable in the child ("CUDA error: initialization error"); each child imports its own
    preload = PRELOAD if os.environ.get("SCALEGMN_BENCH_PRELOAD", "1") != "0" else ()
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from scalegmn import allocator
    allocator.apply(os.environ.get("SCALEGMN_MALLOC", "keep"))   # inherited by every fork
    for line in sys.stdin:
        proto.write(json.dumps(fork_one(json.loads(line))) + "\n")
        proto.flush()


def server_env(malloc: str = "keep", extra: Optional[dict] = None) -> dict:
    """Environment of a server and its measuring processes: the folder holding these packages
    (``PACKAGES_DIR``) first on ``PYTHONPATH``, ``OMP_WAIT_POLICY=PASSIVE`` unless set (spinning
    OpenMP threads slow small steps down many times over when the machine has other work; see
    docs/performance.md), ``SCALEGMN_MALLOC=malloc`` (the server applies
    ``scalegmn.allocator.apply`` with it, as ``scalegmn train`` does) and
    ``SCALEGMN_BENCH_PRELOAD`` (``0`` when a CUDA device is visible: the server then imports
    nothing before it forks). ``extra`` is added last."""
    paths = [str(PACKAGES_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                   if p]
    gpu = _cuda_visible()
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": os.pathsep.join(paths),
            "SCALEGMN_MALLOC": malloc, "SCALEGMN_BENCH_PRELOAD": "0" if gpu else "1",
            **(extra or {})}


def _cuda_visible() -> bool:
    """Whether this process sees a CUDA device (then the server preloads nothing)."""
    import torch
    return torch.cuda.is_available()


def address_space_limit() -> dict:
    """A measuring target: this process's address-space limit (``RLIMIT_AS``)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    return {"soft": soft, "hard": hard}


def preloaded() -> dict:
    """A measuring target: which heavy modules the process had before it ran (a check of the
    server's preload policy)."""
    return {"torch": "torch" in sys.modules, "scalegmn.gmn": "scalegmn.gmn" in sys.modules}


class Server:
    """A ``serve()`` subprocess with environment ``env``; ``ask`` sends one request and waits
    for its answer."""

    def __init__(self, env: dict):
        import subprocess
        import tempfile
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from scalegmn.bench.isolation import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)

    def ask(self, request: dict) -> dict:
        """Send ``request`` (``target``, ``kwargs``, ``timeout``, ``max_mem_gib``); its answer.
        Raises ``RuntimeError`` with the server's stderr if the server has exited."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server exited: " + self._log_tail())
        return json.loads(line)

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        """End the server (it exits when its stdin closes) and close its files."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout, self.log):
            if not f.closed:
                f.close()


def start_server(malloc: str = "keep", extra: Optional[dict] = None) -> Server:
    """The running server for this environment (``server_env``); started in the background
    (its imports overlap with the caller's work) if there is none."""
    env = server_env(malloc, extra)
    key = tuple(sorted(env.items()))            # a server per complete environment
    server = _SERVERS.get(key)
    if server is None or server.proc.poll() is not None:
        import atexit
        server = _SERVERS[key] = Server(env)
        atexit.register(server.close)
    return server


def isolated(target: Target, kwargs: dict, *, timeout: float = 600,
             max_mem_gib: Optional[float] = None, malloc: str = "keep",
             env: Optional[dict] = None) -> dict:
    """Run ``target(**kwargs)`` in a fresh process forked from a server that has imported torch,
    converters and scalegmn and applied malloc policy ``malloc`` (one server per environment;
    ``env``: extra environment variables).

    Args:
        target: ``"module:function"`` or a top-level function; it returns a JSON-able dict.
        kwargs: its keyword arguments (JSON-able).
        timeout: seconds before the process is killed.
        max_mem_gib: address space the process may add (GiB; None: no cap).

    Returns:
        The function's dict, or ``{"error": ...}`` if it raised, died, or ran past ``timeout``.
    """
    return start_server(malloc, env).ask({"target": target_name(target), "kwargs": kwargs,
                                          "timeout": timeout, "max_mem_gib": max_mem_gib})
