"""Residual additions ``a + b`` of two layers' values, and the arithmetic fx forms.

The sum is a new node set with two ``residual`` edges per node (value 1, one from each operand).
``a + b`` keeps the function under a factor only if both operands and the sum take the same
factor at each position (``q a + q b = q (a + b)``) and the same permutation: the three node
sets are *tied*."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .base import Edges, OpRule

_KIND = {operator.add: "add", operator.iadd: "add", torch.add: "add",
         operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
         operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
         operator.truediv: "div", torch.div: "div"}
_METHODS = {"add": operator.add, "add_": operator.add, "mul": operator.mul, "sub": operator.sub,
            "div": operator.truediv}


class Add(OpRule):
    """``add``: the sum of two values of single node sets; creates the residual sum node set.
    Also reads every binary arithmetic form (``+ - * /``, ``torch.add``, ``x.add_``, ...):
    tensor + tensor is a residual, tensor with a Python number a ``scalar`` op."""

    kind = "add"
    creates_nodes = True
    functions = tuple(_KIND)
    methods = tuple(_METHODS)
    doc = "two values of single node sets; creates the residual sum node set"

    def method_function(self, name):
        return _METHODS[name]

    def trace_function(self, t, node, fn, args, kwargs, name):
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            t.fail(node, str(fn), "only binary arithmetic without alpha is supported")
        a, b = args
        ta = isinstance(a, fx.Node) and t.vals.get(a) is not None
        tb = isinstance(b, fx.Node) and t.vals.get(b) is not None
        kind = _KIND[fn]
        if ta and tb:
            if kind == "mul":      # a product of two branches (gating, SwiGLU)
                return t.rules["mul"].trace_product(t, node, a, b)
            if kind != "add":
                t.fail(node, kind, "only additions (residuals) and products of two tensors are "
                                   "supported")
            va, vb = t.vals[a], t.vals[b]
            sa, sb = t.single_set(node, "add", va), t.single_set(node, "add", vb)
            if sa == sb:
                t.fail(node, "add", "adding a layer to itself is unsupported")
            if t.shape(a) != t.shape(b):
                t.fail(node, "add", "broadcasting additions are unsupported")
            if (va.caxes, va.csplit) != (vb.caxes, vb.csplit):
                t.fail(node, "add", f"the operands' channels lie on different axes "
                                    f"({list(va.caxes)} and {list(vb.caxes)})")
            t.new_nodeset(node, {"op": "add"}, [va, vb], va.chan, f"add:{node.name}")
            return
        if not (ta or tb):
            from .axes import size_arith
            if size_arith(t, node, args):    # sizes for a reshape: C // heads, T * 2, ...
                return
            t.fail(node, kind, "arithmetic on non-tensors")
        x = t.vals[a] if ta else t.vals[b]
        t.rules["scalar"].trace_constant(t, node, kind, x, b if ta else a, not ta)

    def constrain(self, op, s):
        for v in op["in"]:
            s.allow[v] &= s.allow[op["out"]]

    def couple(self, op, s):
        for m in (s.parts[v][0] for v in op["in"]):
            s.align.union(m, op["ns"])
            s.tie.union(m, op["ns"])

    def edges(self, op, lay):
        size = lay.sizes[op["ns"]]
        a, b = (lay.offsets[lay.parts[v][0]] for v in op["in"])
        src = torch.stack([a + torch.arange(size), b + torch.arange(size)], 1)
        return Edges(src, (), None, "residual", (size,))

    def apply(self, op, ins):
        return ins[0] + ins[1]
