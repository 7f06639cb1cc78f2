"""Softmax and log-softmax (``nn.Softmax``, ``nn.LogSoftmax``, ``F.softmax``, ``F.log_softmax``,
``torch.softmax``, ``torch.log_softmax``, ``x.softmax(dim)``, ``x.log_softmax(dim)``):
parameter-free, no new nodes.

Over the feature (channel) axis it couples every channel of its input: ``softmax(P z) =
P softmax(z)``, so one permutation of its input's neurons (the consumer's columns permuted alike)
keeps the function, but no per-neuron factor does (``softmax(q * z) = c * softmax(z)`` for every
``z`` forces ``c = 1`` at ``z = 0``, then ``q = 1``; log-softmax alike). Over a token axis it acts
on each feature separately, like a nonlinearity without a factor symmetry: again permutations
only. Its input's neurons are ``perm`` either way (docs/design.md 3.6). The common shift
``softmax(z + c) = softmax(z)`` is a symmetry of the biases, not a per-neuron factor: not claimed.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..groups import ONE
from .base import OpRule

_LOG = {nn.Softmax: False, nn.LogSoftmax: True}
_FNS = {F.softmax: False, F.log_softmax: True, torch.softmax: False, torch.log_softmax: True}


class Softmax(OpRule):
    """``softmax``: ``dim`` (an axis of the full tensor, batch included), ``log`` (log-softmax),
    ``over`` (``"features"``: the channel axis, or ``"tokens"``)."""

    kind = "softmax"
    modules = tuple(_LOG)
    functions = tuple(_FNS)
    methods = ("softmax", "log_softmax")
    doc = "``dim``, ``log`` (log-softmax), ``over`` (``features`` or ``tokens``)"

    def trace_module(self, t, node, m, x):
        self._emit(t, node, x, m.dim, _LOG[type(m)], type(m).__name__)

    def trace_function(self, t, node, fn, args, kwargs, name):
        log = next(v for f, v in _FNS.items() if f is fn)
        self._read(t, node, args, kwargs, log, name)

    def trace_method(self, t, node, name):
        self._read(t, node, node.args, node.kwargs, name == "log_softmax", f".{name}()")

    def _read(self, t, node, args, kwargs, log, what):
        x = t.tensor_arg(node, args[0])
        rest = dict(zip(("dim", "_stacklevel", "dtype"), args[1:]))
        rest.update(kwargs)
        if rest.get("dtype") is not None:
            t.fail(node, what, "a dtype argument (a cast inside the softmax) is unsupported")
        self._emit(t, node, x, rest.get("dim"), log, what)

    def _emit(self, t, node, x, dim, log, what):
        if dim is None or isinstance(dim, fx.Node) or not isinstance(dim, int):
            t.fail(node, what, f"the axis must be given as a Python integer, got dim={dim!r} "
                               f"(dim=None picks an axis implicitly)")
        if x.flat is not None:
            t.fail(node, what, "a softmax over a flattened feature map is unsupported")
        d = dim % x.rank
        if d == 0:
            t.fail(node, what, "a softmax over the batch dimension is unsupported")
        if d in x.caxes and len(x.caxes) > 1:
            t.fail(node, what, f"a softmax over one of the axes {list(x.caxes)} the channels are "
                               f"split over (heads) is unsupported")
        over = "features" if d in x.caxes else "tokens"
        t.emit(node, {"op": "softmax", "dim": d, "log": bool(log), "over": over}, x)

    def constrain(self, op, s):
        i = op["in"][0]
        s.restrict(i, ONE)
        s.act_of.setdefault(i, ("log_softmax" if op["log"] else "softmax", {"over": op["over"]}))

    def apply(self, op, ins):
        fn = F.log_softmax if op["log"] else F.softmax
        return fn(ins[0], op["dim"])
