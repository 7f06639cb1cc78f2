"""Models from files: a factory in a Python file, a bare state dict with its architecture, or a
whole pickled model (only when trusted: unpickling runs code)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

from .archspec import ArchSpec
from .convert import to_graph
from .graph import ParameterGraph, from_state_dict


def load_factory(source: str) -> torch.nn.Module:
    """The module made by ``file.py:NAME`` (``NAME`` a module instance, or a callable returning
    one, defined in the Python file). ``FileNotFoundError`` / ``ValueError`` name the culprit."""
    path, _, name = source.rpartition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file '{path}' (pass file.py:factory, a factory or "
                                f"module in a Python file)")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    if not hasattr(mod, name):
        raise ValueError(f"'{path}' has no '{name}' (pass file.py:NAME with a NAME defined "
                         f"in the file)")
    obj = getattr(mod, name)
    model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"'{source}' gave a {type(model).__name__}, not an nn.Module")
    return model


def _unwrap_state_dict(obj):
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _example(model: torch.nn.Module, shape) -> torch.Tensor:
    """Zeros of shape (2, *shape) for ``model``: token ids (id 0) when its first layer reads
    ids (an ``nn.Embedding``), else floats of the model's dtype."""
    from .trace import _guess_input, _module_dtype, _trace
    dtype = _module_dtype(model)
    try:
        guess = _guess_input(_trace(model), model, dtype)
    except Exception:   # no layer tells its input: the shape is for a float input
        guess = None
    if guess is not None and not guess.is_floating_point():
        return torch.zeros(2, *shape, dtype=guess.dtype)
    return torch.zeros(2, *shape, dtype=dtype)


def load_graph_source(source: str, arch: ArchSpec | None = None, trust: bool = False,
                      example_shape=None) -> ParameterGraph:
    """A ``ParameterGraph`` from ``file.py:factory``, a state dict + ``arch``, or (with
    ``trust``) a whole pickled model."""
    example = torch.zeros(2, *example_shape) if example_shape else None
    if ":" in source and source.rpartition(":")[0].endswith(".py"):
        model = load_factory(source)
        return to_graph(model, _example(model, example_shape) if example_shape else None)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no such file '{source}' (pass file.py:factory, a state dict "
                                f"with --arch, or a pickled model with --trust)")
    try:
        obj = torch.load(source, weights_only=True, map_location="cpu")
    except Exception as e:
        if not trust:
            raise ValueError(
                f"'{source}' is not a plain state dict ({type(e).__name__}). If it is a "
                f"whole pickled model you trust, pass --trust (unpickling runs code)") from e
        obj = torch.load(source, weights_only=False, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        return to_graph(obj, example)
    obj = _unwrap_state_dict(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"'{source}' holds a {type(obj).__name__}, not a state dict")
    if arch is None:
        raise ValueError(f"'{source}' is a state dict; say which architecture with --arch "
                         f"(e.g. --arch 'siren(style=\"dwsnets\", output_offset=0.5)')")
    return from_state_dict(obj, arch)
