"""``scalegmn benchmark``: the tiny suite end to end in a tmp dir (data made, runs trained, the
results page written), an interrupted run resumed, finished runs skipped; suite definitions."""
import json
from pathlib import Path

import pytest

from scalegmn.benchmark import get_suite, runner, suites
from scalegmn.benchmark.data import ensure


def _run(tmp, log):
    return runner.run_suite("tiny", tmp / "runs", data_dir=tmp / "data",
                            results=tmp / "docs" / "results.md", log=log.append,
                            progress=False, keep_going=False)


def test_tiny_suite_end_to_end_with_resume_and_skip(tmp_path, monkeypatch):
    import scalegmn.train.loop as loop
    runs = get_suite("tiny")
    assert [r.backend for r in runs] == ["scalegmn", "mlp"]
    first, second = (tmp_path / "runs" / r.name for r in runs)
    # 1. the second run is killed right after its first checkpoint (as by Ctrl-C / a kill)
    real_save = loop.atomic_save

    def killing_save(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pt" and second in Path(path).parents:
            raise KeyboardInterrupt
    monkeypatch.setattr(loop, "atomic_save", killing_save)
    log = []
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, log)
    assert runner.state(first) == "finished" and runner.state(second) == "interrupted"
    assert (tmp_path / "data" / "mnist-inrs-16" / "mnist_splits.json").is_file()
    stamp = (first / "summary.json").stat().st_mtime_ns
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "1 of 2 runs finished" in page and "`mnist_inr/mlp/seed0` (interrupted)" in page
    # 2. the rerun skips the finished run and resumes the interrupted one from its checkpoint
    monkeypatch.setattr(loop, "atomic_save", real_save)
    log = []
    assert _run(tmp_path, log) == 0
    text = "\n".join(log)
    assert "mnist_inr/scalegmn/seed0: finished before, skipped" in text
    assert "mnist_inr/mlp/seed0: resuming" in text and "resumed from epoch 1" in text
    assert "making data set" not in text                      # cached
    assert (first / "summary.json").stat().st_mtime_ns == stamp
    info = json.loads((second / "benchmark.json").read_text())
    assert info["finished"] and len(info["sessions"]) == 2 and info["sessions"][1]["resumed"]
    assert "killed" in info["sessions"][0]["end"] and info["wall_s"] > 0
    for d in (first, second):     # ordinary run directories, plus robustness
        for f in ("config.yaml", "metrics.jsonl", "summary.json", "robustness.json",
                  "checkpoints/best.pt"):
            assert (d / f).is_file(), (d, f)
        rob = json.loads((d / "robustness.json").read_text())
        assert set(rob) == {"none", "perm", "perm+sign"}
    # 3. the page: both rows with n, published numbers and their source, robustness, times
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "2 of 2 runs finished" in page and "1 seed(s) per backend" in page
    rows = {ln.split("|")[1].strip(): ln for ln in page.splitlines()
            if ln.startswith("| `") and "1/1" in ln}
    assert set(rows) == {"`scalegmn`", "`mlp`"}
    summ = json.loads((first / "summary.json").read_text())
    acc = 100 * summ["test"]["accuracy"]
    cells = [c.strip() for c in rows["`scalegmn`"].split("|")]
    assert cells[2] == f"{acc:.1f}" and cells[4] == "96.57 [1]" and cells[7].endswith("min")
    assert "Scale Equivariant Graph Metanetworks" in page and "research" + "/" not in page
    assert (tmp_path / "docs" / "results" / "mnist_inr_curves.png").stat().st_size > 1000
    assert "](results/mnist_inr_curves.png)" in page
    # 3b. the share of test networks whose prediction the actions change: none for ScaleGMN
    changes = {d: json.loads((d / "prediction_changes.json").read_text()) for d in (first, second)}
    assert changes[first] == {"perm": 0.0, "perm+sign": 0.0}
    section = page[page.index("## Test networks whose prediction"):page.index("## Runs")]
    assert next(ln for ln in section.splitlines() if ln.startswith("| `scalegmn`")) \
        == "| `scalegmn` | 0.0 | 0.0 |"
    # 4. a third call trains nothing, and measures the changes of a run finished without them
    (second / "prediction_changes.json").unlink()
    monkeypatch.setattr(loop.Runner, "fit", lambda self: pytest.fail("trained again"))
    log = []
    assert _run(tmp_path, log) == 0
    assert sum("skipped" in ln for ln in log) == 2
    assert json.loads((second / "prediction_changes.json").read_text()) == changes[second]
    assert sum("prediction changes under random group actions" in ln for ln in log) == 1


def test_dry_run_and_only(tmp_path, capsys):
    from scalegmn.cli import main
    assert main(["benchmark", "--suite", "cpu", "--out", str(tmp_path / "runs"), "--dry-run",
                 "--data-dir", str(tmp_path / "data"), "--only", "mnist_inr/*/seed0"]) == 0
    out = capsys.readouterr().out
    assert "mnist_inr/scalegmn-published-style/seed0" in out and "seed1" not in out
    assert "CPU-hours" in out and "to be made" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
    with pytest.raises(SystemExit, match="matches no run"):
        main(["benchmark", "--suite", "cpu", "--out", str(tmp_path), "--only", "nothing*"])


def test_suites_are_valid_and_sized():
    cpu = get_suite("cpu")
    names = [r.name for r in cpu]
    assert len(names) == len(set(names))
    for r in cpu + get_suite("paper"):     # every run's config loads and validates
        runner.run_config(r)
    backends = {t: {r.backend for r in cpu if r.task == t} for t in suites.TASKS}
    assert backends["mnist_inr"] == set(suites.INR_BACKENDS) | {suites.PUBLISHED_STYLE}
    assert backends["zoo_relu"] == set(suites.ZOO_BACKENDS) | {suites.DIVISION_FREE}
    assert backends["zoo_tanh"] == set(suites.ZOO_BACKENDS)
    assert "statnn" not in backends["mnist_inr"] | backends["fmnist_inr"]
    seeds = {(r.task, r.backend): set() for r in cpu}
    for r in cpu:
        seeds[(r.task, r.backend)].add(r.seed)
    assert all(len(s) == 3 for (t, _), s in seeds.items()        # every classification and
               if t in ("mnist_inr", "fmnist_inr", "zoo_relu", "zoo_tanh"))   # generalisation row
    est = suites.estimate(cpu)
    assert all(v for v in est["runs"].values())          # every run has a measured cost
    assert 2.5 * 3600 < est["total"] / 1.7 < 4 * 3600     # about 3 hours on 2 cores
    assert suites.FMNIST_10000.n >= 10000 and suites.ZOO_1024.n >= 1024
    assert suites.MNIST_5000.n == 5000


def test_missing_fashion_mnist_names_the_package(tmp_path, monkeypatch):
    from scalegmn.data import images
    monkeypatch.setattr(images, "FASHION_DIR", tmp_path / "nowhere")
    spec = suites.DataSpec("f", "fmnist-inrs", "dwsnets-fmnist", n=10)
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        ensure(spec, tmp_path)
    with pytest.raises(ValueError, match="put the published"):
        ensure(suites.MNIST_PUBLISHED, tmp_path)


def test_the_page_states_the_editing_reference_level(tmp_path):
    # editing runs record the test MSE of the unedited networks; the page prints it under the
    # task's table (the "no edit" level, as chance is for accuracy)
    from scalegmn.benchmark.results import render
    runs = [r for r in get_suite("cpu") if r.task == "mnist_edit"][:2]
    for i, r in enumerate(runs):
        d = tmp_path / "runs" / r.name
        d.mkdir(parents=True)
        (d / "benchmark.json").write_text(json.dumps({"finished": True, "wall_s": 60.0,
                                                      "cpu_s": 50.0}))
        (d / "summary.json").write_text(json.dumps({
            "test": {"mse": 0.05 + 0.01 * i}, "parameters": 10,
            "reference": {"name": "unedited", "test": {"mse": 0.0792}}}))
    page = render(runs, tmp_path / "runs", tmp_path / "results.md", suite="cpu")
    assert "Reference: the unedited networks score 7.92 x1e-2" in page
    (tmp_path / "runs" / runs[0].name / "summary.json").write_text(json.dumps(
        {"test": {"mse": 0.05}, "parameters": 10}))
    (tmp_path / "runs" / runs[1].name / "summary.json").write_text(json.dumps(
        {"test": {"mse": 0.06}, "parameters": 10}))
    assert "Reference:" not in render(runs, tmp_path / "runs", tmp_path / "results.md",
                                      suite="cpu")


def test_the_readme_quotes_the_overview_between_its_markers(tmp_path):
    from scalegmn.benchmark.results import QUOTE_END, QUOTE_START, quote_overview
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("# Benchmark results (cpu suite)\n\nWritten by `scalegmn benchmark` on "
                    "2026-12-01 04:00 UTC (x86_64); **40 of 105 runs finished**, the others "
                    "...\n\n## Overview\n\n| backend | A (%) |\n|---|---|\n"
                    "| `scalegmn` | 33.4 ± 2.0 (n=3) |\n\n## A\n\n| other | table |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{QUOTE_START}\nold numbers\n{QUOTE_END}\nafter\n")
    assert quote_overview(page, readme)
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| `scalegmn` | 33.4 ± 2.0 (n=3) |" in text and "other" not in text
    assert "(2026-12-01 04:00 UTC, 40 of 105 runs finished;" in text
    assert "[docs/results.md](docs/results.md)" in text
    assert quote_overview(page, readme) and readme.read_text() == text    # idempotent
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not quote_overview(page, plain) and plain.read_text() == "no markers\n"
