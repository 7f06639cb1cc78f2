"""Builders of ``ArchSpec``s for common checkpoints that come without their class.

    >>> spec = converters.arch.siren(style="dwsnets", output_offset=0.5)
    >>> graph = converters.from_state_dict(torch.load("model_final.pth"), spec)
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import models
from .archspec import ArchSpec
from .trace import trace_arch


def _spec(module, example, dtype, **meta) -> ArchSpec:
    module = module.to(dtype)
    spec = trace_arch(module, example.to(dtype))
    return spec.with_meta(**meta) if meta else spec


def mlp(widths: Sequence[int], activation: str = "relu", bias: bool = True,
        dtype: torch.dtype = torch.float32) -> ArchSpec:
    """An MLP ``widths[0] -> ... -> widths[-1]`` with ``activation`` between layers
    (``nn.Sequential`` keys ``0.weight``, ``0.bias``, ``2.weight``, ...)."""
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError("an MLP needs at least an input and an output width")
    return _spec(models.mlp(widths, activation, bias), torch.zeros(1, widths[0]), dtype)


def siren(widths: Sequence[int] = (2, 32, 32, 1), w0: float = 30.0, output_offset: float = 0.0,
          style: str = "dwsnets", dtype: torch.dtype = torch.float32) -> ArchSpec:
    """A SIREN with sine hidden layers ``sin(w0 (W x + b))`` and a linear last layer.

    ``style="dwsnets"`` (keys ``seq.{i}.*``; the DWSNets INR data uses ``output_offset=0.5``) or
    ``"nfn"`` (keys ``net.{i}.linear.*``, last ``net.{L-1}.*``; no offset). The spec is the one
    ``to_graph(models.Siren(...))`` gives (same ``hash``): ``w0`` is in the sine node sets'
    ``act_params``, the offset is a ``scalar`` add op, the style shows in the module paths.
    """
    module = models.Siren(list(widths), w0, output_offset, style)
    return _spec(module, torch.zeros(1, widths[0]), dtype)


def cnn_zoo(stride: int = 2, activation: str = "relu", in_channels: int = 1, channels: int = 16,
            n_layers: int = 3, kernel: int = 3, n_classes: int = 10,
            dtype: torch.dtype = torch.float32) -> ArchSpec:
    """The Small CNN Zoo network (see ``converters.models.cnn_zoo``; keys ``0.weight``, ...)."""
    module = models.cnn_zoo(stride, activation, in_channels, channels, n_layers, kernel,
                            n_classes)
    size = 1 + (kernel - 1)
    for _ in range(n_layers):
        size = (size - 1) * stride + kernel
    return _spec(module, torch.zeros(1, in_channels, size, size), dtype)


BUILDERS = ("mlp", "siren", "cnn_zoo")


def parse(text: str) -> ArchSpec:
    """An ``ArchSpec`` from text: a JSON file written by ``ArchSpec.to_json``, or a builder call
    with literal arguments such as ``siren(style="nfn")`` or ``mlp(widths=[2, 32, 1])`` (one of
    ``BUILDERS``). ``ValueError`` says what is wrong with the text."""
    import ast
    import os
    if os.path.isfile(text):
        with open(text) as fh:
            return ArchSpec.from_json(fh.read())
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse the architecture {text!r}: {e}") from e
    if isinstance(tree, ast.Name):
        name, kwargs = tree.id, {}
    elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and not tree.args:
        name = tree.func.id
        try:
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
        except ValueError as e:
            raise ValueError(f"architecture arguments must be literals: {text!r}") from e
    else:
        raise ValueError(f"an architecture must look like mlp(widths=[2, 32, 1]) or be a JSON "
                         f"file, got {text!r}")
    if name not in BUILDERS:
        raise ValueError(f"unknown arch builder {name!r}; choose from {sorted(BUILDERS)}")
    try:
        return globals()[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"architecture {text!r}: {e}") from e
