"""Elementwise activations: one op kind ``act``, one table row per activation.

A row says how the activation is written (modules, functions, ``Tensor`` methods), its
parameters, how to compute it, and which factors ``q`` of its input it lets through:
``sigma(q z) = q' sigma(z)`` for every ``z`` with ``q'`` depending only on ``q``, and the consumer
of ``sigma``'s output absorbs ``q'``. For the graph's group vocabulary the activation must be
*equivariant*: ``q' = q`` (the neuron's factor travels through unchanged). Derivations in
docs/design.md ("Symmetry of each op kind").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.fx as fx

from ..groups import ANY, NEG, ONE, POS
from .base import OpRule, bind


def _clamp_bits(p: dict) -> int:
    lo, hi = p.get("min"), p.get("max")
    if (lo == 0 and hi is None) or (lo is None and hi == 0):
        return POS              # max(z, 0) and min(z, 0) are positively homogeneous
    if lo is not None and hi is not None and lo == -hi:
        return NEG              # clamp(-z, -c, c) = -clamp(z, -c, c): odd
    return ONE


def _hardtanh_bits(p: dict) -> int:
    return NEG if p["min_val"] == -p["max_val"] else ONE


@dataclass(frozen=True)
class Activation:
    """One activation: its name (in ``groups.ACTIVATIONS``), how it is computed, its parameters
    (name -> default, in positional order after the input), the fx forms it is read from, and the
    factor bits it lets through (``bits(params)``)."""
    name: str
    fn: Callable
    bits: Callable[[dict], int]
    defaults: dict = field(default_factory=dict)
    modules: tuple = ()
    functions: dict = field(default_factory=dict)  # callable -> positional names (None: default)
    methods: dict = field(default_factory=dict)    # method name -> positional names, fixed params

    def apply(self, x: torch.Tensor, params) -> torch.Tensor:
        return self.fn(x, **{k: params[k] for k in self.defaults})


def _const(b: int) -> Callable[[dict], int]:
    return lambda p: b


def _table() -> dict:
    rows = [
        Activation("identity", lambda x: x, _const(ANY)),
        Activation("relu", lambda x: torch.relu(x), _const(POS), {}, (nn.ReLU,),
                   {torch.relu: None, F.relu: None}, {"relu": None, "relu_": None}),
        Activation("leaky_relu", lambda x, negative_slope: F.leaky_relu(x, negative_slope),
                   _const(POS), {"negative_slope": 0.01}, (nn.LeakyReLU,), {F.leaky_relu: None}),
        Activation("tanh", lambda x: torch.tanh(x), _const(NEG), {}, (nn.Tanh,),
                   {torch.tanh: None, F.tanh: None}, {"tanh": None, "tanh_": None}),
        Activation("sin", lambda x: torch.sin(x), _const(NEG), {}, (),
                   {torch.sin: None}, {"sin": None, "sin_": None}),
        Activation("sigmoid", lambda x: torch.sigmoid(x), _const(ONE), {}, (nn.Sigmoid,),
                   {torch.sigmoid: None, F.sigmoid: None}, {"sigmoid": None, "sigmoid_": None}),
        Activation("gelu", lambda x, approximate: F.gelu(x, approximate=approximate),
                   _const(ONE), {"approximate": "none"}, (nn.GELU,), {F.gelu: None}),
        Activation("silu", lambda x: F.silu(x), _const(ONE), {}, (nn.SiLU,), {F.silu: None}),
        # -- no factor commutes (saturation, an offset or a curvature at 0) ------------------
        Activation("relu6", lambda x: F.relu6(x), _const(ONE), {}, (nn.ReLU6,),
                   {F.relu6: None}),
        Activation("hardtanh", lambda x, min_val, max_val: F.hardtanh(x, min_val, max_val),
                   _hardtanh_bits, {"min_val": -1.0, "max_val": 1.0}, (nn.Hardtanh,),
                   {F.hardtanh: None}),
        Activation("elu", lambda x, alpha: F.elu(x, alpha), _const(ONE), {"alpha": 1.0},
                   (nn.ELU,), {F.elu: None}),
        Activation("selu", lambda x: F.selu(x), _const(ONE), {}, (nn.SELU,),
                   {F.selu: None, torch.selu: None}),
        Activation("celu", lambda x, alpha: F.celu(x, alpha), _const(ONE), {"alpha": 1.0},
                   (nn.CELU,), {F.celu: None, torch.celu: None}),
        Activation("softplus", lambda x, beta, threshold: F.softplus(x, beta, threshold),
                   _const(ONE), {"beta": 1.0, "threshold": 20.0}, (nn.Softplus,),
                   {F.softplus: None}),
        Activation("hardswish", lambda x: F.hardswish(x), _const(ONE), {}, (nn.Hardswish,),
                   {F.hardswish: None}),
        Activation("hardsigmoid", lambda x: F.hardsigmoid(x), _const(ONE), {},
                   (nn.Hardsigmoid,), {F.hardsigmoid: None}),
        Activation("mish", lambda x: F.mish(x), _const(ONE), {}, (nn.Mish,), {F.mish: None}),
        Activation("logsigmoid", lambda x: F.logsigmoid(x), _const(ONE), {}, (nn.LogSigmoid,),
                   {F.logsigmoid: None}),
        Activation("clamp", lambda x, min, max: torch.clamp(x, min, max), _clamp_bits,
                   {"min": None, "max": None}, (),
                   {torch.clamp: None, torch.clip: None, torch.clamp_min: ("min",),
                    torch.clamp_max: ("max",)},
                   {"clamp": None, "clamp_": None, "clip": None, "clip_": None,
                    "clamp_min": ("min",), "clamp_min_": ("min",), "clamp_max": ("max",),
                    "clamp_max_": ("max",)}),
        Activation("abs", lambda x: torch.abs(x), _const(POS), {}, (),
                   {torch.abs: None}, {"abs": None, "abs_": None}),
        # eval mode only (trace.py refuses a training-mode RReLU): the fixed slope
        # (lower + upper) / 2, positively homogeneous like LeakyReLU
        Activation("rrelu", lambda x, lower, upper: F.rrelu(x, lower, upper, False),
                   _const(POS), {"lower": 1.0 / 8, "upper": 1.0 / 3}, (nn.RReLU,)),
    ]
    return {r.name: r for r in rows}


#: activation name -> ``Activation``
ACTS = _table()


def activation(name: str, params, x: torch.Tensor) -> torch.Tensor:
    """``sigma(x)`` for the activation ``name`` with ``params`` (SIREN's w0 is a separate op)."""
    row = ACTS.get(name)
    if row is None:
        raise ValueError(f"unknown activation {name!r}")
    return row.apply(x, params)


def activation_bits(name: str, params) -> int:
    """The factor bits activation ``name`` with ``params`` lets through."""
    return ACTS[name].bits(params)


_MODULE_ROW = {t: r for r in ACTS.values() for t in r.modules}


class Act(OpRule):
    """``act``: an elementwise activation ``name`` in ``groups.ACTIVATIONS`` with ``params``.
    Lets through the factors it commutes with (``activation_bits``) and passes on its consumers'
    constraints; the neuron's ``act`` field names it."""

    kind = "act"
    modules = tuple(_MODULE_ROW)
    doc = "``name`` in ``groups.ACTIVATIONS`` with ``params``"

    def matches_function(self, fn, name):
        return any(fn is f for r in ACTS.values() for f in r.functions)

    def matches_method(self, name):
        return any(name in r.methods for r in ACTS.values())

    @staticmethod
    def _check_inplace(t, node, inplace, what: str) -> None:
        """An in-place activation changes its input for every other reader too, which the graph
        (readers see the pre-activation) would not: refused unless the input has no other."""
        src = node.args[0] if node.args else None
        if inplace and isinstance(src, fx.Node) and len(src.users) > 1:
            t.fail(node, what, "in-place op on a tensor that is used elsewhere")

    def _params(self, t, node, row: Activation, args, kwargs, names=None) -> dict:
        names = tuple(row.defaults) + ("inplace",) if names is None else names
        try:
            params = bind(tuple(args), dict(kwargs), names, {**row.defaults, "inplace": False},
                          ignore=())
        except TypeError as e:
            t.fail(node, row.name, str(e))
        self._check_inplace(t, node, params.pop("inplace", False),
                            getattr(node.target, "__name__", str(node.target)))
        for k, v in params.items():
            if isinstance(v, fx.Node):
                t.fail(node, row.name, f"'{k}' must be a Python constant, not a traced tensor")
            if isinstance(v, bool) or not (v is None or isinstance(v, (int, float, str))):
                t.fail(node, row.name, f"'{k}' = {v!r} is not a Python number")
            if isinstance(v, int):
                params[k] = float(v)
        return params

    def _emit(self, t, node, row, params, x):
        t.emit(node, {"op": "act", "name": row.name, "params": params}, x)

    def trace_module(self, t, node, m, x):
        row = _MODULE_ROW[type(m)]
        self._check_inplace(t, node, getattr(m, "inplace", False), type(m).__name__)
        params = {k: getattr(m, k) for k in row.defaults}
        params = {k: float(v) if isinstance(v, (int, float)) else v for k, v in params.items()}
        self._emit(t, node, row, params, x)

    def trace_function(self, t, node, fn, args, kwargs, name):
        row = next(r for r in ACTS.values() if any(fn is f for f in r.functions))
        names = next(v for f, v in row.functions.items() if f is fn)
        x = t.tensor_arg(node, args[0])
        self._emit(t, node, row, self._params(t, node, row, args[1:], kwargs, names), x)

    def trace_method(self, t, node, name):
        row = next(r for r in ACTS.values() if name in r.methods)
        x = t.tensor_arg(node, node.args[0])
        params = self._params(t, node, row, node.args[1:], node.kwargs, row.methods[name])
        self._emit(t, node, row, params, x)

    def constrain(self, op, s):
        i = op["in"][0]
        s.restrict(i, activation_bits(op["name"], op["params"]) & s.allow[op["out"]])
        s.act_of.setdefault(i, (op["name"], dict(op.get("params", {}))))

    def apply(self, op, ins):
        return activation(op["name"], op["params"], ins[0])
