"""``scalegmn bench`` (and ``python -m scalegmn.bench``): options -> settings -> suites ->
report, with the same options and outputs as before the package split."""
import json
import subprocess
import sys

import pytest
import torch

from scalegmn.bench import cli, suites
from scalegmn.bench.settings import QUICK, Size


def test_tiny_sweep_writes_json_plot_and_table(tmp_path, monkeypatch):
    width = suites.SWEEPS["width"]
    monkeypatch.setitem(suites.SWEEPS, "width", suites.Sweep(
        "width", width.xs, (4, 8), width.xlabel, width.text))
    assert cli.main(["--sweep", "width", "--quick", "--backends", "mlp", "scalegmn",
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
    assert cli.main(["--render", str(tmp_path / "bench.json"), "--out",
                     str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "bench.md").read_text() == md


def test_default_table_prints_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["--backends", "gmn", "--engines", "dense", "--workload", "siren", "--batch",
                     "2", "--hidden", "8", "--layers", "1", "--repeats", "1", "--out",
                     str(out)]) == 0
    text = capsys.readouterr().out
    assert "gmn" in text and "graphs/s" in text
    (row,) = json.loads(out.read_text())
    assert (row["backend"], row["engine"], row["workload"], row["batch"]) == \
        ("gmn", "dense", "siren", 2)


def test_options_become_settings_and_parts():
    settings, parts = cli.plan(cli.parser().parse_args(["--quick", "--hidden", "32"]))
    assert settings.table == QUICK.override(hidden=32) and settings.sweep.hidden == 32
    assert settings.timeout == 60 and parts.table and not parts.efficiency
    settings, parts = cli.plan(cli.parser().parse_args(
        ["--sweep", "all", "--malloc", "lean", "--autocast", "bfloat16", "--max-mem-gib", "0"]))
    assert parts.sweeps == tuple(suites.SWEEPS) and not parts.table
    assert (settings.malloc, settings.autocast, settings.max_mem_gib) == ("lean", "bfloat16",
                                                                          None)
    _, parts = cli.plan(cli.parser().parse_args(["--docs"]))
    assert parts.table and parts.paper and parts.efficiency and parts.allocator and \
        parts.converters and parts.sweeps == tuple(suites.SWEEPS)


def test_engine_speed_preset_and_overrides():
    settings, parts = cli.plan(cli.parser().parse_args(["--preset", "engine-speed"]))
    assert settings.backends == ("scalegmn",) and settings.engines == ("sparse", "dense")
    assert settings.workload == "siren" and settings.table == Size(128, 128, 4, 5, None)
    assert parts.table and parts.efficiency and not parts.profile and not parts.sweeps
    settings, parts = cli.plan(cli.parser().parse_args(
        ["--preset", "engine-speed", "--batch", "32", "--engines", "dense", "lean",
         "--no-prune", "--profile"]))
    assert settings.table.batch == 32 and settings.table.hidden == 128
    assert settings.engines == ("dense", "lean") and not settings.prune_last_layer
    assert parts.profile


def test_engine_speed_preset_runs(capsys):
    assert cli.main(["--preset", "engine-speed", "--batch", "2", "--hidden", "8", "--layers",
                     "1", "--repeats", "1", "--profile", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "scalegmn      sparse" in text and "scalegmn      dense" in text
    assert "scalegmn: against dense (forward+backward): sparse" in text
    assert "% of the matmul peak" in text
    assert "--- scalegmn/sparse" in text and "--- scalegmn/dense" in text and "aten::" in text


def test_one_measures_in_this_process(capsys):
    assert cli.main(["--one", json.dumps(["mlp", "-", "mlp:2-8-1", 2, 8, 1, 1, 1])]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["backend"], row["batch"]) == ("mlp", 2) and row["forward_s"] > 0


def test_entry_points(tmp_path):
    """``scalegmn bench`` goes to this parser; ``python -m scalegmn.bench`` runs it."""
    from scalegmn.cli import main as scalegmn_main
    with pytest.raises(SystemExit) as e:
        scalegmn_main(["bench", "--help"])
    assert e.value.code == 0
    rows = [{"backend": "mlp", "engine": "-", "error": "ValueError: x"}]
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"machine": {"cpu": "c", "logical_cpus": 2, "usable_cpus": 2,
                                             "torch": "t", "torch_threads": 2, "python": "p",
                                             "platform": "x", "date": "d"},
                                 "settings": {"table": {"workload": "siren", "batch": 2,
                                                        "hidden": 8, "layers": 1,
                                                        "repeats": 1}},
                                 "table": rows}))
    run = subprocess.run([sys.executable, "-m", "scalegmn.bench", "--render", str(saved),
                          "--out", str(tmp_path / "page")], capture_output=True, text=True,
                         env={**__import__("os").environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert run.returncode == 0, run.stderr
    assert "| mlp | - | failed: ValueError: x |" in (tmp_path / "page" / "bench.md").read_text()
