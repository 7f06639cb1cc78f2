"""Concatenation along the channel dimension: the value's channels are the node sets of its
operands, in order (no new nodes)."""
from __future__ import annotations

import torch

from .base import OpRule


class Cat(OpRule):
    """``cat``: ``dim``, the channel axis (1, or the last for token-wise data). Each operand keeps its own node sets and their groups; a node set may
    appear once (a neuron feeds a layer through one edge)."""

    kind = "cat"
    functions = (torch.cat,)
    doc = "concatenation along the channel dimension"

    def trace_function(self, t, node, fn, args, kwargs, name):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        vals = [t.tensor_arg(node, x) for x in tensors]
        rank = vals[0].rank
        cdim = vals[0].cdim
        if (cdim is None or dim % rank != cdim or any(v.flat is not None for v in vals)
                or any(v.caxes != vals[0].caxes for v in vals)):
            t.fail(node, "cat", "only concatenation along the channel dimension is supported")
        self.check_distinct(t, node, vals)
        vid = t.new_vid()
        t.ops.append({"op": "cat", "in": [v.vid for v in vals], "out": vid, "dim": cdim})
        t.vals[node] = t.value(vid, [p for v in vals for p in v.parts],
                               sum(v.chan for v in vals), rank, None, (cdim,))

    def check_distinct(self, t, node, vals) -> None:
        """Refuse a node set that appears twice among the operands ``vals``: ``cat([h, h])``,
        ``cat([h, relu(h)])``, ``cat([cat([h, g]), h])``, ... (a neuron feeds a layer through one
        edge, so the graph cannot represent it)."""
        seen = set()
        for p in (p for v in vals for p in v.parts):
            if p in seen:
                t.fail(node, "cat", f"the neurons of '{t.names[p]}' appear twice in one "
                                    f"concatenation; a neuron feeds a layer through one edge, "
                                    f"so the graph cannot represent it (concatenate distinct "
                                    f"layers)")
            seen.add(p)

    def out_parts(self, op, parts):
        return [ns for v in op["in"] for ns in parts[v]]

    def constrain(self, op, s):
        for v in op["in"]:
            s.allow[v] &= s.allow[op["out"]]

    def apply(self, op, ins):
        return torch.cat(ins, dim=op["dim"])
