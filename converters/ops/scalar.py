"""Arithmetic with a Python constant: ``x * c``, ``x / c``, ``c * x``, ``x + c``, ``c - x``, ...
(read by the arithmetic forms of ``converters.ops.residual``)."""
from __future__ import annotations

from ..groups import ONE
from .base import OpRule


class Scalar(OpRule):
    """``scalar``: ``fn`` in mul/div/add/sub with ``const`` and ``reverse`` (const on the left).
    A product ``c x`` (or ``x / c``) is linear: every factor of ``x`` passes, and a following sine
    records ``c`` as its ``w0``; a shift ``x + c`` (or ``c / x``) commutes with no factor."""

    kind = "scalar"
    doc = "``fn`` in mul/div/add/sub with ``const`` and ``reverse`` (const on the left)"

    def trace_constant(self, t, node, kind: str, x, const, reverse: bool) -> None:
        if not isinstance(const, (int, float)) or isinstance(const, bool):
            t.fail(node, kind, f"only Python numbers may be combined with a layer, got "
                               f"{type(const).__name__}")
        if x.flat is not None and kind in ("add", "sub"):
            t.fail(node, kind, "adding constants to a flattened map is unsupported")
        t.emit(node, {"op": "scalar", "fn": kind, "const": float(const), "reverse": reverse}, x)

    def constrain(self, op, s):
        i, o = op["in"][0], op["out"]
        if op["fn"] in ("mul", "div") and not (op["fn"] == "div" and op["reverse"]):
            s.allow[i] &= s.allow[o]
            if o in s.act_of:  # fold a constant factor into the activation (SIREN w0)
                name, params = s.act_of[o]
                if name == "sin" and op["fn"] == "mul":
                    params = {**params, "w0": params.get("w0", 1.0) * op["const"]}
                s.act_of.setdefault(i, (name, params))
        else:
            s.restrict(i, ONE)

    def apply(self, op, ins):
        x = ins[0]
        c, fn, rev = op["const"], op["fn"], op["reverse"]
        if fn == "mul":
            return c * x if rev else x * c
        if fn == "add":
            return c + x if rev else x + c
        if fn == "sub":
            return c - x if rev else x - c
        return c / x if rev else x / c
