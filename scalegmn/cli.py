"""The ``scalegmn`` command line: ``scalegmn convert``, ``scalegmn quickstart``."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

import converters
from converters.draw import GraphTooLargeError, draw_graph


# -- loading a model -------------------------------------------------------------------------
def _load_factory(source: str):
    path, _, name = source.rpartition(":")
    if not os.path.isfile(path):
        raise SystemExit(f"error: no such file '{path}'")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    if not hasattr(mod, name):
        raise SystemExit(f"error: '{path}' has no '{name}'")
    obj = getattr(mod, name)
    model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"error: '{source}' gave a {type(model).__name__}, not an nn.Module")
    return model


def parse_arch(text: str) -> converters.ArchSpec:
    """``--arch`` value: a JSON file, or a builder call such as ``siren(style="nfn")``."""
    if os.path.isfile(text):
        with open(text) as fh:
            return converters.ArchSpec.from_json(fh.read())
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise SystemExit(f"error: cannot parse --arch {text!r}: {e}") from e
    if isinstance(tree, ast.Name):
        name, kwargs = tree.id, {}
    elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and not tree.args:
        name = tree.func.id
        try:
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
        except ValueError as e:
            raise SystemExit(f"error: --arch arguments must be literals: {text!r}") from e
    else:
        raise SystemExit(f"error: --arch must look like mlp(widths=[2, 32, 1]) or a JSON file, "
                         f"got {text!r}")
    builders = {"mlp": converters.arch.mlp, "siren": converters.arch.siren,
                "cnn_zoo": converters.arch.cnn_zoo}
    if name not in builders:
        raise SystemExit(f"error: unknown arch builder {name!r}; choose from {sorted(builders)}")
    try:
        return builders[name](**kwargs)
    except TypeError as e:
        raise SystemExit(f"error: --arch {text!r}: {e}") from e


def _unwrap_state_dict(obj):
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def load_graph_source(source: str, arch=None, trust=False, example_shape=None):
    """A ``ParameterGraph`` from ``file.py:factory``, a state dict + ``arch``, or (with
    ``trust``) a whole pickled model."""
    example = torch.zeros(2, *example_shape) if example_shape else None
    if ":" in source and source.rpartition(":")[0].endswith(".py"):
        model = _load_factory(source)
        return converters.to_graph(model, example.to(next(model.parameters()).dtype)
                                   if example is not None else None)
    if not os.path.isfile(source):
        raise SystemExit(f"error: no such file '{source}'")
    try:
        obj = torch.load(source, weights_only=True, map_location="cpu")
    except Exception as e:
        if not trust:
            raise SystemExit(
                f"error: '{source}' is not a plain state dict ({type(e).__name__}). If it is a "
                f"whole pickled model you trust, pass --trust (unpickling runs code)") from e
        obj = torch.load(source, weights_only=False, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        return converters.to_graph(obj, example)
    obj = _unwrap_state_dict(obj)
    if not isinstance(obj, dict):
        raise SystemExit(f"error: '{source}' holds a {type(obj).__name__}, not a state dict")
    if arch is None:
        raise SystemExit(f"error: '{source}' is a state dict; say which architecture with --arch "
                         f"(e.g. --arch 'siren(style=\"dwsnets\", output_offset=0.5)')")
    return converters.from_state_dict(obj, arch)


# -- reporting -------------------------------------------------------------------------------
def summarise(graph) -> str:
    arch = graph.arch
    groups = Counter(converters.GROUPS[int(g)] for g in graph.group)
    etypes = Counter(converters.EDGE_TYPES[int(t)] for t in graph.edge_type)
    n_params = int(graph.edge_mask[graph.edge_type != 1].sum())
    lines = [arch.summary(),
             f"nodes: {graph.num_nodes}   edges: {graph.num_edges} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(etypes.items()))})   "
             f"edge features: {graph.edge_attr.shape[1]}   node features: "
             f"{', '.join(arch.node_features)}",
             "symmetry groups: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())),
             f"weight entries on edges: {n_params}"]
    return "\n".join(lines)


def cmd_convert(args):
    arch = parse_arch(args.arch) if args.arch else None
    shape = [int(s) for s in args.example_shape.split(",")] if args.example_shape else None
    try:
        graph = load_graph_source(args.source, arch, args.trust, shape)
    except (converters.UnsupportedLayerError, KeyError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    print(summarise(graph))
    if args.output:
        converters.save_graph(args.output, graph)
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


def cmd_quickstart(args):
    from .quickstart import run
    return run(args.out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="scalegmn", description=__doc__)
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
    q = sub.add_parser("quickstart", help="the main job end to end on built-in data")
    q.add_argument("--out", default="quickstart_out")
    q.set_defaults(fn=cmd_quickstart)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
