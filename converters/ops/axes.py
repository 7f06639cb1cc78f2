"""Reshapes of token axes and of the channel axis: ``view``/``reshape``/``unsqueeze``/``squeeze``
(op kind ``view``), ``transpose``/``permute``/``swapaxes`` (op kind ``permute``), and the shape
arithmetic around them (``x.shape``, ``x.size(i)``, ``C // heads``: no op).

A traced value knows the tensor axes its channels lie on (``converters.trace._Val.caxes``): axis 1
for ``(batch, features)`` and conv maps, the last one for token-wise data ``(batch, *tokens,
features)``. These ops move, merge and split the other (token) axes freely; they may move the
channel axis, split it into sub-axes (``(batch, T, F) -> (batch, T, H, D)``: the features as
``H`` heads of ``D``, recorded on the value so that later ops know the head blocks), and merge
such sub-axes back in their order. A reshape that merges the channel axis with a token axis, or
merges sub-axes out of order (a channel shuffle), is refused naming the node. No new nodes: every
entry stays in its channel, so every factor of the channels passes.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from .base import OpRule


def regroup(src: tuple, out: tuple) -> list:
    """How a row-major reshape of ``src`` to ``out`` (both without the batch axis) regroups axes:
    ``[(n_src, out_sizes), ...]``, consecutive ``n_src`` source axes becoming the axes
    ``out_sizes`` (a size-1 axis added or removed is a group of its own). Raises ``ValueError``
    when the sizes do not match."""
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(out):
        if i < len(src) and src[i] == 1 and (j >= len(out) or out[j] != 1):
            groups.append((1, []))
            i += 1
        elif j < len(out) and out[j] == 1 and (i >= len(src) or src[i] != 1):
            groups.append((0, [1]))
            j += 1
        else:
            if i >= len(src) or j >= len(out):
                raise ValueError(f"cannot reshape {src} to {out}")
            i1, j1, ps, po = i + 1, j + 1, src[i], out[j]
            while ps != po:
                if ps < po and i1 < len(src):
                    ps, i1 = ps * src[i1], i1 + 1
                elif po < ps and j1 < len(out):
                    po, j1 = po * out[j1], j1 + 1
                else:
                    raise ValueError(f"cannot reshape {src} to {out}")
            groups.append((i1 - i, list(out[j:j1])))
            i, j = i1, j1
    return groups


def unit_factor(x, shape: tuple, axis: int) -> tuple:
    """``(caxes, csplit)`` of the traced value ``x`` (a ``_Val`` of shape ``shape``) with its
    size-1 axis ``axis`` read as the last factor of its channels. A size-1 axis after the
    channel axis is ambiguous: ``(batch, T, C) -> (batch, T, C, 1)`` adds a size-1 axis (how
    ``View`` records it: the channels stay on one axis) and splits the ``C`` features into ``C``
    heads of one feature (``caxes`` ``(2, 3)``, ``csplit`` ``(C, 1)``); both readings hold each
    entry at the same place, so an op that reads the features on ``axis`` (an attention's head
    width) may take the second. ``x``'s own ``(caxes, csplit)`` when its channels lie on several
    axes or on ``axis`` already, or when ``shape[axis]`` is not 1."""
    axis %= len(shape)
    if x.cdim is None or x.cdim == axis or shape[axis] != 1:
        return tuple(x.caxes), x.csplit
    return (x.cdim, axis), (x.chan, 1)


def unit_axes(t, x) -> tuple:
    """The size-1 axes of the traced value ``x`` that a ``view`` added right after its one
    channel axis (``(batch, T, C) -> (batch, T, C, 1)``), moved along by later permutes: their
    size is the graph's (the view's record), not the input's, so their size may be read as a
    constant (a head width of one, ``q.size(-1)``). Other size-1 axes may be token axes."""
    return t.__dict__.get("unit_axes", {}).get(x.vid, ())


def _set_unit_axes(t, x, axes) -> None:
    if axes:
        t.__dict__.setdefault("unit_axes", {})[x.vid] = tuple(axes)


class View(OpRule):
    """``view``: ``groups``, one ``[n_src, sizes]`` per group of consecutive axes after the batch
    (``converters.ops.axes.regroup``): ``sizes`` None keeps or merges the ``n_src`` axes into one
    (its size read at run time, so token counts may change), else the sizes of the new axes (a
    split, or ``[]``/``[1]`` for a removed or added size-1 axis)."""

    kind = "view"
    functions = (torch.reshape, torch.unsqueeze, torch.squeeze)
    methods = ("unsqueeze", "squeeze")
    doc = "``groups``: per group of axes after the batch, ``[n_src, sizes or None]``"

    def trace_function(self, t, node, fn, args, kwargs, name):
        if t.rules["index"].arange_unsqueezed(t, node, args, kwargs, name):
            return                                # torch.arange(T).unsqueeze(0): positions
        self.reshape(t, node, t.tensor_arg(node, args[0]), name)

    def trace_method(self, t, node, name):
        if t.rules["index"].arange_unsqueezed(t, node, node.args, node.kwargs, name):
            return
        self.reshape(t, node, t.tensor_arg(node, node.args[0]), name)

    def reshape(self, t, node, x, name: str) -> None:
        """Read the reshape ``node`` of value ``x`` from its recorded input and output shapes."""
        src, out = t.shape(node.args[0]), t.shape(node)
        if src == out:
            t.vals[node] = x
            return
        what = f"{name} {src} -> {out}"
        if out[:1] != src[:1]:
            t.fail(node, what, "a reshape that changes the batch dimension is unsupported")
        if x.flat is not None:
            t.fail(node, what, "reshaping a flattened feature map is unsupported")
        try:
            groups = regroup(src[1:], out[1:])
        except ValueError as e:
            t.fail(node, what, str(e))
        caxes, csplit = list(x.caxes), x.csplit
        record, pos_in, pos_out = [], 1, 1
        for n_src, sizes in groups:
            axes = list(range(pos_in, pos_in + n_src))
            chans = [a for a in axes if a in x.caxes]
            if chans and n_src == 1 and len(sizes) == 1:          # an axis kept, maybe moved
                caxes[x.caxes.index(axes[0])] = pos_out
            elif chans and axes == sorted(x.caxes) and list(x.caxes) == axes and sizes:
                # the channels, split into sub-axes or merged back in order
                caxes = list(range(pos_out, pos_out + len(sizes)))
                csplit = tuple(sizes) if len(sizes) > 1 else None
            elif chans:
                t.fail(node, what, f"it mixes the channel axes {list(x.caxes)} of its input with "
                                   f"other axes (only token axes may be merged or split; the "
                                   f"channel axis may be split into sub-axes, such as heads, "
                                   f"and merged back in the same order)")
            keep = n_src >= 1 and len(sizes) == 1
            record.append([n_src, None if keep else [int(s) for s in sizes]])
            pos_in, pos_out = pos_in + n_src, pos_out + len(sizes)
        t.emit(node, {"op": "view", "groups": record}, x, caxes=tuple(caxes),
               csplit=csplit if len(caxes) > 1 else None)
        units, pos = [], 1
        for n_src, sizes in groups:
            if n_src == 0 and list(sizes) == [1] and caxes == [pos - 1]:
                units.append(pos)          # (T, C) -> (T, C, 1): one feature per head
            pos += len(sizes)
        _set_unit_axes(t, t.vals[node], units)

    def constrain(self, op, s):
        s.pass_through(op)

    def apply(self, op, ins):
        x = ins[0]
        shape, pos = [x.shape[0]], 1
        for n_src, sizes in op["groups"]:
            if sizes is None:
                shape.append(math.prod(x.shape[pos:pos + n_src]))
            else:
                shape += sizes
            pos += n_src
        return x.reshape(shape)


class Permute(OpRule):
    """``permute``: ``dims``, a permutation of the axes that keeps the batch axis first
    (``transpose``, ``swapaxes``, ``swapdims``, ``permute``)."""

    kind = "permute"
    functions = (torch.transpose, torch.permute, torch.swapaxes, torch.swapdims)
    methods = ("transpose", "permute", "swapaxes", "swapdims")
    doc = "``dims``: the new order of the axes (the batch axis stays first)"

    def trace_function(self, t, node, fn, args, kwargs, name):
        x = t.tensor_arg(node, args[0])
        rest = list(args[1:]) + list(kwargs.values())
        if any(isinstance(v, fx.Node) for v in rest):
            t.fail(node, name, "the axes must be Python integers")
        if name in ("permute",):
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            dims = [int(d) % x.rank for d in dims]
        else:
            if len(rest) != 2:
                t.fail(node, name, "expects two axes")
            a, b = (int(d) % x.rank for d in rest)
            dims = list(range(x.rank))
            dims[a], dims[b] = b, a
        if sorted(dims) != list(range(x.rank)):
            t.fail(node, name, f"{dims} is not a permutation of {x.rank} axes")
        if dims[0] != 0:
            t.fail(node, name, "moving the batch dimension is unsupported")
        if dims == list(range(x.rank)):
            t.vals[node] = x
            return
        if x.flat is not None:
            t.fail(node, name, "permuting a flattened feature map is unsupported")
        t.emit(node, {"op": "permute", "dims": dims}, x,
               caxes=tuple(dims.index(a) for a in x.caxes))
        _set_unit_axes(t, t.vals[node], [dims.index(a) for a in unit_axes(t, x)])

    def trace_method(self, t, node, name):
        self.trace_function(t, node, None, node.args, node.kwargs,
                            "permute" if name == "permute" else name)

    def constrain(self, op, s):
        s.pass_through(op)

    def apply(self, op, ins):
        return ins[0].permute(op["dims"])


_SIZE_ARITH = (operator.floordiv, operator.truediv, operator.mul, operator.add, operator.sub,
               operator.mod, operator.neg)


def _is_size(n) -> bool:
    """Whether the fx node ``n`` is a shape: ``x.shape``, ``x.size()``, or an item of one."""
    if not isinstance(n, fx.Node):
        return False
    if n.op == "call_method" and n.target == "size":
        return True
    if n.op == "call_function" and n.target is getattr and n.args[1:] == ("shape",):
        return True
    return n.op == "call_function" and n.target is operator.getitem and _is_size(n.args[0])


class Shape(OpRule):
    """No op kind: ``x.shape``, ``x.shape[i]``, ``x.size()[i]`` and integer arithmetic on sizes
    (``C // heads``) give no traced tensor (their uses in reshapes are read from the recorded
    shapes). Indexing anything else is left to the next rule that reads ``getitem`` (refused
    when none does)."""

    kind = None
    functions = (getattr, operator.getitem, operator.floordiv)

    def trace_function(self, t, node, fn, args, kwargs, name):
        if fn is getattr:
            if args[1] == "values" and t.rules["amax"].take(t, node, args[0], "values"):
                return                                 # x.max(dim=1).values
            if args[1] == "indices" and t.rules["amax"].take(t, node, args[0], "indices"):
                return
            if args[1:] in (("device",), ("dtype",)):    # torch.arange(T, device=x.device)
                t.vals[node] = None
                return
            if args[1:] != ("shape",):
                t.fail(node, f"attribute .{args[1]}", "not supported")
            t.vals[node] = None
            return
        if fn is operator.getitem and t.rules["half"].select(t, node, args[0], args[1]):
            return                                     # a, b = h.chunk(2, -1)
        if fn is operator.getitem and not _is_size(args[0]):
            from . import FORMS
            rest = FORMS[FORMS.index(self) + 1:]
            rule = next((r for r in rest if r.matches_function(fn, name)), None)
            if rule is None:
                t.fail(node, "indexing", "indexing or slicing a traced tensor is unsupported")
            return rule.trace_function(t, node, fn, args, kwargs, name)
        if any(isinstance(a, fx.Node) and t.vals.get(a) is not None for a in args):
            t.fail(node, f"function {name}", "not supported on tensors")
        t.vals[node] = None


def size_arith(t, node, args) -> bool:
    """True (and the node's value set to None) when ``node`` is arithmetic on sizes only."""
    if any(isinstance(a, fx.Node) and t.vals.get(a) is not None for a in args):
        return False
    if all(isinstance(a, (int, float, fx.Node)) and not isinstance(a, bool) for a in args):
        t.vals[node] = None       # floats too: an attention's 1.0 / math.sqrt(k.size(-1))
        return True
    return False
