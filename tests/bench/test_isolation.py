"""``scalegmn.bench.isolation``: measured functions named ``module:function`` run in their own
process; failures come back as rows, never as exceptions."""
import pytest
import torch

from scalegmn.bench import isolation
from scalegmn.bench.isolation import isolated, resolve, target_name
from scalegmn.bench.probes import machine, matmul_peak


def test_isolated_reports_failures_instead_of_raising():
    out = isolated("scalegmn.bench.measure:measure",
                   {"backend": "no-such-backend", "engine": "-", "workload": "mlp:2-4-1",
                    "batch_size": 2, "hidden": 4, "layers": 1, "repeats": 1, "threads": 1},
                   timeout=60)
    assert "error" in out and "no-such-backend" in out["error"]
    out = isolated(matmul_peak, {"n": 20000, "repeats": 50}, timeout=1)
    assert out == {"error": "timeout after 1 s"}
    assert isolated(machine, {}, timeout=60)["torch"] == torch.__version__


def test_targets_are_module_function_strings():
    assert target_name(machine) == "scalegmn.bench.probes:machine"
    assert resolve("scalegmn.bench.probes:machine") is machine
    for bad in ("machine", "a:b:c", ":machine", "scalegmn.bench.probes:"):
        with pytest.raises(ValueError, match="module:function"):
            target_name(bad)
    with pytest.raises(ValueError, match="top level"):
        target_name(lambda: {})
    with pytest.raises(ValueError, match="no_such_function"):
        resolve("scalegmn.bench.probes:no_such_function")
    # an unknown target is a failed row of the measuring process, naming it
    out = isolated("scalegmn.bench.probes:no_such_function", {}, timeout=60)
    assert "no_such_function" in out["error"]


def test_one_server_per_malloc_policy():
    assert isolation.server_env("lean")["SCALEGMN_MALLOC"] == "lean"
    assert isolation.server_env()["SCALEGMN_MALLOC"] == "keep"
    assert isolation.start_server("keep") is isolation.start_server("keep")
    assert isolation.start_server("keep") is not isolation.start_server("default")
    assert str(isolation.PACKAGES_DIR) == isolation.server_env()["PYTHONPATH"].split(":")[0]
    assert (isolation.PACKAGES_DIR / "scalegmn" / "bench" / "isolation.py").is_file()


def test_with_a_gpu_the_server_preloads_nothing_before_it_forks(monkeypatch):
    """A CUDA context made in the server before a fork is unusable in the measuring child (seen
    on an H200: every measurement failed with "CUDA error: initialization error"); with a GPU
    visible the server imports nothing and each child imports torch itself."""
    from scalegmn.bench import isolation
    monkeypatch.setattr(isolation, "_cuda_visible", lambda: False)
    assert isolation.server_env()["SCALEGMN_BENCH_PRELOAD"] == "1"
    assert isolated("scalegmn.bench.isolation:preloaded", {}, timeout=120)["torch"]
    monkeypatch.setattr(isolation, "_cuda_visible", lambda: True)
    assert isolation.server_env()["SCALEGMN_BENCH_PRELOAD"] == "0"
    out = isolated("scalegmn.bench.isolation:preloaded", {}, timeout=120)
    assert out["torch"] is False and out["scalegmn.gmn"] is False
    # and a real measurement still runs in such a server
    assert "error" not in isolated("scalegmn.bench.probes:machine", {}, timeout=120)


def test_no_address_space_cap_in_a_gpu_server(monkeypatch):
    """CUDA reserves tens of GiB of address space at start: under the cap every measurement on
    an H200 failed with host 'can't allocate memory' errors."""
    import resource
    from scalegmn.bench import isolation
    before = resource.getrlimit(resource.RLIMIT_AS)
    monkeypatch.setenv("SCALEGMN_BENCH_PRELOAD", "0")
    isolation.limit_memory(1.0)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    # a CPU server does cap (checked in a child process, so this one keeps its limit)
    out = isolated("scalegmn.bench.isolation:address_space_limit", {}, timeout=120,
                   max_mem_gib=1.0)
    assert out["soft"] != resource.RLIM_INFINITY
