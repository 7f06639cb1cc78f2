"""Pooling and spatial means: parameter-free, channel by channel (no new nodes)."""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..groups import ANY, POS
from .base import OpRule
from .conv import _jsonable

_POOL_MODULES = {nn.MaxPool1d: "max_pool1d", nn.MaxPool2d: "max_pool2d", nn.MaxPool3d: "max_pool3d",
                 nn.AvgPool1d: "avg_pool1d", nn.AvgPool2d: "avg_pool2d", nn.AvgPool3d: "avg_pool3d",
                 nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d",
                 nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
                 nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d",
                 nn.AdaptiveMaxPool1d: "adaptive_max_pool1d",
                 nn.AdaptiveMaxPool2d: "adaptive_max_pool2d",
                 nn.AdaptiveMaxPool3d: "adaptive_max_pool3d"}
_POOL_PARAMS = {
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override"),
    "adaptive_avg_pool": ("output_size",),
    "adaptive_max_pool": ("output_size", "return_indices"),
}
_POOL_NAMES = set(_POOL_MODULES.values())


def _pool_params(fn_name):
    params = _POOL_PARAMS[fn_name[:-2]]
    return params[:-1] if fn_name == "avg_pool1d" else params  # no divisor_override in 1d


def _pool_fn_name(fn, name):
    name = name.lstrip("_")
    if name not in _POOL_NAMES:
        return None
    homes = (F, torch._C._nn, torch)
    known = {getattr(h, n, None) for h in homes for n in (name, "_" + name)}
    return name if fn in known else None


class Pool(OpRule):
    """``pool``: ``fn`` (a ``torch.nn.functional`` pooling function) with ``kwargs``. Average
    pooling is linear (any factor passes); ``max(q x) = q max(x)`` for ``q > 0`` only
    (``max(-x) = -min(x)``), so max pooling removes sign flips."""

    kind = "pool"
    modules = tuple(_POOL_MODULES)
    doc = "``fn`` (a ``torch.nn.functional`` pooling function) with ``kwargs``"

    def matches_function(self, fn, name):
        return _pool_fn_name(fn, name) is not None

    def trace_module(self, t, node, m, x):
        fn = _POOL_MODULES[type(m)]
        kwargs = {k: getattr(m, k) for k in _pool_params(fn) if hasattr(m, k)}
        self._pool(t, node, fn, x, kwargs)

    def trace_function(self, t, node, fn, args, kwargs, name):
        pool = _pool_fn_name(fn, name)
        names = _pool_params(pool)
        if len(args) - 1 > len(names):
            t.fail(node, pool, "unexpected arguments")
        kwargs = {**dict(zip(names, args[1:])), **kwargs}
        self._pool(t, node, pool, t.tensor_arg(node, args[0]), kwargs)

    def _pool(self, t, node, fn, x, kwargs):
        d = int(fn[-2])
        if x.flat is not None or x.rank != d + 2:
            t.fail(node, fn, f"expects (batch, channels, {d} spatial dims)")
        t.channel_axis(node, fn, x, "first")
        if kwargs.pop("return_indices", False):
            t.fail(node, fn, "return_indices=True is unsupported")
        if fn.startswith("max_pool") and self._global(t, node, d, kwargs):
            return
        try:
            kwargs = {k: _jsonable(v) for k, v in kwargs.items()}
        except TypeError:
            bad = sorted(k for k, v in kwargs.items() if isinstance(v, fx.Node))
            t.fail(node, fn, f"{', '.join(bad) or 'an argument'} computed in forward (e.g. a "
                             f"kernel from x.size(2)) would be frozen to the example input; "
                             f"pass constants, or pool globally with "
                             f"F.adaptive_{fn[:-2].replace('adaptive_', '')}{d}d(x, 1)")
        t.emit(node, {"op": "pool", "fn": fn, "kwargs": kwargs}, x)

    @staticmethod
    def _global(t, node, d: int, kwargs: dict) -> bool:
        """A max-pool whose window is the input's whole length read in forward
        (``F.max_pool1d(x, x.size(2))``, stride, padding, dilation and ceil_mode left at their
        defaults): the max over the spatial axes, kept as size-1 axes (``amax`` op,
        ``converters.ops.tokens``). False for any other max-pool."""
        from .tokens import whole_axis_sizes
        k, stride = kwargs.get("kernel_size"), kwargs.get("stride")
        rest = {kw: kwargs.get(kw, dv) for kw, dv in
                (("padding", 0), ("dilation", 1), ("ceil_mode", False))}
        if not whole_axis_sizes(t, node.args[0], k, list(range(2, 2 + d))):
            return False
        if stride not in (None, k) or rest != {"padding": 0, "dilation": 1, "ceil_mode": False}:
            t.fail(node, f"max_pool{d}d", f"a window over the whole input (kernel_size from "
                                          f"x.size()) is read with the default stride, padding, "
                                          f"dilation and ceil_mode only, got stride={stride!r}, "
                                          f"{rest}")
        t.rules["amax"].emit(t, node, t.vals[node.args[0]], list(range(2, 2 + d)), True,
                             f"max_pool{d}d")
        return True

    def constrain(self, op, s):
        s.pass_through(op, POS if "max" in op["fn"] else ANY)

    def apply(self, op, ins):
        kw = {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in op["kwargs"].items()}
        return getattr(F, op["fn"])(ins[0], **kw)


class Mean(OpRule):
    """``mean``: a mean over spatial (or token) dimensions ``dim`` (``keepdim``); linear, so
    every factor passes."""

    kind = "mean"
    functions = (torch.mean,)
    methods = ("mean",)
    doc = "mean over spatial dimensions ``dim``, ``keepdim``"

    def method_function(self, name):
        return torch.mean

    def trace_function(self, t, node, fn, args, kwargs, name):
        x = t.tensor_arg(node, args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        dims = [dim] if isinstance(dim, int) else list(dim or [])
        dims = [d % x.rank for d in dims]
        if not dims or 0 in dims or set(dims) & set(x.caxes) or x.flat is not None:
            t.fail(node, "mean", "only means over spatial or token dimensions are supported "
                                 "(not over the batch or the channels)")
        caxes = x.caxes if keepdim else tuple(a - sum(d < a for d in dims) for a in x.caxes)
        t.emit(node, {"op": "mean", "dim": dims, "keepdim": bool(keepdim)}, x, caxes=caxes)

    def constrain(self, op, s):
        s.pass_through(op)

    def apply(self, op, ins):
        return ins[0].mean(tuple(op["dim"]), keepdim=op["keepdim"])
