"""Run an ``ArchSpec``'s op list. Shared by ``to_module`` and ``functional_forward``.

Parameter-free ops are applied here; ops with parameters (linear, conv, batchnorm, layernorm) are
delegated to a callback, so the same program runs with real ``nn`` modules (bitwise equal to the
original network) or with batched weights from the dense view.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PARAM_OPS = ("linear", "conv", "batchnorm", "layernorm")


def activation(name: str, params, x: torch.Tensor) -> torch.Tensor:
    """``sigma(x)`` for an activation of ``groups.ACTIVATIONS`` (SIREN's w0 is a separate op)."""
    if name == "relu":
        return torch.relu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, params.get("negative_slope", 0.01))
    if name == "tanh":
        return torch.tanh(x)
    if name == "sin":
        return torch.sin(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "gelu":
        return F.gelu(x, approximate=params.get("approximate", "none"))
    if name == "silu":
        return F.silu(x)
    if name == "identity":
        return x
    raise ValueError(f"unknown activation {name!r}")


def _free_op(op, ins):
    kind = op["op"]
    x = ins[0]
    if kind == "act":
        return activation(op["name"], op["params"], x)
    if kind == "pool":
        kw = {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in op["kwargs"].items()}
        return getattr(F, op["fn"])(x, **kw)
    if kind == "flatten":
        return torch.flatten(x, op["start_dim"], op["end_dim"])
    if kind == "mean":
        return x.mean(tuple(op["dim"]), keepdim=op["keepdim"])
    if kind == "scalar":
        c, fn, rev = op["const"], op["fn"], op["reverse"]
        if fn == "mul":
            return c * x if rev else x * c
        if fn == "add":
            return c + x if rev else x + c
        if fn == "sub":
            return c - x if rev else x - c
        return c / x if rev else x / c
    if kind == "add":
        return ins[0] + ins[1]
    if kind == "cat":
        return torch.cat(ins, dim=op["dim"])
    raise ValueError(f"unknown op {kind!r}")


def run(arch, x: torch.Tensor, param_op: Callable, trace: dict | None = None) -> torch.Tensor:
    """Evaluate ``arch`` on ``x``; ``param_op(op, inputs)`` evaluates ops with parameters.

    With ``trace`` (a dict), every intermediate value is stored there by value id."""
    vals = {} if trace is None else trace
    for op in arch.ops:
        kind = op["op"]
        if kind == "input":
            vals[op["out"]] = x
        elif kind == "output":
            return vals[op["in"][0]]
        elif kind in PARAM_OPS:
            vals[op["out"]] = param_op(op, [vals[v] for v in op["in"]])
        else:
            vals[op["out"]] = _free_op(op, [vals[v] for v in op["in"]])
    raise ValueError("ArchSpec has no output op")
