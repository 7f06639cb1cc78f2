"""``scalegmn bench`` runs each measurement in its own process and reports them side by side."""
import json
import math
import random

import pytest
import torch

from scalegmn import allocator, bench
from scalegmn.bench import main, run

# the measuring processes apply scalegmn.allocator's "keep" (where glibc lets them)
KEEP = "glibc malloc keep" if allocator.glibc_version() else "malloc default"


def test_bench_tiny(tmp_path, capsys):
    table, rows = run(["scalegmn", "mlp"], ["sparse", "dense"], "cnn_zoo", 2, 8, 1, 1, 1,
                      tmp_path / "b.json")
    assert [(r["backend"], r["engine"]) for r in rows] == [("scalegmn", "sparse"),
                                                           ("scalegmn", "dense"), ("mlp", "-")]
    for r in rows:
        assert r["forward_s"] > 0 and r["forward_backward_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["trainable"] > 0
        assert r["alloc_peak_mib"] > 0 and r["allocator"] == KEEP   # what scalegmn train uses
        assert r["flops_forward_backward"] > 0
    assert json.loads((tmp_path / "b.json").read_text()) == rows
    assert "graphs/s" in table
    assert main(["--backends", "gmn", "--engines", "dense", "--workload", "siren", "--batch",
                 "2", "--hidden", "8", "--layers", "1", "--repeats", "1"]) == 0
    assert "gmn" in capsys.readouterr().out


def test_fit_exponent_recovers_known_exponents():
    rng = random.Random(0)
    xs = [8, 16, 32, 64, 128, 256]
    for k in (0.5, 1.0, 1.7, 2.0):
        ys = [3e-3 * x ** k * math.exp(rng.gauss(0, 0.02)) for x in xs]
        assert bench.fit_exponent(xs, ys) == pytest.approx(k, abs=0.05)
    assert bench.fit_exponent(xs, [2.0 * x ** 1.3 for x in xs]) == pytest.approx(1.3, abs=1e-9)
    assert math.isnan(bench.fit_exponent([8], [1.0]))
    assert math.isnan(bench.fit_exponent([8, 8], [1.0, 2.0]))
    # failed points (None, 0, NaN) are ignored, not fitted
    assert bench.fit_exponent(xs + [512], [x ** 2 for x in xs] + [float("nan")]) == \
        pytest.approx(2.0)


def test_exponents_per_backend_and_upper_half():
    rows = []
    for x in (8, 16, 32, 64):
        rows.append({"backend": "a", "engine": "-", "x": x, "forward_s": x * 1e-3,
                     "forward_backward_s": 1e-3 * x ** 2, "alloc_peak_mib": 0.5 * x})
        # b: flat at small x, linear at large x
        rows.append({"backend": "b", "engine": "dense", "x": x, "forward_s": 1.0,
                     "forward_backward_s": max(1.0, x / 16), "alloc_peak_mib": 1.0})
    rows.append({"backend": "c", "engine": "-", "x": 8, "error": "ValueError: no"})
    e = bench.exponents(rows)
    assert e["a/-"]["forward"] == pytest.approx(1) and e["a/-"]["forward_backward"] == \
        pytest.approx(2) and e["a/-"]["alloc_peak"] == pytest.approx(1)
    assert e["b/dense"]["forward_backward_upper"] == pytest.approx(1)
    assert e["b/dense"]["forward_backward"] < 0.9
    assert e["c/-"]["points"] == 0 and math.isnan(e["c/-"]["forward_backward"])


def test_memory_view_and_flop_count():
    kept = []
    view = bench.memory_view(lambda: kept.append(torch.ones(1 << 20)))     # 4 MiB, kept
    assert view["alloc_net_mib"] == pytest.approx(4, abs=0.1)
    assert view["alloc_peak_mib"] >= 4 - 0.1
    assert view["allocator"] in ("glibc malloc default", "malloc default")   # not applied here

    def transient():
        a = torch.ones(1 << 21)         # 8 MiB, freed inside the step
        return float(a.sum())
    view = bench.memory_view(transient)
    assert view["alloc_peak_mib"] >= 8 - 0.1 and abs(view["alloc_net_mib"]) < 0.1

    lin, x = torch.nn.Linear(64, 32), torch.randn(16, 64)
    flops = bench.count_flops(lambda: lin(x).sum().backward())
    assert flops == 2 * (2 * 16 * 64 * 32)     # forward, grad weight (x needs no grad)
    x.requires_grad_(True)
    assert bench.count_flops(lambda: lin(x).sum().backward()) == 3 * (2 * 16 * 64 * 32)


def test_isolated_reports_failures_instead_of_raising():
    out = bench.isolated("measure", {"backend": "no-such-backend", "engine": "-",
                                     "workload": "mlp:2-4-1", "batch_size": 2, "hidden": 4,
                                     "layers": 1, "repeats": 1, "threads": 1}, timeout=60)
    assert "error" in out and "no-such-backend" in out["error"]
    out = bench.isolated("matmul_peak", {"n": 20000, "repeats": 50}, timeout=1)
    assert out == {"error": "timeout after 1 s"}
    assert bench.isolated("machine", {}, timeout=60)["torch"] == torch.__version__


def test_tiny_sweep_writes_json_plot_and_table(tmp_path, monkeypatch, capsys):
    width = bench.SWEEPS["width"]
    monkeypatch.setitem(bench.SWEEPS, "width", bench.Sweep(
        "width", width.xs, (4, 8), width.xlabel, width.text))
    assert main(["--sweep", "width", "--quick", "--backends", "mlp", "scalegmn",
                 "no-such-backend", "--engines", "dense", "--hidden", "8", "--layers", "1",
                 "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["sweeps"]["width"]
    assert [(r["backend"], r["x"]) for r in rows] == [
        ("mlp", 4), ("mlp", 8), ("scalegmn", 4), ("scalegmn", 8), ("no-such-backend", 4),
        ("no-such-backend", 8)]
    assert all("error" in r for r in rows if r["backend"] == "no-such-backend")
    assert all(r["forward_backward_s"] > 0 for r in rows if r["backend"] != "no-such-backend")
    assert [r["edges_per_graph"] for r in rows[:2]] == [2 * 4 + 4 * 4 + 4, 2 * 8 + 8 * 8 + 8]
    png = (tmp_path / "sweep_width.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (tmp_path / "bench.md").read_text()
    assert "### Sweep: width" in md and "k f+b" in md and "sweep_width.png" in md
    assert "| scalegmn | dense |" in md and "no-such-backend" in md
    assert "## Machine" in md and torch.__version__ in md
    # the report can be rewritten from the saved measurements alone
    assert main(["--render", str(tmp_path / "bench.json"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "bench.md").read_text() == md


def test_edges_sweep_x_is_edges_per_graph():
    assert bench.sweep_point("edges", 8, 4) == ("mlp:2-8-8-8-1", 4, 2 * 8 + 8 * 8 * 2 + 8)
    assert bench.sweep_point("depth", 3, 4) == ("mlp:2-32-32-1", 4, 3)
    assert bench.sweep_point("batch", 64, 4)[1:] == (64, 64)


def test_default_backends_follow_the_documented_order():
    names = bench.default_backends()
    known = [b for b in names if b in bench.DEFAULT_BACKENDS]
    assert known == [b for b in bench.DEFAULT_BACKENDS if b in known]
    assert {"scalegmn", "scalegmn-b", "gmn", "mlp"} <= set(names)


def test_converter_bench_on_a_tiny_mlp():
    result = bench.run_converters(("mlp:2-8-1",), repeats=1, fit_batch=2, fit_steps=2,
                                  timeout=120)
    (row,) = result["converters"]
    assert row["params"] == 2 * 8 + 8 + 8 + 1 and row["edges"] == 2 * 8 + 8
    assert row["to_graph_s"] > 0 and row["to_module_s"] > 0 and row["round_trip_exact"]
    fit = result["siren_fit"]
    assert fit["steps"] == 2 and fit["sirens_per_s"] > 0
    assert fit["sirens_per_s"] == pytest.approx(fit["batch"] / fit["seconds"])
    md = bench.converters_markdown(result)
    assert "mlp:2-8-1" in md and "SIRENs/s" in md and "2 Adam steps" in md


def test_allocator_check_runs_each_malloc_setting_in_its_own_server():
    check = bench.run_allocator_check("mlp:2-8-1", 4, 8, 1, timeout=120)
    assert set(check) == {"default", "keep", "lean"}
    assert check["lean"]["allocator"].endswith(" lean") or not allocator.glibc_version()
    assert all(r["wall_s"] > 0 and r["page_faults"] >= 0 for r in check.values())
    assert check["keep"]["allocator"] == KEEP
    assert check["default"]["allocator"].endswith(" default")
    assert "page faults" in bench.allocator_markdown(check)


def test_memory_events_agree_with_key_averages():
    from torch.profiler import ProfilerActivity, profile
    lin = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    x = torch.randn(512, 64)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        lin(x).sum().backward()
    peak, net = bench.memory_from_events(prof)
    op_peak, op_net = bench.memory_from_averages(prof)
    assert net == op_net > 0                      # gradients stay allocated
    assert peak >= op_peak > 0 and peak >= 512 * 256 * 4    # the hidden activation is live


def test_engine_ratios_and_pseudo_engines():
    table, rows = run(["scalegmn"], ["dense", "lean", "reference"], "mlp:2-8-8-1", 2, 8, 2, 1, 1,
                      max_s=0.5)
    by = {r["engine"]: r for r in rows}
    assert set(by) == {"dense", "lean", "reference"} and all("error" not in r for r in rows)
    assert by["reference"]["allocator"].endswith(" default") and by["dense"]["allocator"] == KEEP
    assert by["lean"]["allocator"].endswith(" lean") or not allocator.glibc_version()
    # the same model in all three: the same parameter count
    assert len({r["trainable"] for r in rows}) == 1
    line = table.splitlines()[-1]
    assert line.startswith("scalegmn: against dense") and "reference" in line and "lean" in line
    assert "- scalegmn: against dense" in bench.rows_markdown(rows)


def test_depth_exponent_against_weights_sees_linear_cost():
    """Depth: weights grow as 1024 (L - 2) + 96, not as L; a cost linear in the weights fits
    k = 1 against them while the power-law fit against L reads steeper (a control)."""
    rows = [{"backend": "m", "engine": "-", "x": L, "edges_per_graph": 1024 * (L - 2) + 96,
             "forward_s": 1.0, "forward_backward_s": 1e-5 * (1024 * (L - 2) + 96),
             "alloc_peak_mib": 1.0} for L in (2, 3, 4, 6, 8, 12, 16, 24)]
    e = bench.exponents(rows)["m/-"]
    assert e["forward_backward_weights"] == pytest.approx(1.0)
    assert e["forward_backward_upper"] > 1.05


def test_paper_section_measures_every_engine_and_the_peak_in_one_run(monkeypatch):
    monkeypatch.setattr(bench, "PAPER", [{"workload": "mlp:2-8-8-1", "batch_size": 2,
                                          "hidden": 8, "layers": 2,
                                          "engines": ["dense", "reference"]}])
    paper = bench.run_paper(quick=True, timeout=120)
    (case,) = paper
    assert [r["engine"] for r in case["rows"]] == ["dense", "reference"]
    assert all("error" not in r for r in case["rows"]) and case["matmul_gflops"] > 0
    md = bench.paper_markdown(paper)
    assert "reference" in md and "% of the float32 2048 x 2048" in md and "Measured" in md


def test_autocast_rows_run_under_autocast(monkeypatch):
    """``--autocast`` reaches the measuring process: the step runs under torch.autocast (on the
    CPU with bfloat16 here) and the row says so; without it the row says None."""
    import scalegmn.bench as bench
    args = ("scalegmn", "dense", "mlp:2-8-1", 2, 8, 1, 1, 1)
    monkeypatch.setenv("SCALEGMN_AUTOCAST", "bfloat16")
    seen = []
    real = torch.autocast

    def spy(*a, **k):
        seen.append(k.get("dtype"))
        return real(*a, **k)
    monkeypatch.setattr(torch, "autocast", spy)
    row = bench.measure(*args, profile=False, flops=False)
    assert row["autocast"] == "bfloat16" and seen and set(seen) == {torch.bfloat16}
    monkeypatch.delenv("SCALEGMN_AUTOCAST")
    seen.clear()
    assert bench.measure(*args, profile=False, flops=False)["autocast"] is None and not seen
    monkeypatch.setattr(bench, "AUTOCAST", "bfloat16")
    assert bench.server_env()["SCALEGMN_AUTOCAST"] == "bfloat16"
