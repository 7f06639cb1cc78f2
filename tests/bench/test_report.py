"""``scalegmn.bench.report``: exponent fits, text and Markdown of rows, the page."""
import json
import math
import random
from pathlib import Path

import pytest

from scalegmn.bench import report

ROOT = Path(__file__).resolve().parents[2]


def test_fit_exponent_recovers_known_exponents():
    rng = random.Random(0)
    xs = [8, 16, 32, 64, 128, 256]
    for k in (0.5, 1.0, 1.7, 2.0):
        ys = [3e-3 * x ** k * math.exp(rng.gauss(0, 0.02)) for x in xs]
        assert report.fit_exponent(xs, ys) == pytest.approx(k, abs=0.05)
    assert report.fit_exponent(xs, [2.0 * x ** 1.3 for x in xs]) == pytest.approx(1.3, abs=1e-9)
    assert math.isnan(report.fit_exponent([8], [1.0]))
    assert math.isnan(report.fit_exponent([8, 8], [1.0, 2.0]))
    # failed points (None, 0, NaN) are ignored, not fitted
    assert report.fit_exponent(xs + [512], [x ** 2 for x in xs] + [float("nan")]) == \
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
    e = report.exponents(rows)
    assert e["a/-"]["forward"] == pytest.approx(1) and e["a/-"]["forward_backward"] == \
        pytest.approx(2) and e["a/-"]["alloc_peak"] == pytest.approx(1)
    assert e["b/dense"]["forward_backward_upper"] == pytest.approx(1)
    assert e["b/dense"]["forward_backward"] < 0.9
    assert e["c/-"]["points"] == 0 and math.isnan(e["c/-"]["forward_backward"])


def test_depth_exponent_against_weights_sees_linear_cost():
    """Depth: weights grow as 1024 (L - 2) + 96, not as L; a cost linear in the weights fits
    k = 1 against them while the power-law fit against L reads steeper (a control)."""
    rows = [{"backend": "m", "engine": "-", "x": L, "edges_per_graph": 1024 * (L - 2) + 96,
             "forward_s": 1.0, "forward_backward_s": 1e-5 * (1024 * (L - 2) + 96),
             "alloc_peak_mib": 1.0} for L in (2, 3, 4, 6, 8, 12, 16, 24)]
    e = report.exponents(rows)["m/-"]
    assert e["forward_backward_weights"] == pytest.approx(1.0)
    assert e["forward_backward_upper"] > 1.05


def _row(engine, fb, rss):
    return {"backend": "scalegmn", "engine": engine, "trainable": 10, "forward_s": fb / 2,
            "forward_backward_s": fb, "forward_backward_graphs_per_s": 2 / fb,
            "peak_rss_mib": rss}


def test_engine_ratios_are_against_dense():
    rows = [_row("dense", 1.0, 100.0), _row("sparse", 1.5, 120.0), _row("lean", 4.0, 25.0),
            {"backend": "scalegmn", "engine": "reference", "error": "ValueError: x"}]
    (line,) = report.engine_ratios(rows)
    assert line == ("scalegmn: against dense (forward+backward): sparse 1.50x the time, "
                    "1.20x the peak RSS; lean 4.00x the time, 0.25x the peak RSS")
    assert report.engine_ratios(rows[1:]) == []          # no dense row: no ratio
    text = report.format_table(rows, "title")
    assert text.splitlines()[0] == "title" and "failed: ValueError: x" in text
    assert text.splitlines()[-1] == line
    assert "- " + line in report.rows_markdown(rows)


def test_render_reproduces_the_docs_page(tmp_path):
    """The shipped docs/benchmarks.md is what the report makes of its bench.json (--render),
    byte for byte, and so are the plots."""
    results = json.loads((ROOT / "docs" / "benchmarks" / "bench.json").read_text())
    md = report.write_report(results, tmp_path / "benchmarks.md", tmp_path / "benchmarks",
                             results["command"])
    assert md.read_text() == (ROOT / "docs" / "benchmarks.md").read_text()
    for png in (ROOT / "docs" / "benchmarks").glob("*.png"):
        assert (tmp_path / "benchmarks" / png.name).read_bytes() == png.read_bytes(), png.name
