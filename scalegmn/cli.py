"""The ``scalegmn`` command line: ``scalegmn convert``, ``scalegmn quickstart``, ...

torch and the toolkit's heavy modules are imported inside the subcommands, so ``--help`` and
argument errors answer at once. ``main`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment
already sets it (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

DESCRIPTION = ("ScaleGMN toolkit: turn torch.nn models into parameter graphs, make weight-space "
               "data sets, train and evaluate metanetworks on them. New here? Run 'scalegmn "
               "quickstart'. Each command has its own --help.")


# -- reporting -------------------------------------------------------------------------------
def summarise(graph) -> str:
    import torch

    import converters
    import converters.groups
    arch = graph.arch
    groups = Counter(converters.GROUPS[int(g)] for g in graph.group)
    etypes = Counter(converters.EDGE_TYPES[int(t)] for t in graph.edge_type)
    # structural edges (residual, recurrent state: constant 1) hold no parameter
    structural = torch.tensor([converters.EDGE_TYPES.index(t)
                               for t in converters.groups.STRUCTURAL_EDGE_TYPES])
    n_params = int(graph.edge_mask[~torch.isin(graph.edge_type, structural)].sum())
    lines = [arch.summary(),
             f"nodes: {graph.num_nodes}   edges: {graph.num_edges} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(etypes.items()))})   "
             f"edge features: {graph.edge_attr.shape[1]}   node features: "
             f"{', '.join(arch.node_features)}",
             "symmetry groups: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())),
             f"weight entries on edges: {n_params}"]
    return "\n".join(lines)


def cmd_convert(args):
    import converters
    from converters.draw import GraphTooLargeError, draw_graph
    from converters.load import load_graph_source
    arch = converters.arch.parse(args.arch) if args.arch else None
    shape = [int(s) for s in args.example_shape.split(",")] if args.example_shape else None
    try:
        graph = load_graph_source(args.source, arch, args.trust, shape)
    except (converters.UnsupportedLayerError, KeyError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    print(summarise(graph))
    if args.output:
        converters.save_graph(graph, args.output)
        print(f"wrote {args.output}")
    if args.arch_out:
        Path(args.arch_out).write_text(json.dumps(graph.arch.to_dict(), indent=1))
        print(f"wrote {args.arch_out}")
    if args.draw:
        try:
            draw_graph(graph, args.draw, max_nodes=args.max_draw_nodes)
            print(f"drew {args.draw}")
        except GraphTooLargeError as e:
            print(f"not drawn: {e}")
    return 0


def cmd_simulate(args):
    import torch

    import converters
    from converters.load import load_graph_source

    from . import simulate
    torch.manual_seed(args.seed)
    if args.arch:
        widths = [int(w) for w in args.arch.split("-")]
        model = converters.models.mlp(widths, args.activation, w0=args.w0)
    elif args.model:
        graph = load_graph_source(args.model, None, args.trust,
                                  [int(s) for s in args.example_shape.split(",")]
                                  if args.example_shape else None)
        model = converters.to_module(graph)
    else:
        raise SystemExit("error: give MODEL_FILE (file.py:factory or a pickled model with "
                         "--trust) or --arch 2-32-32-1")
    dtype = getattr(torch, args.dtype)
    model = model.to(dtype)
    if args.inputs_file:
        inputs = torch.load(args.inputs_file, weights_only=True)
        if not isinstance(inputs, torch.Tensor):
            raise SystemExit(f"error: '{args.inputs_file}' must hold one tensor of inputs")
    else:
        probe = converters.to_graph(model) if args.arch else graph
        shape = tuple(probe.arch.input["shape"])
        inputs = torch.randn(args.inputs, *shape, dtype=dtype)
    try:
        report = simulate.check(model, inputs.to(dtype), backward=args.backward, dtype=dtype,
                                fitted=args.fitted, device=args.device)
    except (ValueError, converters.UnsupportedLayerError) as e:
        raise SystemExit(f"error: {e}") from e
    print(report)
    if not report.passed(args.tol):
        print(f"FAILED: an error exceeds the tolerance {args.tol:g}")
        return 1
    print(f"passed (tolerance {args.tol:g})")
    return 0


def cmd_data(args):
    from .data import cli as data_cli
    return data_cli.run(args)


def cmd_train(args):
    from .train import load_config
    if args.config == "list":
        from .train.keys import list_lines
        print("\n".join(list_lines()))
        return 0
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.dtype:
        overrides.append(f"train.dtype={args.dtype}")
    cfg = None
    if args.resume:      # the run's own config; --set may change only RESUMABLE_KEYS
        from .train.config import load_run_config
        cfg = load_run_config(args.out, overrides, args.config)
        if cfg is not None and _rank0():
            print(f"resuming the run in {args.out} with its own config")
    if cfg is None:
        if not args.config:
            raise ValueError(f"nothing to resume in '{args.out}' (no checkpoints/last.pt or "
                             f"config.yaml): pass --config NAME to start a run there")
        cfg = load_config(args.config, overrides)
    if args.show:
        from .train.keys import show
        print(show(cfg, args.config or str(args.out)))
        return 0
    from .train.loop import Runner
    runner = Runner(cfg, args.out, resume=args.resume, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    runner.fit()
    if _rank0():
        print(f"run directory: {args.out} (metrics.jsonl, summary.json, checkpoints/, plots/)")
    return 0


def _rank0() -> bool:
    """Whether this process prints: always, except the ranks > 0 under torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def cmd_eval(args):
    from .train.loop import Runner
    runner = Runner.from_checkpoint(args.checkpoint)
    cfg = runner.cfg
    res = runner.evaluate(runner.data[args.split])
    print(json.dumps({"split": args.split, **res}, indent=1))
    if args.robustness:
        from .train import robustness as R
        rob = R.robustness(runner)
        changes = R.prediction_changes(runner)
        run_dir = runner.out
        R.save(rob, run_dir / "robustness.json")
        R.save(changes, run_dir / "prediction_changes.json")
        R.plot({cfg.model.backend: rob}, runner.task.metric, run_dir / "plots" /
               "robustness.png", chance=R.chance_level(runner))
        print("robustness (test " + runner.task.metric + " under random group actions): "
              + ", ".join(f"{k}: {v:.4f}" for k, v in rob.items()))
        print("test networks whose prediction the actions change: "
              + ", ".join(f"{k}: {100 * v:.1f} %" for k, v in changes.items()))
    return 0


def cmd_report(args):
    from .train.report import report
    print(report(args.runs, args.out))
    return 0


def cmd_bench(args):
    from .bench import main as bench_main
    return bench_main(args.bench_args)


def cmd_benchmark(args):
    from .benchmark.runner import run_suite
    failed = run_suite(args.suite, args.out, only=args.only, dry_run=args.dry_run,
                       data_dir=args.data_dir, results=args.results, quote_in=args.quote_in)
    return 1 if failed else 0


def cmd_quickstart(args):
    from .quickstart import run
    return run(args.out, quick=args.quick, bench_dir=args.benchmark_dir)


def main(argv=None):
    # before torch is imported (its OpenMP pool reads this once): idle threads sleep instead of
    # spinning, which keeps small ops fast when anything else runs; a user's setting wins
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = argparse.ArgumentParser(prog="scalegmn", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert a model or checkpoint to a parameter graph")
    c.add_argument("source", help="file.py:factory, a state dict (.pt) with --arch, or a pickled "
                                  "model with --trust")
    c.add_argument("--arch", help="architecture of a state dict: mlp(...), siren(...), "
                                  "cnn_zoo(...) or an ArchSpec JSON file")
    c.add_argument("--trust", action="store_true",
                   help="allow unpickling a whole model (runs code from the file)")
    c.add_argument("--example-shape", help="input shape without batch, e.g. 3,32,32")
    c.add_argument("-o", "--output", help="write the graph here (load with converters.load_graph)")
    c.add_argument("--arch-out", help="write the ArchSpec JSON here")
    c.add_argument("--draw", help="write a PNG drawing of the graph here")
    c.add_argument("--max-draw-nodes", type=int, default=400)
    c.set_defaults(fn=cmd_convert)
    s = sub.add_parser("simulate", help="check that a constructed ScaleGMN-B reproduces a "
                                        "network's forward and backward pass")
    s.add_argument("model", nargs="?", help="file.py:factory, or a pickled model with --trust")
    s.add_argument("--arch", help="a random MLP instead, e.g. 2-32-32-1")
    s.add_argument("--activation", default="relu",
                   help="activation of --arch: relu, leaky_relu, tanh, sin, gelu, identity")
    s.add_argument("--w0", type=float, default=30.0, help="sine frequency for --activation sin")
    s.add_argument("--inputs", type=int, default=4, help="number of random normal inputs")
    s.add_argument("--inputs-file", help="a .pt file holding a tensor of inputs (n, ...)")
    s.add_argument("--example-shape", help="input shape without batch, for CNNs")
    s.add_argument("--backward", action="store_true", help="also simulate the backward pass")
    s.add_argument("--fitted", action="store_true",
                   help="replace the sigma(z)/z oracle by a fitted MLP (tanh, sine)")
    s.add_argument("--tol", type=float, default=1e-10)
    s.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trust", action="store_true")
    s.add_argument("--device", default="cpu",
                   help="where the constructed network runs: cpu (default), cuda, cuda:1, ...")
    s.set_defaults(fn=cmd_simulate)
    from .data import cli as data_cli
    data_cli.add_parser(sub, cmd_data)
    t = sub.add_parser("train", help="train a metanetwork from a config")
    t.add_argument("--config", help="a shipped config name, a YAML path, or 'list' (names "
                                    "with one-line descriptions); optional with --resume, "
                                    "which uses the run's own config")
    t.add_argument("--show", action="store_true",
                   help="print every config key with its value, default and meaning, and stop")
    t.add_argument("--out", default="runs/run",
                   help="run directory: config.yaml, metrics.jsonl, summary.json, checkpoints/, "
                        "plots/ (default: %(default)s)")
    t.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from checkpoints/last.pt with the run's "
                        "own config; --set may change only train.epochs, train.eval_every, "
                        "train.progress, train.threads, train.device, train.malloc, "
                        "train.deterministic, data.path")
    t.add_argument("--dry-run", action="store_true", help="print the summary and stop")
    t.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (overrides "
                                    "train.device)")
    t.add_argument("--dtype", choices=["float32", "float64"])
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--robustness", action="store_true",
                   help="also evaluate on test sets transformed by random group actions")
    e.set_defaults(fn=cmd_eval)
    r = sub.add_parser("report", help="compare runs: mean, std, standard error per backend")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default=None, help="write the table and a bar plot here")
    r.set_defaults(fn=cmd_report)
    bn = sub.add_parser("bench", help="speed and memory of backends and engines (subprocess "
                                     "per measurement); see scalegmn bench -h", add_help=False)
    bn.add_argument("bench_args", nargs=argparse.REMAINDER)
    bn.set_defaults(fn=cmd_bench)
    q = sub.add_parser("quickstart", help="the main job end to end on built-in data")
    q.add_argument("--out", default="quickstart_out",
                   help="folder for the runs, the table and the plots (default: %(default)s)")
    q.add_argument("--quick", action="store_true", help="a tiny version (for tests)")
    q.add_argument("--benchmark-dir", default="runs/benchmark",
                   help="output folder of 'scalegmn benchmark --suite cpu', whose ScaleGMN "
                        "MNIST-INR figure the result is compared with when present "
                        "(default: %(default)s)")
    q.set_defaults(fn=cmd_quickstart)
    bm = sub.add_parser("benchmark", help="the papers' tasks as suites of training runs "
                                          "(resumable), written up in docs/results.md")
    bm.add_argument("--suite", required=True, choices=["tiny", "cpu", "paper"],
                    help="tiny (a 1-minute check), cpu (about 3 hours on 2 cores), paper "
                         "(the published sizes, for a GPU)")
    bm.add_argument("--out", required=True, help="folder of the run directories (one per run: "
                                                 "TASK/BACKEND/seedN)")
    bm.add_argument("--only", help="run only the runs whose name matches (glob or substring, "
                                   "commas for several; names: see --dry-run)")
    bm.add_argument("--dry-run", action="store_true",
                    help="print the runs, their state and estimated time; train nothing")
    bm.add_argument("--data-dir", help="where the data sets are made and cached (default: "
                                       "$SCALEGMN_CACHE/benchmark)")
    bm.add_argument("--results", default="docs/results.md",
                    help="the results page to write (default: %(default)s; plots go in the "
                         "folder of the same name)")
    bm.add_argument("--quote-in", metavar="README",
                    help="also refresh the overview table quoted in this README between the "
                         "lines '<!-- benchmark-overview:start -->' and "
                         "'<!-- benchmark-overview:end -->' (a README without them is left "
                         "alone)")
    bm.set_defaults(fn=cmd_benchmark)
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["bench"]:      # its own option parser (scalegmn bench -h)
        from .bench import main as bench_main
        return bench_main(raw[1:])
    args = p.parse_args(argv)
    if args.cmd == "train" and not args.config and not args.resume:
        t.error("the following arguments are required: --config (or --resume with the --out "
                "of a run)")
    try:
        return args.fn(args)
    except (ValueError, OSError, ImportError) as e:   # bad input or a missing extra: one line
        if os.environ.get("SCALEGMN_DEBUG"):
            raise
        raise SystemExit(f"error: {' '.join(str(e).split())}") from e


if __name__ == "__main__":
    sys.exit(main())
