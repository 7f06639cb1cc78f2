"""``scalegmn.bench.suites``: each suite measures in separate processes and returns rows."""
import pytest

from scalegmn import allocator
from scalegmn.bench import report, suites
from scalegmn.bench.settings import BenchSettings, Size

# the measuring processes apply scalegmn.allocator's "keep" (where glibc lets them)
KEEP = "glibc malloc keep" if allocator.glibc_version() else "malloc default"


def tiny(**kw):
    return BenchSettings(table=Size(batch=2, hidden=8, layers=1, repeats=1, max_s=None),
                         threads=1, timeout=120, **kw)


def test_table_tiny():
    rows = suites.table(tiny(workload="cnn_zoo"), ["scalegmn", "mlp"])
    assert [(r["backend"], r["engine"]) for r in rows] == [("scalegmn", "sparse"),
                                                           ("scalegmn", "dense"), ("mlp", "-")]
    for r in rows:
        assert r["forward_s"] > 0 and r["forward_backward_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["trainable"] > 0
        assert r["alloc_peak_mib"] > 0 and r["allocator"] == KEEP   # what scalegmn train uses
        assert r["flops_forward_backward"] > 0
    assert "graphs/s" in report.format_table(rows, "cnn_zoo")


def test_edges_sweep_x_is_edges_per_graph():
    assert suites.sweep_point("edges", 8, 4) == ("mlp:2-8-8-8-1", 4, 2 * 8 + 8 * 8 * 2 + 8)
    assert suites.sweep_point("depth", 3, 4) == ("mlp:2-32-32-1", 4, 3)
    assert suites.sweep_point("batch", 64, 4)[1:] == (64, 64)
    with pytest.raises(ValueError, match="'height'"):
        suites.sweep_point("height", 8, 4)


def test_converter_bench_on_a_tiny_mlp():
    result = suites.run_converters(tiny(), cases=("mlp:2-8-1",), repeats=1, fit_batch=2,
                                   fit_steps=2)
    (row,) = result["converters"]
    assert row["params"] == 2 * 8 + 8 + 8 + 1 and row["edges"] == 2 * 8 + 8
    assert row["to_graph_s"] > 0 and row["to_module_s"] > 0 and row["round_trip_exact"]
    fit = result["siren_fit"]
    assert fit["steps"] == 2 and fit["sirens_per_s"] > 0
    assert fit["sirens_per_s"] == pytest.approx(fit["batch"] / fit["seconds"])
    md = report.converters_markdown(result)
    assert "mlp:2-8-1" in md and "SIRENs/s" in md and "2 Adam steps" in md


def test_allocator_check_runs_each_malloc_setting_in_its_own_server():
    check = suites.run_allocator_check(tiny(), workload="mlp:2-8-1", batch_size=4, hidden=8,
                                       layers=1)
    assert set(check) == {"default", "keep", "lean"}
    assert check["lean"]["allocator"].endswith(" lean") or not allocator.glibc_version()
    assert all(r["wall_s"] > 0 and r["page_faults"] >= 0 for r in check.values())
    assert check["keep"]["allocator"] == KEEP
    assert check["default"]["allocator"].endswith(" default")
    assert "page faults" in report.allocator_markdown(check)


def test_engine_ratios_and_pseudo_engines():
    settings = BenchSettings(workload="mlp:2-8-8-1", engines=("dense", "lean", "reference"),
                             table=Size(2, 8, 2, 1, 0.5), threads=1, timeout=120)
    rows = suites.table(settings, ["scalegmn"])
    by = {r["engine"]: r for r in rows}
    assert set(by) == {"dense", "lean", "reference"} and all("error" not in r for r in rows)
    assert by["reference"]["allocator"].endswith(" default") and by["dense"]["allocator"] == KEEP
    assert by["lean"]["allocator"].endswith(" lean") or not allocator.glibc_version()
    # the same model in all three: the same parameter count
    assert len({r["trainable"] for r in rows}) == 1
    line = report.format_table(rows, "t").splitlines()[-1]
    assert line.startswith("scalegmn: against dense") and "reference" in line and "lean" in line
    assert "- scalegmn: against dense" in report.rows_markdown(rows)


def test_paper_section_measures_every_engine_and_the_peak_in_one_run():
    cases = [{"workload": "mlp:2-8-8-1", "batch_size": 2, "hidden": 8, "layers": 2,
              "engines": ["dense", "reference"]}]
    seen = []
    paper = suites.run_paper(tiny(quick=True), cases=cases, log=seen.append)
    (case,) = paper
    assert seen == paper
    assert [r["engine"] for r in case["rows"]] == ["dense", "reference"]
    assert all("error" not in r for r in case["rows"]) and case["matmul_gflops"] > 0
    md = report.paper_markdown(paper)
    assert "reference" in md and "% of the float32 2048 x 2048" in md and "Measured" in md
