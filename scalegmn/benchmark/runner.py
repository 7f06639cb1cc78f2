"""Run a benchmark suite: every run an ordinary ``scalegmn train`` run directory.

For each run of the suite, in order: a finished run (``benchmark.json`` says so and
``summary.json`` exists) is skipped; an interrupted one (``checkpoints/last.pt`` without a
finish) is resumed through the training loop's resume; a new one is trained. Its data set is
made first if absent. After training, the test metric under random group actions is written to
``robustness.json``, and the results page is rewritten, so that it always shows what has
finished and lists what remains.

``benchmark.json`` of a run: ``{"run", "suite", "sessions": [{"start", "end", "wall_s",
"cpu_s", "resumed_from"}], "finished", "wall_s", "cpu_s", "error"}``. A session killed before
its end is closed at the next start with the time of its last checkpoint (the work after that
is lost and redone): wall times count useful work up to the last checkpoint of a killed session.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from . import data as D
from .suites import Run, estimate, get_suite

#: suites whose runs the measured costs describe (``suites.COST_MS``)
SIZED = ("tiny", "cpu")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj):
    from converters.io import atomic_write
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1)), mode="w")


def state(run_dir) -> str:
    """``finished``, ``interrupted`` (a checkpoint to resume from), ``failed`` (the last
    session raised; it is retried) or ``new``."""
    run_dir = Path(run_dir)
    info = _read_json(run_dir / "benchmark.json") or {}
    if info.get("finished") and (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "interrupted"
    return "failed" if info.get("error") else "new"


def run_config(run: Run, data_path=None):
    """The validated ``RunConfig`` of ``run`` (``data.path`` = ``data_path``; without one the
    config is validated with the shipped data path). A run derived from another backend's
    config (``model.backend=...``) keeps the options its own backend reads."""
    from ..train import load_config
    extra = [f"train.seed={run.seed}"]
    if data_path is not None:
        extra.append(f"data.path={Path(data_path)}")
    try:
        return load_config(run.config, list(run.overrides) + extra, drop_unread=True)
    except ValueError as e:
        raise ValueError(f"run {run.name}: {e}") from e


def plan(runs, out, data_dir) -> str:
    """The suite as text: data sets, each run with its state and estimated CPU time."""
    lines = ["data sets:"]
    seen = []
    for r in runs:
        if r.data not in seen:
            seen.append(r.data)
            lines.append("  " + D.describe(r.data, data_dir))
    est = estimate(runs)
    lines.append(f"runs ({len(runs)}), in order:")
    for i, r in enumerate(runs, 1):
        c = est["runs"].get(r.name)
        lines.append(f"  {i:3d}. {r.name:<48s} {state(Path(out) / r.name):<11s} "
                     + (f"~{c / 60:.1f} CPU-min" if c else ""))
    return "\n".join(lines)


def _close_open_session(info: dict, run_dir: Path):
    """A session without an end was killed: end it at its last checkpoint (or its start)."""
    for s in info.get("sessions", []):
        if s.get("end") is None:
            last = run_dir / "checkpoints" / "last.pt"
            start = s.get("start_ts", 0.0)
            end = max(start, last.stat().st_mtime) if last.is_file() else start
            s["end"] = datetime.fromtimestamp(end, timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC") + " (killed; last checkpoint)"
            s["wall_s"] = end - start
            s["cpu_s"] = None


def _totals(info: dict):
    info["wall_s"] = sum(s.get("wall_s") or 0.0 for s in info["sessions"])
    cpus = [s.get("cpu_s") for s in info["sessions"]]
    info["cpu_s"] = sum(c for c in cpus if c is not None) if any(
        c is not None for c in cpus) else None


#: per run: ``{setting: share of test networks whose prediction the actions change}``
CHANGES = "prediction_changes.json"


def add_prediction_changes(run: Run, out, log=print) -> bool:
    """Write ``prediction_changes.json`` into a finished run that lacks it (runs finished before
    the measure existed), from its best checkpoint and the same actions as its robustness;
    returns whether it wrote one."""
    from ..train import robustness as R
    from ..train.loop import Runner
    run_dir = Path(out) / run.name
    ckpt = run_dir / "checkpoints" / "best.pt"
    if state(run_dir) != "finished" or (run_dir / CHANGES).is_file() or not ckpt.is_file():
        return False
    runner = Runner.from_checkpoint(ckpt)
    runner.cfg.train.progress = False
    changes = R.prediction_changes(runner, seed=run.seed)
    R.save(changes, run_dir / CHANGES)
    log(f"[{run.name}] prediction changes under random group actions: "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in changes.items()))
    return True


def run_one(run: Run, out, data_dir, suite: str = "", log=print, progress: bool = True) -> dict:
    """Train (or resume) one run and evaluate its robustness; returns its ``benchmark.json``."""
    from ..train import robustness as R
    from ..train.loop import Runner
    run_dir = Path(out) / run.name
    st = state(run_dir)
    data_path = D.ensure(run.data, data_dir, progress=progress, log=log)
    cfg = run_config(run, data_path)
    cfg.train.progress = progress
    run_dir.mkdir(parents=True, exist_ok=True)
    info = _read_json(run_dir / "benchmark.json") or {"run": run.name, "suite": suite,
                                                      "sessions": []}
    _close_open_session(info, run_dir)
    info.pop("error", None)
    info["finished"] = False
    t0, c0 = time.time(), time.process_time()
    session = {"start": _now(), "start_ts": t0, "end": None, "wall_s": None, "cpu_s": None,
               "resumed": st == "interrupted", "pid": os.getpid()}
    info["sessions"].append(session)
    _write_json(run_dir / "benchmark.json", info)
    prefix = f"[{run.name}] "
    runner = Runner(cfg, run_dir, resume=st == "interrupted",
                    log=lambda *a, **k: log(prefix + " ".join(str(x) for x in a)))
    runner.fit()
    rob = R.robustness(runner, seed=run.seed)
    R.save(rob, run_dir / "robustness.json")
    R.save(R.prediction_changes(runner, seed=run.seed), run_dir / CHANGES)
    session.update(end=_now(), wall_s=time.time() - t0, cpu_s=time.process_time() - c0)
    info["finished"] = True
    _totals(info)
    _write_json(run_dir / "benchmark.json", info)
    log(prefix + f"finished in {info['wall_s'] / 60:.1f} min wall"
        + (f", {info['cpu_s'] / 60:.1f} CPU-min" if info.get("cpu_s") is not None else "")
        + "; robustness: " + ", ".join(f"{k} {v:.4f}" for k, v in rob.items()))
    return info


def run_suite(suite: str, out, only: Optional[str] = None, dry_run: bool = False,
              data_dir=None, results="docs/results.md", log=print, progress: bool = True,
              keep_going: bool = True, quote_in=None) -> int:
    """Run suite ``suite`` into ``out`` (see the module doc); write the results page to
    ``results`` after each run (``None``: no page), and refresh the overview quoted in the
    README ``quote_in`` (``results.quote_overview``; None: none). ``only``: a pattern of run names
    (``suites.get_suite``). ``dry_run``: print the plan, validate every run's config, make and
    train nothing. Returns the number of runs that failed (each failure is logged with its
    traceback and recorded in its ``benchmark.json``; ``keep_going=False`` re-raises)."""
    runs = get_suite(suite, only)
    out = Path(out)
    data_dir = Path(data_dir) if data_dir else D.default_data_dir()
    for r in runs:          # bad configs surface before hours of work, not in the middle
        run_config(r)
    log(f"suite '{suite}': {len(runs)} runs into {out}; data sets in {data_dir}")
    log(plan(runs, out, data_dir))
    if suite in SIZED:
        est = estimate(runs)
        todo = [r for r in runs if state(out / r.name) != "finished"]
        left = sum(est["runs"][r.name] or 0 for r in todo) + sum(
            v for k, v in est["data"].items() if not D.is_ready(
                next(r.data for r in runs if r.data.name == k), data_dir))
        log(f"estimated work left: {left / 3600:.1f} CPU-hours (measured costs; about "
            f"{left / 3600 / 1.7:.1f} h on 2 idle cores, more on a busy machine)")
    if dry_run:
        return 0
    failed = 0
    for i, r in enumerate(runs, 1):
        run_dir = out / r.name
        st = state(run_dir)
        if st == "finished":
            log(f"run {i}/{len(runs)} {r.name}: finished before, skipped")
            continue
        log(f"run {i}/{len(runs)} {r.name}: "
            + {"interrupted": "resuming", "failed": "retrying", "new": "starting"}[st]
            + f" ({_now()})")
        try:
            run_one(r, out, data_dir, suite, log=log, progress=progress)
        except KeyboardInterrupt:
            # stopped (Ctrl-C, kill): the page says which runs finished and which resume
            if results:
                _write_page(suite, runs, out, data_dir, results, log, quote_in)
            raise
        except Exception as e:     # noqa: BLE001 - one broken run must not stop a suite
            failed += 1
            info = _read_json(run_dir / "benchmark.json") or {"run": r.name, "sessions": []}
            info["error"] = f"{type(e).__name__}: {e}"
            info["finished"] = False
            if run_dir.is_dir():
                _write_json(run_dir / "benchmark.json", info)
            log(f"run {r.name} FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            if not keep_going:
                raise
        if results:
            _write_page(suite, runs, out, data_dir, results, log, quote_in)
    added = 0
    for r in runs:      # runs finished before prediction changes were measured
        try:
            wrote = add_prediction_changes(r, out, log)
        except Exception as e:     # noqa: BLE001 - a measure must not stop the suite
            log(f"[{r.name}] prediction changes not measured: {type(e).__name__}: {e}")
            continue
        added += wrote
        if wrote and added % 10 == 0 and results:      # the page every 10 measured runs
            _write_page(suite, runs, out, data_dir, results, log, quote_in)
    if results:
        _write_page(suite, runs, out, data_dir, results, log, quote_in)
    done = sum(state(out / r.name) == "finished" for r in runs)
    log(f"suite '{suite}': {done}/{len(runs)} runs finished, {failed} failed in this call"
        + (f"; results in {results}" if results else ""))
    return failed


def _write_page(suite, runs, out, data_dir, results, log, quote_in):
    from .results import write_results
    try:
        write_results(runs, out, results, suite=suite, data_dir=data_dir, quote_in=quote_in)
    except Exception as e:    # noqa: BLE001 - a page error must not stop the training
        log(f"could not write {results}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
