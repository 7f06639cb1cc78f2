"""Run an ``ArchSpec``'s op list. Shared by ``to_module`` and ``functional_forward``.

Parameter-free ops are applied by their rule (``OpRule.apply``); ops with parameters (those with a
``"module"`` key: linear, conv, batchnorm, layernorm, prelu, ...) are delegated to a callback, so
the same program runs with real ``nn`` modules (bitwise equal to the original network) or with
batched weights from the dense view.
"""
from __future__ import annotations

from typing import Callable

import torch

from .ops import rule_for
from .ops.activation import activation  # noqa: F401 (public: sigma(x) by activation name)


def run(arch, x: torch.Tensor, param_op: Callable, trace: dict | None = None) -> torch.Tensor:
    """Evaluate ``arch`` on ``x``; ``param_op(op, inputs)`` evaluates ops with parameters.

    With ``trace`` (a dict), every intermediate value is stored there by value id."""
    vals = {} if trace is None else trace
    for op in arch.ops:
        kind = op["op"]
        if kind == "input":
            vals[op["out"]] = x[0] if isinstance(x, tuple) else x
        elif kind == "extra_input":   # an attention mask passed as a further model input
            vals[op["out"]] = x[op["index"]]
        elif kind == "output":
            return vals[op["in"][0]]
        elif "module" in op or "param" in op:   # a module's, or a bare parameter's op
            vals[op["out"]] = param_op(op, [vals[v] for v in op["in"]])
        else:
            vals[op["out"]] = rule_for(kind).apply(op, [vals[v] for v in op["in"]])
    raise ValueError("ArchSpec has no output op")
