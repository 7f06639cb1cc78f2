"""The results page of a benchmark suite (markdown) and its learning-curve plots (PNG).

``write_results(runs, out, path)`` reads the suite's run directories under ``out``
(``summary.json``, ``robustness.json``, ``benchmark.json``, ``metrics.jsonl``, ``config.yaml``)
and writes ``path`` (e.g. ``docs/results.md``) with, per task, a table like the papers' (mean
+- sample std over seeds per backend, the number of finished seeds), the published numbers
beside ours, the metric under random group actions, parameters and wall time per run; a table of
every run; the runs that remain; and one learning-curve PNG per task in the folder named after
the page (``docs/results/``), linked relatively.
"""
from __future__ import annotations

import json
import math
import os
import re
import platform
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .suites import SOURCES, TASKS

_TASK_ORDER = ("mnist_inr", "fmnist_inr", "zoo_relu", "zoo_tanh", "mnist_edit")
_METRIC_NAMES = {"accuracy": "test accuracy", "kendall_tau": "Kendall tau", "mse": "test MSE"}


def _read(path: Path, kind="json"):
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return json.loads(text) if kind == "json" else yaml.safe_load(text)
    except ValueError:
        return None


def collect(runs, out) -> list:
    """One dict per run: ``run`` (the ``Run``), ``dir``, ``finished``, ``test`` (the test
    metric), ``robustness`` ({setting: metric}), ``changes`` ({setting: share of test networks
    whose prediction the actions change}), ``wall_s``, ``cpu_s``, ``params``, ``epochs``,
    ``curve`` ([(epoch, train loss, val metric)]), ``error``."""
    from .runner import state
    rows = []
    for r in runs:
        d = Path(out) / r.name
        info = _read(d / "benchmark.json") or {}
        summ = _read(d / "summary.json") or {}
        cfg = _read(d / "config.yaml", "yaml") or {}
        metric = TASKS[r.task].metric
        curve = []
        if (d / "metrics.jsonl").is_file():
            for ln in (d / "metrics.jsonl").read_text().splitlines():
                try:
                    m = json.loads(ln)
                except ValueError:
                    continue
                curve.append((m.get("epoch"), m.get("train_loss"), m.get(f"val_{metric}")))
        finished = state(d) == "finished"
        rows.append({"run": r, "dir": d, "state": state(d), "finished": finished,
                     "test": (summ.get("test") or {}).get(metric) if finished else None,
                     "robustness": (_read(d / "robustness.json") or {}) if finished else {},
                     "changes": (_read(d / "prediction_changes.json") or {}) if finished
                     else {},
                     "wall_s": info.get("wall_s") if finished else None,
                     "cpu_s": info.get("cpu_s") if finished else None,
                     "params": summ.get("parameters"),
                     "epochs": (cfg.get("train") or {}).get("epochs"),
                     "curve": curve, "error": info.get("error"),
                     "reference": _reference(summ, metric) if finished else None})
    return rows


CHANGES_TEXT = [
    "In % of the test networks, mean ± std over seeds: a class that differs after the action, or "
    "a predicted value (an edited image: any pixel) that moves by more than 1e-3 of the spread "
    "of the predictions (`scalegmn.train.robustness.prediction_changes`). A backend that "
    "respects the group has 0.0 whatever it learned. This is the measure to read for "
    "permutations and sign flips: the INRs and the tanh zoo are as likely as their permuted and "
    "sign-flipped copies (symmetric, i.i.d. initialisation; an elementwise optimiser), so a "
    "transformed test set is another sample of the same data and no backend's expected metric "
    "changes on it; the metric columns above differ from `none` by sampling noise only. Positive "
    "rescalings of ReLU networks do leave the data's distribution, and there the metric drops "
    "too. Float32 round-off can move a prediction of a backend that respects the group "
    "(measured for ScaleGMN-B under large rescalings of ReLU networks: 0 % in float64; "
    "[methods.md, section 7.7](methods.md#77-prediction-changes-under-group-actions-and-float32-round-off)).", ""]


def _setting_tables(groups: dict, key: str, title: str, intro: list, cell) -> list:
    """One table per task: backends x settings of each run's ``key`` dict ({setting: value}),
    mean ± std over seeds, formatted by ``cell(task, mean, std)``; [] when no run has any."""
    L = []
    for t, backends in groups.items():
        settings = []
        for rs in backends.values():
            for r in rs:
                settings += [k for k in r[key] if k not in settings]
        if not settings:
            continue
        L += [f"{TASKS[t].title}:", ""]
        L.append("| backend | " + " | ".join(settings) + " |")
        L.append("|---|" + "---|" * len(settings))
        for b, rs in backends.items():
            cells = []
            for k in settings:
                m, sd, n = mean_std(r[key].get(k) for r in rs)
                cells.append(cell(t, m, sd) + (f" (n={n})" if 0 < n < len(rs) else ""))
            L.append(f"| `{b}` | " + " | ".join(cells) + " |")
        L.append("")
    return [title, ""] + intro + L if L else []


def _reference(summary: dict, metric: str):
    """``(name, test metric)`` of the task's trivial model recorded with a run (editing: the
    unedited networks), or None."""
    ref = summary.get("reference") or {}
    value = (ref.get("test") or {}).get(metric)
    return (ref.get("name"), value) if value is not None else None


def mean_std(values) -> tuple:
    """(mean, sample std or None for one value, n)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return m, s, len(v)


def _median(values):
    """The median of the values that are not None (None when there are none)."""
    v = sorted(float(x) for x in values if x is not None)
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def _fmt(task, m, s=None) -> str:
    if m is None:
        return "-"
    info = TASKS[task]
    digits = 3 if info.metric == "kendall_tau" else 2 if info.metric == "mse" else 1
    x = f"{m * info.scale:.{digits}f}"
    return x + (f" ± {s * info.scale:.{digits}f}" if s is not None else "")


def _minutes(s) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.2f} h"


def _groups(rows) -> "OrderedDict":
    """{task: {backend: [rows]}} in the suite's order of tasks and backends."""
    g = OrderedDict()
    for t in _TASK_ORDER:
        for row in rows:
            if row["run"].task == t:
                g.setdefault(t, OrderedDict()).setdefault(row["run"].backend, []).append(row)
    return g


def _strongest(rob: dict):
    """The last (strongest) random-action setting of a robustness dict."""
    keys = [k for k in rob if k != "none"]
    return keys[-1] if keys else None


def plot_task(task: str, backends: dict, path: Path):
    """Learning curves of one task: train loss and validation metric per epoch, one colour per
    backend (each seed thin, the mean over seeds thick), chance level for accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    info = TASKS[task]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    drawn = False
    for i, (backend, rows) in enumerate(backends.items()):
        colour = f"C{i % 10}"
        series = [r["curve"] for r in rows if r["curve"]]
        if not series:
            continue
        drawn = True
        for k, ax in ((1, axes[0]), (2, axes[1])):
            per_epoch = {}
            for c in series:
                pts = [(p[0], p[k]) for p in c if p[k] is not None]
                if len(series) > 1:
                    ax.plot([p[0] for p in pts], [p[1] * (info.scale if k == 2 else 1)
                                                  for p in pts], color=colour, lw=0.6,
                            alpha=0.35)
                for e, y in pts:
                    per_epoch.setdefault(e, []).append(y)
            es = sorted(per_epoch)
            ys = [sum(per_epoch[e]) / len(per_epoch[e]) * (info.scale if k == 2 else 1)
                  for e in es]
            ax.plot(es, ys, color=colour, lw=1.8, marker="o", ms=3,
                    label=f"{backend} ({len(series)})" if k == 2 else None)
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_title("train loss")
    axes[1].set_title(f"validation {_METRIC_NAMES.get(info.metric, info.metric)}"
                      .replace("validation test ", "validation ")
                      + (f" ({info.unit})" if info.unit else ""))
    if info.chance is not None:
        axes[1].axhline(info.chance * info.scale, color="0.3", ls=":", lw=1.2, label="chance")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                   title="backend (seeds)", title_fontsize=7)
    fig.suptitle(info.title + " (mean over seeds thick, each seed thin)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render(runs, out, path, suite: str = "", data_dir=None) -> str:
    """The markdown of the results page (plots are written by ``write_results``)."""
    rows = collect(runs, out)
    groups = _groups(rows)
    path = Path(path)
    plot_dir = path.parent / path.stem
    n_done = sum(r["finished"] for r in rows)
    cite = {}

    def ref(key):
        cite.setdefault(key, len(cite) + 1)
        return f"[{cite[key]}]"

    L = [f"# Benchmark results ({suite} suite)" if suite else "# Benchmark results", ""]
    L += [f"Written by `scalegmn benchmark --suite {suite or '...'} --out {out}` on {_now()} "
          f"({platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}); **{n_done} of {len(rows)} runs finished**"
          + ("." if n_done == len(rows) else ", the others are listed under "
             "[Remaining runs](#remaining-runs); rerun the same command to continue "
             "(finished runs are skipped, interrupted ones resumed)."), ""]
    L += ["Each number is the mean ± sample standard deviation over the finished seeds (n); "
          "one seed has no spread. Every run is an ordinary `scalegmn train` run directory "
          "(config.yaml, metrics.jsonl, summary.json, checkpoints/) under the `--out` folder; "
          "the test metric is taken at the epoch of the best validation metric. *Under random "
          "group actions*: the test metric on test networks transformed by random elements of "
          "their symmetry group (named in the column: permutations and sign flips for sine and "
          "tanh networks, permutations and positive rescalings by factors in [1/r, r] for ReLU "
          "networks); a backend that respects the symmetry keeps its number (one that does "
          "not may keep it too: see the section on prediction changes). Wall and CPU time: per "
          "run, the median over its seeds (one run paused or slowed by other work cannot set "
          "the figure), training and evaluation (the data sets are made once, before; times "
          "are on a shared, busy machine, niced, so wall times are upper bounds).", ""]
    L += ["**The sizes differ from the papers'**: the published numbers come from 55,000 "
          "training INRs and 150-300 epochs on a GPU; this suite trains on a few thousand "
          "networks for a few epochs on 2 CPU cores, so our numbers are far below the "
          "published ones and compare backends with each other at equal budget, not with the "
          "papers. The `paper` suite runs the published sizes (for a GPU).", ""]
    # overview ----------------------------------------------------------------------------
    if groups:
        tasks = list(groups)
        backends = []
        for t in tasks:
            backends += [b for b in groups[t] if b not in backends]
        L += ["## Overview", ""]
        head = ["backend"] + [TASKS[t].title + (f" ({TASKS[t].unit})" if TASKS[t].unit else "")
                              for t in tasks]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for b in backends:
            cells = [f"`{b}`"]
            for t in tasks:
                m, s, n = mean_std(r["test"] for r in groups[t].get(b, []))
                cells.append(f"{_fmt(t, m, s)} (n={n})" if n else "-")
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
    # per task ----------------------------------------------------------------------------
    for t, backends in groups.items():
        info = TASKS[t]
        first = next(iter(backends.values()))[0]["run"]
        data = first.data
        epochs = sorted({r["epochs"] or next((int(o.split("=", 1)[1]) for o in r["run"].overrides
                                              if o.startswith("train.epochs=")), None)
                         for rs in backends.values() for r in rs} - {None})
        L += [f"## {info.title}", ""]
        L += [f"Data: `{data.name}` ({data.n:,} networks" if data.n else
              f"Data: `{data.name}` (all networks", ]
        seeds = max(len(rs) for rs in backends.values())
        L[-1] += (f"); {', '.join(map(str, epochs))} epoch(s); {seeds} seed(s) per backend; "
                  "metric: "
                  f"{_METRIC_NAMES.get(info.metric, info.metric)}"
                  + (f" in {info.unit}" if info.unit else "")
                  + ("" if info.higher_is_better else " (lower is better)") + ".")
        L.append("")
        strongest = None
        for rs in backends.values():
            for r in rs:
                strongest = strongest or _strongest(r["robustness"])
        head = ["backend", "ours", "n", "published", f"under random group actions "
                f"({strongest or '-'})", "parameters", "wall time per run", "CPU time per run"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|---|---|---|---|---|---|---|---|")
        for b, rs in backends.items():
            m, s, n = mean_std(r["test"] for r in rs)
            rm, rsd, _ = mean_std(r["robustness"].get(strongest) for r in rs) if strongest \
                else (None, None, 0)
            pub = info.published.get(b)
            pub_txt = f"{pub[0]:g} {ref(pub[1])}" if pub else "-"
            params = next((r["params"] for r in rs if r["params"]), None)
            wall, cpu = _median(r["wall_s"] for r in rs), _median(r["cpu_s"] for r in rs)
            L.append(f"| `{b}` | {_fmt(t, m, s)} | {n}/{len(rs)} | {pub_txt} | "
                     f"{_fmt(t, rm, rsd)} | {f'{params:,}' if params else '-'} | "
                     f"{_minutes(wall)} | {_minutes(cpu)} |")
        L.append("")
        if info.note:
            L += [info.note, ""]
        if info.chance is not None:
            L += [f"Chance level: {_fmt(t, info.chance)} {info.unit}.", ""]
        refs = {r["reference"] for rs in backends.values() for r in rs if r["reference"]}
        if refs:   # one test split per task: every run records the same level
            name, value = sorted(refs)[0]
            L += [f"Reference: the {name} networks score {_fmt(t, value)} {info.unit} on the "
                  f"same test networks (a backend that does not beat it does no better than "
                  f"leaving them as they are).", ""]
        png = plot_dir / f"{t}_curves.png"
        if png.is_file():
            L += [f"![learning curves: {info.title}]({plot_dir.name}/{png.name})", ""]
    # robustness in full ------------------------------------------------------------------
    L += _setting_tables(groups, "robustness", "## Test metric under random group actions "
                         "(every setting)", [], lambda t, m, sd: _fmt(t, m, sd))
    L += _setting_tables(groups, "changes", "## Test networks whose prediction the group actions "
                         "change", CHANGES_TEXT,
                         lambda t, m, sd: "-" if m is None else
                         f"{100 * m:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}"))
    # every run ---------------------------------------------------------------------------
    L += ["## Runs", ""]
    L.append("| run | state | test | under random group actions | epochs | wall time | "
             "CPU time |")
    L.append("|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["run"].task
        st = _strongest(r["robustness"])
        L.append(f"| `{r['run'].name}` | {r['state']} | {_fmt(t, r['test'])} | "
                 f"{_fmt(t, r['robustness'].get(st)) if st else '-'} | {r['epochs'] or '-'} | "
                 f"{_minutes(r['wall_s'])} | {_minutes(r['cpu_s'])} |")
    L.append("")
    remaining = [r for r in rows if not r["finished"]]
    L += ["## Remaining runs", ""]
    if remaining:
        L += [f"{len(remaining)} run(s) not finished yet (in suite order; `interrupted` ones "
              f"resume from their last checkpoint):", ""]
        L += [f"- `{r['run'].name}` ({r['state']}"
              + (f"; last error: {r['error']}" if r["error"] else "") + ")" for r in remaining]
    else:
        L.append("None: every run of the suite has finished.")
    L.append("")
    if cite:
        L += ["## Sources of the published numbers", ""]
        L += [f"{n}. {SOURCES[k]}." for k, n in sorted(cite.items(), key=lambda kv: kv[1])]
        L.append("")
    return "\n".join(L)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


#: the lines of a README between which ``quote_overview`` keeps the overview table
QUOTE_START, QUOTE_END = "<!-- benchmark-overview:start -->", "<!-- benchmark-overview:end -->"


def quote_overview(page: Path, readme: Path) -> bool:
    """Copy the overview table of the results page ``page`` into ``readme`` between the lines
    ``QUOTE_START`` and ``QUOTE_END``, with the page's date and run count, so the README quotes
    the current numbers (computed once, on the page). Returns whether ``readme`` had the
    markers (without them it is left alone)."""
    page, readme = Path(page), Path(readme)
    text = readme.read_text() if readme.is_file() else ""
    if QUOTE_START not in text or QUOTE_END not in text:
        return False
    lines = page.read_text().splitlines()
    if "## Overview" not in lines:
        return False
    i = lines.index("## Overview") + 2
    table = []
    while i < len(lines) and lines[i].startswith("|"):
        table.append(lines[i])
        i += 1
    when = next((ln for ln in lines if ln.startswith("Written by")), "")
    m = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d UTC).*\*\*(\d+ of \d+ runs finished)\*\*",
                  when)
    rel = os.path.relpath(page, readme.parent)
    intro = (f"From [{rel}]({rel}) ({m.group(1)}, {m.group(2)}; mean ± std over the finished "
             f"seeds, n per cell):" if m else f"From [{rel}]({rel}):")
    head, rest = text.split(QUOTE_START, 1)
    _, tail = rest.split(QUOTE_END, 1)
    new = head + QUOTE_START + "\n" + intro + "\n\n" + "\n".join(table) + "\n" + QUOTE_END + tail
    if new != text:
        tmp = readme.with_name(readme.name + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
    return True


def write_results(runs, out, path="docs/results.md", suite: str = "", data_dir=None,
                  quote_in=None) -> Path:
    """Write the learning-curve PNGs (``<page folder>/<page stem>/<task>_curves.png``) and the
    page ``path``; returns ``path``. ``quote_in``: a README whose overview quote
    (``quote_overview``) is refreshed too."""
    path = Path(path)
    rows = collect(runs, out)
    plot_dir = path.parent / path.stem
    for t, backends in _groups(rows).items():
        plot_task(t, backends, plot_dir / f"{t}_curves.png")
    text = render(runs, out, path, suite, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)       # readers never see half a page
    if quote_in is not None:
        quote_overview(path, quote_in)
    return path
