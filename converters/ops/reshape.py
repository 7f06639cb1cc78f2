"""``flatten`` (``nn.Flatten``, ``torch.flatten``, ``x.flatten``, ``x.view(x.size(0), -1)``,
``reshape``): merging spatial or token dimensions, merging split channel axes back (heads), or
a whole ``(C, *S)`` map into features for a ``Linear`` (whose edges then hold ``S`` blocks). Other
reshapes are ``view`` ops (``converters.ops.axes``). No new nodes; every factor passes."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import OpRule


class Flatten(OpRule):
    """``flatten``: ``start_dim``, ``end_dim``."""

    kind = "flatten"
    modules = (nn.Flatten,)
    functions = (torch.flatten,)
    methods = ("flatten", "view", "reshape")
    doc = "``start_dim``, ``end_dim``"

    def trace_module(self, t, node, m, x):
        self.flatten(t, node, x, m.start_dim, m.end_dim)

    def trace_function(self, t, node, fn, args, kwargs, name):
        x = t.tensor_arg(node, args[0])
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        self.flatten(t, node, x, start, end)

    def trace_method(self, t, node, name):
        if name == "flatten":
            return self.trace_function(t, node, torch.flatten, node.args, node.kwargs, name)
        x = t.tensor_arg(node, node.args[0])
        src, out = t.shape(node.args[0]), t.shape(node)
        if src == out:
            t.vals[node] = x
        elif (len(out) == 2 and out[0] == src[0] and len(src) > 2 and x.caxes == (1,)
              and x.flat is None):
            self.flatten(t, node, x, 1, -1)
        else:   # any other reshape: token axes, or the channel axis split into heads
            t.rules["view"].reshape(t, node, x, name)

    def flatten(self, t, node, x, start, end):
        rank = x.rank
        start, end = start % rank, end % rank
        if start == 0:
            t.fail(node, "flatten", "flattening the batch dimension is unsupported")
        if start == end:
            t.vals[node] = x
            return
        span, ch = set(range(start, end + 1)), set(x.caxes)
        if start == 1 and x.caxes == (1,):
            if end != rank - 1 or x.flat is not None:
                t.fail(node, "flatten", "only flatten(1) of a whole feature map is supported")
            spatial = list(t.shape(node.args[0])[2:])
            t.emit(node, {"op": "flatten", "start_dim": 1, "end_dim": -1}, x, flat=spatial)
        elif x.flat is not None:
            t.fail(node, "flatten", "only flatten(1) of a whole feature map is supported")
        elif not span & ch:   # merges spatial or token dims only: channels untouched
            caxes = tuple(a - (end - start) if a > end else a for a in x.caxes)
            t.emit(node, {"op": "flatten", "start_dim": start, "end_dim": end}, x, caxes=caxes)
        elif span == ch and list(x.caxes) == sorted(x.caxes):   # heads merged back, in order
            t.emit(node, {"op": "flatten", "start_dim": start, "end_dim": end}, x,
                   caxes=(start,), csplit=None)
        else:
            t.fail(node, "flatten", f"flatten({start}, {end}) of shape "
                                    f"{t.shape(node.args[0])} merges the channel axis "
                                    f"{list(x.caxes)} with token or spatial axes (only the "
                                    f"channels of a whole (C, *spatial) map, channel axis 1, "
                                    f"may be flattened into features)")

    def constrain(self, op, s):
        s.pass_through(op)

    def apply(self, op, ins):
        return torch.flatten(ins[0], op["start_dim"], op["end_dim"])
