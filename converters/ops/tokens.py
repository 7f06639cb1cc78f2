"""Reading along token (or spatial) axes: indexing them (``x[:, 0]``, a ViT's CLS readout),
the max over them (``x.max(dim=1).values``, ``x.max(1)[0]``, ``torch.amax(x, dim=1)``,
``F.max_pool1d(x, x.size(2))``), and ``torch.arange(T)`` read as the positions of a table
(``self.wpe(torch.arange(T))``: ``converters.ops.embedding.Position``). Parameter-free, no new
nodes (docs/design.md 3.10).

- ``index``: ``x[idx]`` where every item on the batch and channel axes is ``:`` and every
  other item a constant integer or slice. Each channel's entries are picked alike, so
  ``(P diag(q) x)[..., t] = P diag(q) x[..., t]``: every permutation and factor passes.
- ``amax``: the max over axes that hold no channels, channel by channel. ``max_t (q x_t) = q
  max_t x_t`` for ``q > 0``, and ``max_t (-x_t) = -min_t x_t``: positive factors and
  permutations pass, sign flips do not (as a max-pool's).
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..groups import POS
from .base import OpRule


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _next_getitem_rule(t, rule):
    """The rule after ``rule`` in the tracer's order that reads ``getitem`` (a recurrent
    layer's results: ``converters.ops.recurrent.Select``), or None."""
    from . import FORMS
    rest = FORMS[FORMS.index(rule) + 1:]
    return next((r for r in rest if r.matches_function(operator.getitem, "getitem")), None)


class Index(OpRule):
    """``index``: ``items``, one per axis after the batch: None (``:``, kept whole), an integer
    (the axis is removed) or ``[start, stop, step]`` (a constant slice); never on a channel
    axis. ``x[:, 0]`` of ``(batch, tokens, features)`` is ``items`` ``[0, None]``."""

    kind = "index"
    functions = (operator.getitem,)
    doc = ("``items``: per axis after the batch, None, an integer or ``[start, stop, step]``; "
           "token or spatial axes only")

    def trace_function(self, t, node, fn, args, kwargs, name):
        src, idx = args
        if t.rules["amax"].take(t, node, src, idx):       # x.max(1)[0]
            return
        if src in t.__dict__.get("rnn_items", {}):      # out[:, -1], h_n[-1] of an RNN
            return _next_getitem_rule(t, self).trace_function(t, node, fn, args, kwargs, name)
        x = t.tensor_arg(node, src)
        what = f"indexing {idx!r}"
        if x.flat is not None:
            t.fail(node, what, "indexing a flattened feature map is unsupported")
        items = list(idx) if isinstance(idx, tuple) else [idx]
        if sum(i is Ellipsis for i in items) > 1 or any(i is None for i in items):
            t.fail(node, what, "None (a new axis) and several Ellipses are unsupported")
        if Ellipsis in items:
            k = items.index(Ellipsis)
            items = items[:k] + [slice(None)] * (x.rank - len(items) + 1) + items[k + 1:]
        if len(items) > x.rank:
            t.fail(node, what, f"too many indices for a tensor of rank {x.rank}")
        items += [slice(None)] * (x.rank - len(items))
        record = []
        for a, i in enumerate(items):
            whole = isinstance(i, slice) and (i.start, i.stop, i.step) == (None, None, None)
            if a == 0 or a in x.caxes:
                if not whole:
                    axis = "the batch axis" if a == 0 else f"the channel axis {a}"
                    t.fail(node, what, f"it indexes {axis}; only token or spatial axes may be "
                                       f"indexed (x[:, 0] of (batch, tokens, features))")
                if a:
                    record.append(None)
                continue
            if whole:
                record.append(None)
            elif _is_int(i):
                record.append(i)
            elif isinstance(i, slice) and all(v is None or _is_int(v)
                                              for v in (i.start, i.stop, i.step)) \
                    and (i.step is None or i.step > 0):
                record.append([i.start, i.stop, i.step])
            else:
                t.fail(node, what, f"the index on axis {a} must be a constant integer or slice "
                                   f"(with a positive step), got {i!r}")
        if all(r is None for r in record):
            t.vals[node] = x
            return
        dropped = [a + 1 for a, r in enumerate(record) if _is_int(r)]
        caxes = tuple(c - sum(d < c for d in dropped) for c in x.caxes)
        t.emit(node, {"op": "index", "items": record}, x, caxes=caxes)

    @staticmethod
    def arange_unsqueezed(t, node, args, kwargs, name: str) -> bool:
        """Read ``torch.arange(T).unsqueeze(0)`` (minGPT's ``(1, T)`` positions) as the
        ``arange`` with one leading axis (``Arange``); False for anything else."""
        aranges = t.__dict__.get("aranges", {})
        if not args or args[0] not in aranges or name != "unsqueeze":
            return False
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim not in (0, -2) or aranges[args[0]]["lead"]:
            t.fail(node, name, "positions torch.arange(T) may gain one leading axis only "
                               "(torch.arange(T).unsqueeze(0))")
        aranges[node] = {**aranges[args[0]], "lead": 1}
        t.vals[node] = None
        t.__dict__.setdefault("untraced", {})[node] = t.untraced[args[0]]
        return True

    def constrain(self, op, s):
        s.pass_through(op)

    def apply(self, op, ins):
        idx = (slice(None),) + tuple(slice(None) if r is None else r if _is_int(r)
                                     else slice(*r) for r in op["items"])
        return ins[0][idx]


class Amax(OpRule):
    """``amax``: ``dim`` (axes holding no channels, not the batch), ``keepdim``: the max over
    them, channel by channel. Read from ``torch.amax``/``x.amax``, ``torch.max(x, dim)`` and
    ``x.max(dim)`` followed by ``.values`` or ``[0]``, and a global ``F.max_pool1d(x,
    x.size(2))`` (``converters.ops.pool``)."""

    kind = "amax"
    functions = (torch.amax, torch.max)
    methods = ("amax", "max")
    doc = "``dim``, ``keepdim``: the max over token or spatial axes"

    def trace_method(self, t, node, name):
        self.trace_function(t, node, getattr(torch, name), node.args, node.kwargs, name)

    def trace_function(self, t, node, fn, args, kwargs, name):
        x = t.tensor_arg(node, args[0])
        names = ("dim", "keepdim")
        p = dict(zip(names, args[1:]))
        for k, v in kwargs.items():
            if k not in names:
                t.fail(node, name, f"unexpected argument {k!r}")
            p[k] = v
        if len(args) > 3:
            t.fail(node, name, "unexpected arguments")
        dim, keepdim = p.get("dim"), p.get("keepdim", False)
        if isinstance(dim, fx.Node):
            t.fail(node, name, "an elementwise maximum of two tensors (or an axis computed in "
                               "forward) is unsupported; the max over a token axis is "
                               "(x.max(dim=1).values)")
        if dim is None or (isinstance(dim, (tuple, list)) and not dim):
            t.fail(node, name, "a max over every axis (the batch's included) is unsupported; "
                               "take it over token or spatial axes (x.max(dim=1).values)")
        if not isinstance(keepdim, bool):
            t.fail(node, name, f"keepdim must be a Python bool, got {keepdim!r}")
        dims = [dim] if _is_int(dim) else list(dim)
        if name == "max" and len(dims) != 1:
            t.fail(node, name, "max takes one axis")
        if not all(_is_int(d) and -x.rank <= d < x.rank for d in dims):
            t.fail(node, name, f"the axes must be Python integers below the rank {x.rank}, got "
                               f"{dim!r}")
        dims = sorted({d % x.rank for d in dims})
        self.check(t, node, x, dims, name)
        if name == "max":       # (values, indices): read by .values or [0]
            t.__dict__.setdefault("max_results", {})[node] = (x, dims, keepdim)
            t.vals[node] = None
            t.__dict__.setdefault("untraced", {})[node] = (
                "x.max(dim) gives (values, indices): read its .values or [0]")
            return
        self.emit(t, node, x, dims, keepdim, name)

    def take(self, t, node, src, item) -> bool:
        """Emit the values of a pending ``x.max(dim)`` read by ``node`` (``src[item]`` or
        ``src.item``), if ``src`` is one."""
        pending = t.__dict__.get("max_results", {}).get(src)
        if pending is None:
            return False
        if item in (1, -1, "indices"):
            t.fail(node, "max", "the indices of a max (an argmax) are not a function of the "
                                "network's features that the graph holds; read .values")
        if item not in (0, -2, "values"):
            t.fail(node, "max", f"x.max(dim) gives (values, indices), got the item {item!r}")
        x, dims, keepdim = pending
        self.emit(t, node, x, dims, keepdim, "max")
        return True

    @staticmethod
    def check(t, node, x, dims: list, what: str) -> None:
        """Refuse (naming ``node``) a max of value ``x`` over the batch or channel axes."""
        if x.flat is not None or 0 in dims or set(dims) & set(x.caxes):
            t.fail(node, what, f"only a max over token or spatial axes is supported (not over "
                               f"the batch or the channels: axes {list(x.caxes)}), got "
                               f"dim={dims}")

    def emit(self, t, node, x, dims: list, keepdim: bool, what: str) -> None:
        """Emit the max of value ``x`` over the axes ``dims`` (refused on channels or batch)."""
        self.check(t, node, x, dims, what)
        caxes = x.caxes if keepdim else tuple(a - sum(d < a for d in dims) for a in x.caxes)
        t.emit(node, {"op": "amax", "dim": dims, "keepdim": keepdim}, x, caxes=caxes)

    def constrain(self, op, s):
        s.pass_through(op, POS)

    def apply(self, op, ins):
        return torch.amax(ins[0], dim=op["dim"], keepdim=op["keepdim"])


def whole_axis_sizes(t, x_node, sizes, axes) -> bool:
    """Whether every entry of ``sizes`` is the size of the matching axis in ``axes`` of fx node
    ``x_node``, read in forward (``x.size(2)``, ``x.shape[2]``, ``x.shape[-1]``,
    ``x.size()[2]``): a pooling window as long as the input, whatever its length."""
    rank = len(t.shape(x_node))

    def of(n, axis):
        if not isinstance(n, fx.Node):
            return False
        if n.op == "call_method" and n.target == "size" and len(n.args) == 2:
            return n.args[0] is x_node and _is_int(n.args[1]) and n.args[1] % rank == axis
        if n.op == "call_function" and n.target is operator.getitem and _is_int(n.args[1]) \
                and n.args[1] % rank == axis and isinstance(n.args[0], fx.Node):
            s = n.args[0]
            return ((s.op == "call_function" and s.target is getattr and s.args == (x_node,
                                                                                   "shape"))
                    or (s.op == "call_method" and s.target == "size" and s.args == (x_node,)))
        return False

    sizes = list(sizes) if isinstance(sizes, (tuple, list)) else [sizes]
    return len(sizes) == len(axes) and all(of(n, a) for n, a in zip(sizes, axes))


class Arange(OpRule):
    """No op kind: ``torch.arange(T)`` / ``torch.arange(0, T)`` (integer, from 0, step 1; also
    ``.unsqueeze(0)``, ``Index.arange_unsqueezed``), read only as the positions an
    ``nn.Embedding`` of positions looks up (``self.wpe(pos)``: the table's first ``T`` rows,
    ``converters.ops.embedding.Position``)."""

    kind = None
    functions = (torch.arange,)

    def trace_function(self, t, node, fn, args, kwargs, name):
        names = ("start", "end", "step") if len(args) > 1 or "start" in kwargs else ("end",)
        p = dict(zip(names, args))
        for k, v in kwargs.items():
            if k in ("start", "end", "step"):
                p[k] = v
            elif k == "dtype" and v not in (torch.long, torch.int32):
                t.fail(node, "arange", f"positions must be integers, got dtype={v}")
            elif k not in ("dtype", "device", "requires_grad", "layout", "pin_memory"):
                t.fail(node, "arange", f"unexpected argument {k!r}")
        if p.get("start", 0) != 0 or p.get("step", 1) != 1 or len(args) > 3:
            t.fail(node, "arange", f"only torch.arange(T) / torch.arange(0, T) (from 0, step 1) "
                                   f"is supported as positions, got start={p.get('start', 0)!r}"
                                   f", step={p.get('step', 1)!r}")
        meta = node.meta.get("tensor_meta")
        if meta is None or len(meta.shape) != 1 or meta.dtype.is_floating_point:
            t.fail(node, "arange", "only an integer torch.arange(T) is supported")
        t.__dict__.setdefault("aranges", {})[node] = {"length": int(meta.shape[0]), "lead": 0}
        t.vals[node] = None
        t.__dict__.setdefault("untraced", {})[node] = (
            "torch.arange(T) may only be looked up in an nn.Embedding of positions "
            "(self.wpe(torch.arange(T)), added to the token stream)")


__all__ = ["Index", "Amax", "Arange", "whole_axis_sizes"]
