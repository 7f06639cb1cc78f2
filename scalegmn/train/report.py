"""``scalegmn report RUN_DIRS...``: mean, std and standard error of the test metric per backend."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path


def report(run_dirs, out=None) -> str:
    """The table (one line per task and backend: n, mean, std, standard error of the test metric;
    std and stderr are ``n/a`` for a single run); with ``out`` also ``report.txt`` and a bar plot
    ``report.png`` there. ``FileNotFoundError`` names a folder that is not a finished run."""
    groups = defaultdict(list)
    metric = None
    for d in run_dirs:
        f = Path(d) / "summary.json"
        if not f.exists():
            raise FileNotFoundError(f"'{f}' not found: '{d}' is not a finished run (pass run "
                                    f"directories of scalegmn train that ran to the end)")
        s = json.loads(f.read_text())
        metric = metric or s["metric"]
        groups[(s["task"], s["backend"])].append(s["test"][s["metric"]])
    rows = []
    lines = [f"{'task':<20s} {'backend':<12s} {'n':>3s} {'mean':>9s} {'std':>9s} {'stderr':>9s}"]
    for (task, backend), v in sorted(groups.items()):
        n = len(v)
        mean = sum(v) / n
        if n > 1:
            std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
            se = std / math.sqrt(n)
            spread = f"{std:>9.4f} {se:>9.4f}"
        else:                 # one run: no spread to report
            se, spread = 0.0, f"{'n/a':>9s} {'n/a':>9s}"
        rows.append((backend, mean, se))
        lines.append(f"{task:<20s} {backend:<12s} {n:>3d} {mean:>9.4f} {spread}")
    table = "\n".join(lines)
    if out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.txt").write_text(table + "\n")
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(rows), 3))
        ax.bar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], capsize=4)
        ax.set_ylabel(f"test {metric}")
        fig.tight_layout()
        fig.savefig(out / "report.png", dpi=100)
        plt.close(fig)
    return table
