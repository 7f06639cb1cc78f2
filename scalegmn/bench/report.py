"""The report of ``scalegmn bench``: text tables, growth-exponent fits, plots and Markdown.

Everything here formats rows the suites returned (or a saved ``bench.json``: ``--render``); no
function measures anything. ``write_report`` writes the Markdown page, the JSON and one PNG per
sweep; its sections follow the keys of the results dict (``table``, ``paper``, ``efficiency``,
``profile``, ``sweeps``, ``allocator``, ``converters``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Union

from .settings import Size
from .suites import SWEEPS
from .workloads import describe

PathLike = Union[str, os.PathLike]


# -- text ----------------------------------------------------------------------------------------
def table_title(workload: str, batch: int, hidden: int, layers: int) -> str:
    """The title line of a text table: the workload in words and the sizes."""
    return f"{describe(workload)}, batch {batch}, hidden {hidden}, layers {layers}"


def format_table(rows: list, title: str) -> str:
    """Fixed-width text table of ``measure`` rows, then ``engine_ratios``."""
    lines = [title, f"{'backend':<13s} {'engine':<9s} {'params':>10s} {'fwd ms':>9s} "
                    f"{'f+b ms':>9s} {'graphs/s':>9s} {'peak MiB':>9s} {'alloc MiB':>9s} "
                    f"{'GFLOP/s':>8s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<13s} {r['engine']:<9s} failed: {r['error']}")
            continue
        lines.append(f"{r['backend']:<13s} {r['engine']:<9s} {r['trainable']:>10,d} "
                     f"{r['forward_s'] * 1e3:>9.1f} {r['forward_backward_s'] * 1e3:>9.1f} "
                     f"{r['forward_backward_graphs_per_s']:>9.1f} {r['peak_rss_mib']:>9.0f} "
                     f"{r.get('alloc_peak_mib', float('nan')):>9.1f} "
                     f"{r.get('achieved_gflops', float('nan')):>8.2f}")
    return "\n".join(lines + engine_ratios(rows))


def engine_ratios(rows: list) -> list:
    """One line per backend measured with the dense engine and another: the other's
    forward+backward time and peak RSS over dense's."""
    out = []
    by = {(r["backend"], r["engine"]): r for r in rows if "error" not in r}
    for (backend, engine), d in by.items():
        if engine != "dense":
            continue
        parts = [f"{other} {o['forward_backward_s'] / d['forward_backward_s']:.2f}x the time, "
                 f"{o['peak_rss_mib'] / d['peak_rss_mib']:.2f}x the peak RSS"
                 for other in ("sparse", "reference", "lean")
                 if (o := by.get((backend, other))) is not None]
        if parts:
            out.append(f"{backend}: against dense (forward+backward): " + "; ".join(parts))
    return out


def row_line(r: dict) -> str:
    """One progress line of a sweep row."""
    head = f"  {r.get('sweep', '')} x={r.get('x', '')} {r['backend']}/{r['engine']}"
    if "error" in r:
        return f"{head}: failed: {r['error']}"
    return f"{head}: fwd {r['forward_s'] * 1e3:.1f} ms, f+b {r['forward_backward_s'] * 1e3:.1f} ms"


def sweep_text(size: Size) -> str:
    """The sweeps' sizes in words (``settings.sweep`` of a saved ``bench.json``)."""
    return (f"Batch {size.batch} (except the batch sweep), metanetwork hidden "
            f"{size.hidden}, {size.layers} layers, up to {size.repeats} repeats")


def profile_text(profiles: dict) -> str:
    """The operator tables of ``suites.run_profiles``, one after the other."""
    return "\n".join(f"--- {key}\n{text}" for key, text in profiles.items())


# -- exponent fits -------------------------------------------------------------------------------
def fit_exponent(xs: Iterable[float], ys: Iterable[float]) -> float:
    """Least-squares slope of log(y) against log(x): y ~ c x^k returns k; NaN with fewer than
    two usable points (positive, finite)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys)
           if x and y and x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    if len({p[0] for p in pts}) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _series(rows: list) -> dict:
    """{(backend, engine): [successful rows sorted by x]} in first-seen order."""
    out = {}
    for r in rows:
        out.setdefault((r["backend"], r["engine"]), [])
        if "error" not in r:
            out[(r["backend"], r["engine"])].append(r)
    return {k: sorted(v, key=lambda r: r["x"]) for k, v in out.items()}


def exponents(rows: list) -> dict:
    """Growth exponents per ``"backend/engine"`` of sweep rows: of forward time,
    forward+backward time (all points, and the larger half of the points, where fixed costs
    matter least), of the allocation peak of one forward+backward step, and of forward+backward
    time against the input's weights (edges per graph; upper half); with ``points``."""
    out = {}
    for (backend, engine), series in _series(rows).items():
        xs = [r["x"] for r in series]
        top = series[len(series) // 2:] if len(series) >= 4 else series
        out[f"{backend}/{engine}"] = {
            "forward": fit_exponent(xs, [r["forward_s"] for r in series]),
            "forward_backward": fit_exponent(xs, [r["forward_backward_s"] for r in series]),
            "forward_backward_upper": fit_exponent([r["x"] for r in top],
                                                   [r["forward_backward_s"] for r in top]),
            "alloc_peak": fit_exponent(xs, [r.get("alloc_peak_mib", 0) for r in series]),
            # against the input's weights (edges per graph): 1 = linear in the network's size
            # (for depth, x = L is not proportional to the weights: 2-32-1 has 96, each
            # further 32 x 32 layer adds 1,024)
            "forward_backward_weights": fit_exponent(
                [r.get("edges_per_graph", float("nan")) for r in top],
                [r["forward_backward_s"] for r in top]),
            "points": len(series)}
    return out


# -- plots ---------------------------------------------------------------------------------------
_LINESTYLE = {"dense": "-", "sparse": "--", "-": "-."}


def plot_sweep(name: str, rows: list, path: PathLike) -> None:
    """Log-log PNG at ``path``: forward time, forward+backward time and allocation peak against
    x, one line per backend/engine (colour: backend; line style: engine)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    panels = (("forward_s", 1e3, "forward (ms)"), ("forward_backward_s", 1e3,
              "forward + backward (ms)"), ("alloc_peak_mib", 1, "allocation peak, f+b (MiB)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    series = _series(rows)
    colours = _colours([b for b, _ in series])
    for (backend, engine), pts in series.items():
        label = backend if engine == "-" else f"{backend}/{engine}"
        for ax, (key, scale, _) in zip(axes, panels):
            ys = [r.get(key, float("nan")) * scale for r in pts]
            ax.plot([r["x"] for r in pts], ys, _LINESTYLE.get(engine, ":"), marker="o", ms=3,
                    color=colours[backend], label=label)
    xs = sorted({r["x"] for r in rows})
    for ax, (_, _, ylabel) in zip(axes, panels):
        ax.set(xscale="log", yscale="log", xlabel=SWEEPS[name].xlabel, ylabel=ylabel)
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*axes[1].get_legend_handles_labels(), loc="center left", fontsize=8,
               bbox_to_anchor=(0.885, 0.5))
    fig.suptitle(f"sweep: {name} ({SWEEPS[name].text})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _colours(backends: list) -> dict:
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(backends))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {b: cmap(i % cmap.N) for i, b in enumerate(names)}


# -- Markdown ------------------------------------------------------------------------------------
def md_table(headers: list, rows: list) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def sweep_markdown(name: str, rows: list, settings: str) -> str:
    """Forward+backward ms per point and the fitted exponents of one sweep (``settings``: the
    sizes in words, ``sweep_text``)."""
    xs = sorted({r["x"] for r in rows})
    exps = exponents(rows)
    cells = {(r["backend"], r["engine"], r["x"]): r for r in rows}
    body = []
    for key, e in exps.items():
        backend, engine = key.split("/", 1)
        vals = [cells.get((backend, engine, x), {}) for x in xs]
        body.append([backend, engine] + [
            "fail" if "error" in v or not v else _fmt(v["forward_backward_s"] * 1e3, ".1f")
            for v in vals] + [_fmt(e["forward"]), _fmt(e["forward_backward"]),
                              _fmt(e["forward_backward_upper"]),
                              _fmt(e.get("forward_backward_weights")), _fmt(e["alloc_peak"])])
    headers = ["backend", "engine"] + [f"{x:,}" for x in xs] + [
        "k fwd", "k f+b", "k f+b (upper half)", "k f+b vs weights (upper half)", "k alloc"]
    failures = sorted({f"{r['backend']}/{r['engine']}: {r['error']}" for r in rows
                       if "error" in r and not r["error"].startswith("skipped")})
    text = [f"### Sweep: {name}", "", f"{SWEEPS[name].text}; x = {SWEEPS[name].xlabel}. "
            f"{settings}. Cells: forward+backward ms. k: fitted growth exponent (time ~ x^k) "
            "over all points; upper half: over the larger half of the points, where fixed "
            "per-call costs matter least; vs weights: of time against the input network's number "
            "of weights (edges), over the same points (1 = linear in the network's size); "
            "k alloc: of the allocation peak of one forward+backward step.", "",
            md_table(headers, body)]
    if failures:
        text += ["", "Failed: " + "; ".join(failures)]
    return "\n".join(text)


def rows_markdown(rows: list) -> str:
    """The default table (one workload, every backend and engine) in Markdown, then
    ``engine_ratios`` as a list."""
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["backend"], r["engine"], f"failed: {r['error']}"] + [""] * 6)
            continue
        body.append([r["backend"], r["engine"], f"{r['trainable']:,}",
                     _fmt(r["forward_s"] * 1e3, ".1f"), _fmt(r["forward_backward_s"] * 1e3, ".1f"),
                     _fmt(r["forward_backward_graphs_per_s"], ".0f"),
                     _fmt(r["peak_rss_mib"], ".0f"), _fmt(r.get("alloc_peak_mib"), ".1f"),
                     _fmt(r.get("achieved_gflops"), ".2f")])
    ratios = engine_ratios(rows)
    return md_table(["backend", "engine", "params", "fwd ms", "f+b ms", "graphs/s (f+b)",
                     "peak RSS MiB", "alloc peak MiB", "GFLOP/s (f+b)"], body) + (
        "\n\n" + "\n".join(f"- {line}" for line in ratios) if ratios else "")


def converters_markdown(result: dict) -> str:
    """Converter times per network and the SIREN-fitting throughput (``run_converters``)."""
    body = []
    for r in result["converters"]:
        if "error" in r:
            body.append([r["workload"], f"failed: {r['error']}"] + [""] * 6)
            continue
        body.append([r["workload"], f"{r['params']:,}", f"{r['nodes']:,}", f"{r['edges']:,}",
                     _fmt(r["to_graph_s"] * 1e3, ".1f"), _fmt(r["to_module_s"] * 1e3, ".1f"),
                     "yes" if r["round_trip_exact"] else "NO", _fmt(r["peak_rss_mib"], ".0f")])
    text = [md_table(["network", "params", "nodes", "edges", "to_graph ms", "to_module ms",
                      "exact round trip", "peak RSS MiB"], body), ""]
    f = result["siren_fit"]
    if "error" in f:
        text.append(f"SIREN fitting failed: {f['error']}")
    else:
        text.append(f"SIREN fitting (`fit_sirens`, 2-32-32-1, {f['image']} images, batch "
                    f"{f['batch']}, **{f['steps']} Adam steps**, {f['threads']} threads): "
                    f"{f['seconds']:.2f} s, **{f['sirens_per_s']:.1f} SIRENs/s** at "
                    f"{f['steps']} steps ({f['siren_steps_per_s']:.0f} SIREN-steps/s; "
                    f"{f['s_per_siren_200_steps']:.2f} s per SIREN at the data set's 200 steps, "
                    f"extrapolated linearly); peak RSS {f['peak_rss_mib']:.0f} MiB.")
    return "\n".join(text)


def efficiency_markdown(eff: dict) -> str:
    """The matmul peak and the dense step's fraction of it (``run_efficiency``)."""
    peak, step = eff["matmul"], eff["scalegmn_dense"]
    if "fraction" not in eff:
        return f"Efficiency measurement failed: {peak.get('error') or step.get('error')}"
    return (f"float32 `torch.mm` {peak['n']}x{peak['n']} ({peak['threads']} threads, "
            f"{peak['device']}): **{peak['gflops']:.1f} GFLOP/s** (the machine's matmul peak "
            f"here). Dense ScaleGMN forward+backward on {describe(step['workload'])} (batch "
            f"{step['batch']}, hidden {step['hidden']}, {step['layers']} layers): "
            f"{step['flops_forward_backward'] / 1e9:.2f} GFLOP counted by `FlopCounterMode` in "
            f"{step['forward_backward_s'] * 1e3:.1f} ms = **{step['achieved_gflops']:.2f} "
            f"GFLOP/s, {100 * eff['fraction']:.1f} % of the matmul peak**.")


def allocator_markdown(check: dict) -> str:
    """Per-step wall, CPU and system time and page faults under each malloc policy
    (``run_allocator_check``), with what the policies do."""
    rows = []
    for name, r in check.items():
        if "error" in r:
            rows.append([name, f"failed: {r['error']}", "", "", "", "", ""])
            continue
        rows.append([name, r["allocator"], _fmt(r["wall_s"] * 1e3, ".0f"),
                     _fmt(r["user_s"] * 1e3, ".0f"), _fmt(r["sys_s"] * 1e3, ".0f"),
                     _fmt(r["page_faults"], ",.0f"), _fmt(r.get("peak_rss_mib"), ".0f")])
    r = next(iter(check.values()))
    head = (f"Dense ScaleGMN forward+backward, {describe(r.get('workload', '?'))}, batch "
            f"{r.get('batch', '?')}, hidden {r.get('hidden', '?')}, {r.get('layers', '?')} "
            "layers (the batch sweep's largest point); per step after warm-up. glibc malloc "
            "returns freed memory to the OS (blocks above its mmap threshold, adaptive but at "
            "most 32 MiB by default, are unmapped; the top of the heap is trimmed), so every "
            "step faults memory in again (system time); `keep` (`scalegmn.allocator`, what "
            "`scalegmn train` and this benchmark use unless told otherwise) serves every block "
            "from the heap and never trims it, so that the process keeps its memory; `lean` "
            "(what the memory-lean mode uses) maps every block of 64 KiB or more on its own and "
            "unmaps it on free: the least memory, the most page faults.")
    return head + "\n\n" + md_table(["malloc", "allocator", "wall ms", "user CPU ms",
                                      "system CPU ms", "page faults", "peak RSS MiB"],
                                     rows) + _keep_gain(check)


def _keep_gain(check: dict) -> str:
    d, k = check.get("default", {}), check.get("keep", {})
    if "wall_s" not in d or "wall_s" not in k:
        return ""
    text = (f"\n\nHere `keep` makes the step {d['wall_s'] / k['wall_s']:.2f}x as fast; system "
            f"time is {100 * d['sys_s'] / (d['user_s'] + d['sys_s']):.0f} % of the default's CPU "
            "time.")
    if "edges" not in d:
        return text
    state_mib = d["edges"] * d["hidden"] * 4 / 2**20
    return text + (f" One float32 edge-state tensor of this batch ({d['edges']:,} edges x hidden "
            f"{d['hidden']}) is {state_mib:.1f} MiB; past 32 MiB glibc maps every such tensor "
            "anew and it is faulted in page by page, so without `keep` the largest points of "
            "the sweeps grow faster than linearly.")


def _load_text(m: dict) -> str:
    if "load_at_start" not in m:
        return ""
    text = f"; 1-minute load average {m['load_at_start']} at the start"
    if m["load_at_start"] > 0.5 * m["usable_cpus"]:
        text += " (other work was running: times are inflated and noisy)"
    if "load_at_end" in m:
        text += f", {m['load_at_end']} at the end (this run included)"
    return text


def machine_markdown(m: dict) -> str:
    """The machine (``probes.machine``) as a Markdown list."""
    lines = [f"- CPU: {m['cpu']} (torch kernels: {m.get('cpu_capability', '?')}); "
             f"{m['logical_cpus']} logical CPUs, {m['usable_cpus']} usable by this process; "
             f"memory {m.get('memory_gib', '?')} GiB",
             f"- torch {m['torch']} ({m['torch_threads']} threads, OMP_WAIT_POLICY="
             f"{m.get('omp_wait_policy', '?')}), Python {m['python']}, {m['platform']}",
             f"- measured {m['date']}" + _load_text(m),
             f"- the whole run took {m['wall_s']:.0f} s" if "wall_s" in m else ""]
    if "gpu" in m:
        lines.insert(1, f"- GPU: {m['gpu']}")
    return "\n".join(line for line in lines if line)


def paper_markdown(paper: list) -> str:
    """ScaleGMN at the published workloads (``run_paper``): one table per workload and the
    dense engine's fraction of the matmul peak."""
    parts = ["ScaleGMN (readout `last_layer`, as the published MNIST-INR config) in one run. "
             "Engines: `sparse` (PyG gathers and `scatter`), `dense` (reshapes and batched "
             "matmuls), both with the fused `ScaleEq`, the pruned last layer and malloc `keep`; "
             "`lean`: dense with `checkpoint=True` (chunked recomputation) and malloc `lean`; "
             "`reference`: a straightforward PyG scatter implementation of the same model "
             "(sparse, textbook `ScaleEq`, every last-layer message, glibc malloc untouched)."]
    for case in paper:
        parts += ["", f"### {describe(case['workload'])}, batch {case['batch_size']}, hidden "
                      f"{case['hidden']}, {case['layers']} layers", "",
                  f"Measured {case.get('measured', '')}.", "", rows_markdown(case["rows"])]
        dense = [r for r in case["rows"] if r.get("engine") == "dense" and "achieved_gflops" in r]
        peak_gflops = case.get("matmul_gflops")
        if peak_gflops and dense:
            parts += ["", f"Dense: {dense[0]['achieved_gflops']:.1f} GFLOP/s = "
                          f"**{100 * dense[0]['achieved_gflops'] / peak_gflops:.0f} % of the "
                          f"float32 2048 x 2048 `torch.mm` peak** measured right after "
                          f"({peak_gflops:.1f} GFLOP/s)."]
    return "\n".join(parts)


def profile_markdown(profiles: dict) -> str:
    """The operator tables of ``run_profiles`` as code blocks, one per backend/engine."""
    parts = ["`torch.profiler` operator table of one forward+backward step after warm-up, "
             "sorted by self time."]
    for key, text in profiles.items():
        parts += ["", f"### {key}", "", "```", text.rstrip("\n"), "```"]
    return "\n".join(parts)


# -- the page ------------------------------------------------------------------------------------
def write_report(results: dict, md_path: PathLike, img_dir: PathLike, command: str) -> Path:
    """Markdown (``md_path``), JSON (``bench.json`` next to the images) and one PNG per sweep
    (``img_dir``) of a results dict; returns ``md_path``."""
    md_path, img_dir = Path(md_path), Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    (img_dir / "bench.json").write_text(json.dumps(results, indent=1, default=str))
    text = ["# Benchmarks", "", f"Generated by `{command}`; every measurement in its own "
            "process (see `scalegmn/bench/`). Times are medians after warm-up; machines are "
            "noisy, so compare within this page only.", "", "## Machine", "",
            machine_markdown(results["machine"])]
    if "failed_backends" in results and results["failed_backends"]:
        text += ["", "Backends left out (they do not build): " + "; ".join(
            f"{k}: {v}" for k, v in results["failed_backends"].items())]
    text += _sections(results, md_path, img_dir)
    md_path.write_text("\n".join(text) + "\n")
    return md_path


def _sections(results: dict, md_path: Path, img_dir: Path) -> list:
    s = results["settings"]
    text = []
    if "table" in results:
        t = s["table"]
        text += ["", "## Backends and engines", "", f"{describe(t['workload'])}, batch "
                 f"{t['batch']}, hidden {t['hidden']}, {t['layers']} layers, up to {t['repeats']} "
                 "repeats. alloc peak: tensor memory of one forward+backward step above the "
                 "parameters and input (memory view); GFLOP/s: counted matmul FLOPs over the "
                 "measured time.", "", rows_markdown(results["table"])]
    if "paper" in results:
        text += ["", "## ScaleGMN at the published workloads", "",
                 paper_markdown(results["paper"])]
    if "efficiency" in results:
        text += ["", "## Efficiency", "", efficiency_markdown(results["efficiency"])]
    if "profile" in results:
        text += ["", "## Operator profiles", "", profile_markdown(results["profile"])]
    if "sweeps" in results:
        text += ["", "## Scaling sweeps", "", _exponent_summary(results["sweeps"])]
        for name, rows in results["sweeps"].items():
            png = img_dir / f"sweep_{name}.png"
            plot_sweep(name, rows, png)
            rel = os.path.relpath(png, md_path.parent)
            text += ["", sweep_markdown(name, rows, s["sweep"]), "", f"![sweep {name}]({rel})"]
    if "allocator" in results:
        text += ["", "## Memory allocator", "", allocator_markdown(results["allocator"])]
    if "converters" in results:
        text += ["", "## Converters and data generation", "",
                 converters_markdown(results["converters"])]
    return text


def _exponent_summary(sweeps: dict) -> str:
    """One table: forward+backward growth exponent per backend/engine and sweep."""
    exps = {name: exponents(rows) for name, rows in sweeps.items()}
    keys = list(dict.fromkeys(k for e in exps.values() for k in e))
    body = [[k] + [_pair(exps[n].get(k, {})) for n in sweeps] for k in keys]
    return ("Growth exponent k of forward+backward time (time ~ x^k, least squares on log-log): "
            "all points of each sweep / the larger half of them. For width, k = 2 is linear in "
            "the number of weights; for edges, k = 1 is.\n\n"
            + md_table(["backend/engine"] + list(sweeps), body))


def _pair(e: dict) -> str:
    nan = float("nan")
    return f"{_fmt(e.get('forward_backward', nan))} / {_fmt(e.get('forward_backward_upper', nan))}"


def write_rows(obj: Union[list, dict], path: PathLike) -> Path:
    """``obj`` (rows, or a results dict) as indented JSON at ``path`` (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str))
    return path

