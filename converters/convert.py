"""``to_graph``: any supported ``torch.nn`` model to a ``ParameterGraph``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .graph import ParameterGraph, from_state_dict
from .trace import trace_arch


def to_graph(module: nn.Module, example_input: Optional[torch.Tensor] = None, *,
             allow_nonfinite: bool = False) -> ParameterGraph:
    """The parameter graph of ``module`` (traced in eval mode with ``torch.fx``).

    ``example_input`` (with a batch dimension) is needed only when the input shape cannot be
    inferred (a CNN whose flatten size depends on the image size); a tuple ``(x, mask, ...)``
    for a model whose further inputs are attention masks (docs/design.md 3.8). Raises
    ``UnsupportedLayerError`` for anything the graph cannot represent exactly (also a BatchNorm or
    an active dropout in training mode: call ``module.eval()`` first), and ``ValueError`` for
    NaN/inf parameters unless ``allow_nonfinite``.
    """
    arch = trace_arch(module, example_input)
    return from_state_dict(module.state_dict(), arch, allow_nonfinite=allow_nonfinite)
