"""``scalegmn bench`` / ``python -m scalegmn.bench``: options -> ``BenchSettings`` and ``Parts``
-> suites -> report.

Each suite prints its table as it finishes; with ``--out`` the report (Markdown, JSON, plots)
is written at the end, and ``--render`` writes it from a saved ``bench.json`` instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import report, suites
from .isolation import start_server
from .measure import measure
from .probes import machine
from .settings import (AUTOCAST, DOCS, ENGINES, FULL, MALLOC, PRESETS, QUICK, READOUTS,
                       SWEEP_FULL, SWEEP_QUICK, BenchSettings)
from .suites import SWEEPS, Parts
from .workloads import DEFAULT_BACKENDS, buildable, default_backends

DESCRIPTION = ("``scalegmn bench``: speed and memory of metanetworks, converters and data "
               "generation.")
_SIZES = ("batch", "hidden", "layers", "repeats")
#: the order of ``--one``'s JSON list (``measure``'s keyword arguments)
_ONE = ("backend", "engine", "workload", "batch_size", "hidden", "layers", "repeats", "threads",
        "max_s", "memory", "flops", "readout")


def parser() -> argparse.ArgumentParser:
    """The option parser of ``scalegmn bench``."""
    p = argparse.ArgumentParser(prog="scalegmn bench", description=DESCRIPTION)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="; ".join(f"{k}: {v.text}" for k, v in PRESETS.items())
                   + " (options given override it)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="default: the registered ones of " + ", ".join(DEFAULT_BACKENDS))
    p.add_argument("--engines", nargs="+", default=None, choices=ENGINES,
                   help="of scalegmn, scalegmn-b, gmn (default: sparse dense): lean = dense with "
                   "checkpointing; reference = a straightforward PyG scatter implementation (no "
                   "fusions, no pruning, glibc malloc default)")
    p.add_argument("--readout", choices=READOUTS, default="last_layer",
                   help="of scalegmn, scalegmn-b, gmn (last_layer: the published MNIST-INR one)")
    p.add_argument("--no-prune", action="store_true",
                   help="of scalegmn, scalegmn-b, gmn: evaluate the last layer's messages into "
                   "hidden nodes too (the default table)")
    p.add_argument("--workload", default=None, help="siren (default), cnn_zoo or mlp:2-32-32-1")
    for k in _SIZES:
        p.add_argument(f"--{k}", type=int, default=None, help=_default_help(k))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sweep", nargs="+", choices=sorted(SWEEPS) + ["all"], default=None)
    p.add_argument("--converters", action="store_true", help="converter and SIREN-fitting times")
    p.add_argument("--efficiency", action="store_true", help="matmul peak and achieved FLOP/s")
    p.add_argument("--allocator", action="store_true",
                   help="page faults, system time and peak RSS per step with malloc default, "
                   "keep and lean")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler operator tables of one forward+backward step of each "
                   "backend and engine of the table")
    p.add_argument("--malloc", choices=MALLOC, default="keep",
                   help="malloc policy of the measuring processes (scalegmn.allocator; keep: as "
                   "scalegmn train; default: glibc left alone); the lean and reference engines "
                   "use lean and default")
    p.add_argument("--autocast", choices=AUTOCAST,
                   help="run the measured steps under torch.autocast with this dtype (on a GPU: "
                   "mixed precision; the rows say so)")
    p.add_argument("--paper", action="store_true",
                   help="ScaleGMN at the published workloads: MNIST-INR config (SIREN INRs, batch "
                   "128, hidden 128, 4 layers) with every engine, Small-CNN-Zoo CNNs at batch 64")
    p.add_argument("--docs", action="store_true",
                   help="everything, written to docs/benchmarks.md and docs/benchmarks/")
    p.add_argument("--quick", action="store_true", help="small sizes and repeats (a smoke test)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement "
                   "(default 300, 60 with --quick; a preset may say more)")
    p.add_argument("--max-mem-gib", type=float, default=8.0,
                   help="address space a measurement may add (GiB; 0: no cap)")
    p.add_argument("--render", metavar="JSON", default=None, help="write the report (--out, "
                   "--docs) from a saved bench.json instead of measuring")
    p.add_argument("--out", default=None, help="a directory (Markdown, JSON, plots), or a .json "
                   "file for the rows of the default table")
    return p


def _default_help(k: str) -> str:
    text = (f"table: {getattr(FULL, k)} ({getattr(DOCS, k)} with --docs, {getattr(QUICK, k)} "
            "with --quick)")
    if k != "batch":
        text += f"; sweeps: {getattr(SWEEP_FULL, k)} ({getattr(SWEEP_QUICK, k)} with --quick)"
    return text


def plan(args: argparse.Namespace) -> tuple:
    """(``BenchSettings``, ``Parts``) of parsed options: sizes from ``--quick``, the preset,
    ``--docs`` or the full defaults, each overridden by the options given."""
    preset = PRESETS[args.preset] if args.preset else None
    base = QUICK if args.quick else preset.size if preset else DOCS if args.docs else FULL
    sizes = {k: getattr(args, k) for k in ("hidden", "layers", "repeats")}
    settings = BenchSettings(
        workload=args.workload or (preset.workload if preset else "siren"),
        backends=tuple(args.backends or (preset.backends if preset else ())) or None,
        engines=tuple(args.engines or (preset.engines if preset else ("sparse", "dense"))),
        readout=args.readout, prune_last_layer=not args.no_prune,
        table=base.override(batch=args.batch, **sizes),
        sweep=(SWEEP_QUICK if args.quick else SWEEP_FULL).override(**sizes),
        threads=args.threads, malloc=args.malloc, autocast=args.autocast,
        timeout=args.timeout or (60 if args.quick else preset.timeout if preset else 300),
        max_mem_gib=args.max_mem_gib or None, quick=args.quick)
    named = preset.parts if preset else ()
    sweeps = (tuple(SWEEPS) if args.docs or "all" in (args.sweep or []) else
              tuple(args.sweep or ()))
    table = args.docs or "table" in named or not (
        sweeps or args.converters or args.efficiency or args.allocator or args.paper)
    return settings, Parts(
        table=table, paper=args.paper or args.docs,
        efficiency=args.efficiency or args.docs or "efficiency" in named, sweeps=sweeps,
        allocator=args.allocator or args.docs, converters=args.converters or args.docs,
        profile=args.profile)


def settings_json(settings: BenchSettings) -> dict:
    """``results["settings"]`` of a run: the table's sizes and workload, malloc, the sweeps'
    sizes in words, quick."""
    return {"table": {**asdict(settings.table), "workload": settings.workload},
            "malloc": settings.malloc, "sweep": report.sweep_text(settings.sweep),
            "quick": settings.quick}


def _backends(settings: BenchSettings, results: dict) -> list:
    if settings.backends:
        return list(settings.backends)
    ok, failed = buildable(default_backends())
    results["failed_backends"] = failed
    return ok


def collect(settings: BenchSettings, parts: Parts,
            show: Callable[[str], None] = lambda text: print(text, flush=True)) -> dict:
    """Run the selected suites, ``show`` ing each table as it finishes; the results dict of
    ``report.write_report`` (``machine``, ``settings``, then one key per part)."""
    start_server(settings.malloc)       # its imports overlap with the work below
    results = {"machine": machine(), "settings": settings_json(settings)}
    backends = (_backends(settings, results) if (parts.table or parts.sweeps or parts.profile)
                else [])
    if parts.table:
        t = settings.table
        results["table"] = suites.table(settings, backends)
        show(report.format_table(results["table"], report.table_title(
            settings.workload, t.batch, t.hidden, t.layers)))
    if parts.paper:
        results["paper"] = suites.run_paper(settings, log=lambda case: show(report.format_table(
            case["rows"], report.table_title(case["workload"], case["batch_size"],
                                             case["hidden"], case["layers"]))))
    if parts.efficiency:
        done = [r for r in results.get("table", []) if (r["backend"], r["engine"]) ==
                ("scalegmn", "dense") and "error" not in r]
        results["efficiency"] = suites.run_efficiency(settings, step=done[0] if done else None)
        show(report.efficiency_markdown(results["efficiency"]))
    if parts.profile:
        results["profile"] = suites.run_profiles(settings, backends)
        show(report.profile_text(results["profile"]))
    if parts.sweeps:
        results["sweeps"] = {}
        for name in parts.sweeps:
            show(f"sweep {name}")
            rows = suites.run_sweep(name, settings, backends,
                                    log=lambda row: show(report.row_line(row)))
            show(report.sweep_markdown(name, rows, report.sweep_text(settings.sweep)))
            results["sweeps"][name] = rows
    if parts.allocator:
        results["allocator"] = suites.allocator_suite(settings)
        show(report.allocator_markdown(results["allocator"]))
    if parts.converters:
        results["converters"] = suites.converters_suite(settings)
        show(report.converters_markdown(results["converters"]))
    return results


def finish(args: argparse.Namespace, results: dict, argv: Sequence[str]) -> Optional[Path]:
    """Write what ``--out``/``--docs`` ask for: the default table's rows (a ``.json`` path), or
    the report (``docs/benchmarks.md`` and ``docs/benchmarks/`` with ``--docs``, else
    ``bench.md`` and the rest in the folder); the path written, None if nothing."""
    command = results.setdefault("command", " ".join(["scalegmn bench"] + [str(a) for a in argv]))
    if not args.out:
        return None
    out = Path(args.out)
    if str(out).endswith(".json"):
        return report.write_rows(results.get("table", results), out)
    md, img = ((out / "benchmarks.md", out / "benchmarks") if args.docs else
               (out / "bench.md", out))
    path = report.write_report(results, md, img, command)
    print("wrote", path)
    return path


def _one(text: str, settings: BenchSettings) -> dict:
    """``--one``: ``measure`` in this process, from a JSON object of its keyword arguments or a
    JSON list in the order of ``_ONE``."""
    given = json.loads(text)
    kwargs = dict(zip(_ONE, given)) if isinstance(given, list) else dict(given)
    kwargs.setdefault("autocast", settings.autocast)
    return measure(**kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scalegmn bench`` with options ``argv`` (default ``sys.argv[1:]``); 0 when done."""
    args = parser().parse_args(argv)
    if args.docs and args.out is None:
        args.out = "docs"
    if args.render:
        finish(args, json.loads(Path(args.render).read_text()), [])
        return 0
    settings, parts = plan(args)
    if args.one:
        print(json.dumps(_one(args.one, settings)))
        return 0
    t0 = time.perf_counter()
    results = collect(settings, parts)
    results["machine"]["wall_s"] = round(time.perf_counter() - t0, 1)
    if hasattr(os, "getloadavg"):
        results["machine"]["load_at_end"] = round(os.getloadavg()[0], 2)
    finish(args, results, sys.argv[1:] if argv is None else list(argv))
    return 0
