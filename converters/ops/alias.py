"""Forms that compute nothing in eval mode: ``nn.Identity``, eval-mode dropout, ``contiguous``,
``clone``, ``detach``; and ``size()``/``dim()`` (not tensors). They emit no op: the traced value
is the input's."""
from __future__ import annotations

import inspect

import torch.nn as nn
import torch.nn.functional as F

from .base import OpRule

ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.AlphaDropout)
ALIAS_FNS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout)


def dropout_args(fn, args, kwargs) -> tuple:
    """(p, training) of a functional dropout call, with the function's defaults."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments.get("p"), bound.arguments.get("training")


class Alias(OpRule):
    """No op kind: the value passes unchanged (``kind`` None, tracing only)."""

    kind = None
    modules = ALIAS_MODULES
    functions = ALIAS_FNS
    methods = ("contiguous", "clone", "detach", "size", "dim")

    def trace_module(self, t, node, m, x):
        t.vals[node] = x

    def trace_function(self, t, node, fn, args, kwargs, name):
        p, training = dropout_args(fn, args, kwargs)
        if training is not False and p != 0:   # F.dropout's default is training=True
            t.fail(node, name, f"this dropout (p={p}) is active in eval mode too "
                               f"(training={training!r}); pass training=self.training")
        t.vals[node] = t.tensor_arg(node, args[0])

    def trace_method(self, t, node, name):
        if name in ("size", "dim"):
            t.vals[node] = None
            return
        t.vals[node] = t.tensor_arg(node, node.args[0])
