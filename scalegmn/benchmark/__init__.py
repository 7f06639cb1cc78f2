"""``scalegmn benchmark``: the papers' tasks as suites of ordinary training runs.

- ``suites``: what a suite is (data sets, runs, the published numbers beside ours) and the
  shipped suites ``tiny``, ``cpu`` and ``paper``;
- ``data``: the suites' data sets, made by the toolkit's generators if absent (cached);
- ``runner``: runs a suite run by run (finished runs skipped, interrupted ones resumed);
- ``results``: the results page (tables, robustness, wall times, learning curves).

Nothing here imports torch at import time; ``run_suite`` does, when it runs.
"""
from __future__ import annotations

from .suites import SUITES, DataSpec, Run, get_suite

__all__ = ["SUITES", "DataSpec", "Run", "get_suite", "run_suite", "write_results"]


def __getattr__(name: str):
    if name == "run_suite":
        from .runner import run_suite
        return run_suite
    if name == "write_results":
        from .results import write_results
        return write_results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
