"""Attention: ``F.scaled_dot_product_attention`` and its written-out form ``softmax(q @
k.transpose(-2, -1) * scale) @ v`` on traced queries, keys and values (op kind ``attention``,
parameter-free, no new nodes), and masks passed as further model inputs (``extra_input``).
``nn.MultiheadAttention`` is in ``converters.ops.mha``, the transformer layers in
``converters.ops.transformer``; the symmetry below holds for all of them.

Encoding (docs/design.md 3.8). The queries ``Q``, keys ``K`` and values ``V`` are node sets of
``E`` neurons each (the outputs of user-written ``nn.Linear``s, or the three node sets an ``mha``
op writes from its ``in_proj_weight`` rows); with ``H`` heads of ``D = E / H`` neurons, head ``h``
holds neurons ``h D .. h D + D - 1`` (the tracer records the split of the features into heads,
``converters.trace._Val.csplit``). The scores ``Q K^T * scale``, the mask, the softmax and the
weighted sum are parameter-free: the output of an attention is the weighted sum of ``V``'s rows,
feature by feature, so its channels are ``V``'s neurons and the output projection's edges come
from ``V``'s node set.

Symmetry. Per head, ``scores[t, s] = sum_d Q[t, d] K[s, d]``:

- a permutation of the ``D`` dimensions of a head applied to ``Q`` and ``K`` together keeps every
  score (``align``, with ``perm_cuts`` at the head boundaries);
- ``Q[:, d] * s`` with ``K[:, d] / s`` keeps every score for any ``s != 0``: ``Q`` and ``K`` are
  ``linear`` with reciprocal factors position by position (``SymmetryState.inverse_tie``; the
  node-set record's ``inv_tie``, read by ``converters.sample_action``);
- the output is linear in each column of ``V`` and reads head ``h``'s columns with head ``h``'s
  weights only: ``V``'s neurons take any factor its consumers allow and permutations inside each
  head (cuts at the head boundaries), undone in the output projection's columns.

Moving whole heads (the ``Q``, ``K``, ``V`` rows of one head and the output projection's columns
of that head together, one permutation of the heads for all three) is a symmetry too: declared
as block moves (``SymmetryState.block_perm``; the node-set records' ``blocks``), composed by
``converters.sample_action`` with the permutations inside each head.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..groups import NEG
from .axes import unit_axes, unit_factor
from .base import OpRule, is_number


def head_layout(t, node, x, what: str, transposed: bool = False, shape=None) -> tuple:
    """``(heads, head_dim)`` of an attention operand ``x`` (a ``_Val`` of shape ``shape``): one
    node set, the features of one head on the last axis, the tokens on the axis before
    (``transposed``: the other way round, a transposed key), the heads (when the features are
    split) on an axis before both. Heads of one feature each (``x.view(B, T, H, 1)``) are read
    from a size-1 feature axis (``converters.ops.axes.unit_factor``). Refused, naming ``node``,
    otherwise."""
    t.single_set(node, what, x)
    r = x.rank
    if r < 3:
        t.fail(node, what, f"its operands must be (batch, ..., tokens, features), got rank {r}")
    fa = r - 2 if transposed else r - 1
    caxes, csplit = head_axes(x, shape, transposed)
    if len(caxes) == 1:
        if caxes[0] != fa:
            t.fail(node, what, f"it reads the features on axis {fa}, but its operand's "
                               f"features are on axis {caxes[0]}")
        return 1, x.chan
    if len(caxes) != 2 or caxes[1] != fa or caxes[0] >= r - 2:
        t.fail(node, what, f"its operand's features are split over axes {list(caxes)} (sizes "
                           f"{list(csplit)}): attention needs the heads on an axis before the "
                           f"tokens and each head's features on the last axis "
                           f"(x.view(B, T, H, D).transpose(1, 2))")
    return tuple(int(c) for c in csplit)


def head_axes(x, shape, transposed: bool = False) -> tuple:
    """``(caxes, csplit)`` of an attention operand ``x`` of shape ``shape`` (None: ``x``'s own),
    a size-1 feature axis (the last, or the one before when ``transposed``) read as a head width
    of one (``converters.ops.axes.unit_factor``)."""
    if shape is None:
        return tuple(x.caxes), x.csplit
    return unit_factor(x, shape, len(shape) - (2 if transposed else 1))


def _const(t, node, what: str, name: str, v, kinds=(bool,)):
    if isinstance(v, fx.Node) or not isinstance(v, kinds):
        t.fail(node, what, f"'{name}' must be a Python constant ({kinds[0].__name__}), got {v!r}")
    return v


class Attention(OpRule):
    """``attention``: ``F.scaled_dot_product_attention(q, k, v)``; ``in`` = [q, k, v] and,
    with ``mask``, the mask's ``extra_input`` value; ``heads``, ``head_dim`` (of q and k),
    ``v_head_dim``, ``causal``, ``scale`` (None: 1 / sqrt(head_dim)). The written-out form has
    ``in`` = [q, k transposed, v, masks...] and ``steps``, replayed after ``q @ kT``: ``["mul",
    c, c_first]``, ``["div", c]``, ``["add_mask", i, mask_first]``, ``["masked_fill", i,
    value]``, ``["softmax", dim]`` (``i``: the mask's position in ``in``), then ``@ v``.
    Parameter-free; its channels are ``v``'s; q: (batch, [heads,] tokens, head_dim)."""

    kind = "attention"
    functions = (F.scaled_dot_product_attention, operator.matmul, torch.matmul, math.sqrt)
    methods = ("matmul",)
    doc = ("``in`` = [q, k, v]; ``heads``, ``head_dim``, ``v_head_dim``, ``causal``, "
           "``scale``; ``steps`` for the written-out form; its channels are v's")

    _NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
              "enable_gqa")

    def trace_function(self, t, node, fn, args, kwargs, name):
        if fn is math.sqrt:           # on a size (1 / math.sqrt(k.size(-1))): no tensor
            if any(isinstance(a, fx.Node) and t.vals.get(a) is not None for a in args):
                t.fail(node, "math.sqrt", "not supported on tensors")
            t.vals[node] = None
            return
        if fn is not F.scaled_dot_product_attention:
            return self._scores(t, node, args, kwargs)
        what = "scaled_dot_product_attention"
        p = dict(zip(self._NAMES, args))
        for k, v in kwargs.items():
            if k not in self._NAMES:
                t.fail(node, what, f"unexpected argument {k!r}")
            p[k] = v
        drop = p.get("dropout_p", 0.0)
        if isinstance(drop, fx.Node) or drop != 0:
            t.fail(node, what, f"dropout inside the attention (dropout_p={drop!r}) is "
                               f"unsupported: the graph holds the eval-mode function "
                               f"(dropout_p=0.0)")
        if _const(t, node, what, "enable_gqa", p.get("enable_gqa", False)):
            t.fail(node, what, "grouped-query attention (enable_gqa=True) is not supported")
        causal = bool(_const(t, node, what, "is_causal", p.get("is_causal", False)))
        scale = p.get("scale")
        if scale is not None and not is_number(scale):
            t.fail(node, what, f"'scale' must be a Python number or None, got {scale!r}")
        qkv = [p.get(n) for n in self._NAMES[:3]]
        q, k, v = (t.tensor_arg(node, a) for a in qkv)
        (hq, dq), (hk, dk), (hv, dv) = (head_layout(t, node, x, what, shape=t.shape(a))
                                        for x, a in zip((q, k, v), qkv))
        if not (hq == hk == hv) or dq != dk:
            t.fail(node, what, f"queries, keys and values must have one number of heads and "
                               f"queries and keys one head size, got (heads, size) "
                               f"{(hq, dq)}, {(hk, dk)}, {(hv, dv)}")
        axes = [head_axes(x, t.shape(a))[0] for x, a in zip((q, k, v), qkv)]
        if not (q.rank == k.rank == v.rank) or not (axes[0] == axes[1] == axes[2]):
            t.fail(node, what, "queries, keys and values must have their heads and features on "
                               "the same axes")
        masks = mask_inputs(t, node, what, {"attn_mask": p.get("attn_mask")})
        vid = t.new_vid()
        t.ops.append({"op": "attention", "in": [q.vid, k.vid, v.vid, *masks.values()],
                      "out": vid, "heads": hq, "head_dim": dq, "v_head_dim": dv,
                      "causal": causal, "scale": None if scale is None else float(scale),
                      **({"mask": True} if masks else {})})
        t.vals[node] = t.value(vid, list(v.parts), v.chan, v.rank, None, v.caxes, v.csplit)

    def trace_method(self, t, node, name):
        self._scores(t, node, node.args, node.kwargs)

    # -- the written-out form: softmax(q @ k.transpose(-2, -1) * scale) @ v ------------------
    def _scores(self, t, node, args, kwargs):
        """``q @ kT`` of two traced values: the scores (no channels), recorded for the ops that
        follow (``reads_scores``) until ``@ v`` ends the attention."""
        what = "matmul"
        if kwargs or len(args) != 2:
            t.fail(node, what, "expects two tensors")
        q, kt = (t.tensor_arg(node, a) for a in args)
        (hq, dq), (hk, dk) = (head_layout(t, node, q, what, shape=t.shape(args[0])),
                              head_layout(t, node, kt, what, True, shape=t.shape(args[1])))
        qaxes = head_axes(q, t.shape(args[0]))[0]
        if (hq != hk or dq != dk or q.rank != kt.rank
                or qaxes[:-1] != head_axes(kt, t.shape(args[1]), True)[0][:-1]):
            t.fail(node, what, "a product of two layers' values is read only as attention "
                               "scores q @ k.transpose(-2, -1), with one number of heads and "
                               "one head size")
        _scores(t)[node] = {"q": q, "kt": kt, "steps": [], "heads": hq, "head_dim": dq,
                            "axes": qaxes}
        t.vals[node] = None

    def reads_scores(self, t, node) -> bool:
        """Read ``node`` when it uses attention scores (``converters.trace`` asks first): a
        scale by a constant, a softmax over the keys, an eval-mode dropout, and ``@ v``,
        which emits the ``attention`` op with the ``steps`` seen. False when it uses none."""
        sc = t.__dict__.get("attn_scores")
        src = next((a for a in node.all_input_nodes if a in sc), None) if sc else None
        if src is None:
            return False
        info, what = sc[src], f"attention scores ({node.name})"
        fn = node.target if node.op != "call_module" else t.gm.get_submodule(node.target)
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", type(fn).__name__)
        args, kw = list(node.args), dict(node.kwargs)
        soft = any(s[0] == "softmax" for s in info["steps"])
        others = [a for a in args if a is not src]
        if name in ("mul", "truediv", "div") and len(args) == 2 and not kw and not soft:
            c = size_value(t, others[0]) if others else None
            if not is_number(c) or (name != "mul" and args[0] is not src):
                t.fail(node, what, "scores may be multiplied or divided by a Python number only")
            step = ["mul" if name == "mul" else "div", float(c), args[0] is not src]
        elif name in ("add", "masked_fill") and not soft and len(args) >= 2 and not kw and (
                any(a in _extra(t) for a in others)):
            m = next(a for a in others if a in _extra(t))
            extra = info.get("extra", [])
            pos = 3 + len(extra)
            if name == "add":
                step = ["add_mask", pos, args[0] is not src]
            else:
                fill = args[2] if len(args) == 3 else None
                if args[0] is not src or isinstance(fill, bool) or not isinstance(fill,
                                                                                  (int, float)):
                    t.fail(node, what, "masked_fill(mask, value) needs a Python number")
                step = ["masked_fill", pos, float(args[2])]
            sc[node] = {**info, "steps": info["steps"] + [step], "extra": extra + [_extra(t)[m]]}
            t.vals[node] = None
            return True
        elif name in ("softmax", "Softmax") and not soft:
            dim = (fn.dim if node.op == "call_module" else
                   kw.get("dim", args[1] if len(args) > 1 else None))
            rank = info["q"].rank
            if not isinstance(dim, int) or dim % rank != rank - 1 or kw.get("dtype") or (
                    node.op != "call_module" and len(args) > 2):
                t.fail(node, what, f"the softmax must be over the keys (the last axis, "
                                   f"dim=-1) without a dtype, got dim={dim!r}")
            step = ["softmax", rank - 1]
        elif name in ("dropout", "Dropout") and soft and (
                node.op == "call_module" or kw.get("training", args[2] if len(args) > 2
                                                   else True) is False):
            t.vals[node] = None      # an eval-mode dropout: the identity
            sc[node] = info
            return True
        elif name in ("matmul",) and soft and len(args) == 2 and args[0] is src:
            v = t.tensor_arg(node, args[1])
            hv, dv = head_layout(t, node, v, what, shape=t.shape(args[1]))
            q, kt = info["q"], info["kt"]
            if (hv != info["heads"] or v.rank != q.rank
                    or head_axes(v, t.shape(args[1]))[0] != info["axes"]):
                t.fail(node, what, "the values must have the queries' heads and axes")
            vid = t.new_vid()
            t.ops.append({"op": "attention", "in": [q.vid, kt.vid, v.vid, *info.get("extra", [])],
                          "out": vid,
                          "heads": hv, "head_dim": info["head_dim"], "v_head_dim": dv,
                          "causal": False, "scale": None, "steps": info["steps"]})
            t.vals[node] = t.value(vid, list(v.parts), v.chan, v.rank, None, v.caxes, v.csplit)
            return True
        else:
            t.fail(node, what, "attention scores q @ k.transpose(-2, -1) may only be scaled "
                               "by a constant, softmaxed over the keys (dim=-1), dropped out "
                               "in eval mode and multiplied by the values (softmax(...) @ v)")
        sc[node] = {**info, "steps": info["steps"] + [step]}
        t.vals[node] = None
        return True

    def out_parts(self, op, parts):
        return list(parts[op["in"][2]])

    def constrain(self, op, s):
        q, k, v = op["in"][:3]
        s.allow[v] &= s.allow[op["out"]]     # the output is linear in every column of V
        if s.parts[q] == s.parts[k]:         # scores read q_d q_d: only a sign flips both
            s.restrict(q, NEG)

    def couple(self, op, s):
        q, k, v = (s.parts[x][0] for x in op["in"][:3])
        couple_heads(s, q, k, v, op["heads"], op["head_dim"], op["v_head_dim"])

    def attention_heads(self, op, parts):
        q, k, v = (parts[x][0] for x in op["in"][:3])
        return ((q, k, v, op["heads"], op["head_dim"], op["v_head_dim"]),)

    def apply(self, op, ins):
        if "steps" not in op:
            return F.scaled_dot_product_attention(
                ins[0], ins[1], ins[2], attn_mask=ins[3] if op.get("mask") else None,
                is_causal=op["causal"], scale=op["scale"])
        s = ins[0] @ ins[1]                   # the written-out form, step by step
        for step in op["steps"]:
            if step[0] == "softmax":
                s = s.softmax(step[1])
            elif step[0] == "add_mask":
                s = ins[step[1]] + s if step[2] else s + ins[step[1]]
            elif step[0] == "masked_fill":
                s = s.masked_fill(ins[step[1]], step[2])
            elif step[0] == "mul":
                s = step[1] * s if step[2] else s * step[1]
            else:
                s = s / step[1]
        return s @ ins[2]


def size_value(t, n):
    """The Python value of ``n``: a constant, or an expression of sizes of the features
    (``k.size(-1)``, ``q.shape[-1]``, ``E // H``, ``math.sqrt``) read from the recorded shapes.
    None when it reads any other size (a token count, which the graph does not record) or is not
    such an expression."""
    if not isinstance(n, fx.Node):
        return n
    if n.op == "call_method" and n.target == "size" and len(n.args) == 2:
        return _feature_size(t, n.args[0], n.args[1])
    if n.op != "call_function":
        return None
    if n.target is operator.getitem and isinstance(n.args[0], fx.Node) and (
            n.args[0].op == "call_function" and n.args[0].target is getattr):
        return _feature_size(t, n.args[0].args[0], n.args[1])
    fns = (operator.floordiv, operator.truediv, operator.mul, operator.add, operator.sub,
           operator.pow, math.sqrt)
    if not any(n.target is f for f in fns) or n.kwargs:
        return None
    args = [size_value(t, a) for a in n.args]
    return None if any(a is None for a in args) else n.target(*args)


def _feature_size(t, src, axis):
    """The size of axis ``axis`` of the traced value ``src`` when it holds features (or is a
    head width of one, ``converters.ops.axes.unit_axes``)."""
    v = t.vals.get(src) if isinstance(src, fx.Node) else None
    if v is None or not isinstance(axis, int) or (axis % v.rank not in v.caxes
                                                  and axis % v.rank not in unit_axes(t, v)):
        return None
    return t.shape(src)[axis]


def _extra(t) -> dict:
    """fx node -> value id of the further model inputs (``extra_input``: attention masks)."""
    return t.__dict__.setdefault("extra_inputs", {})


def mask_inputs(t, node, what: str, masks: dict) -> dict:
    """``{name: value id}`` of the given masks (None: absent); each must be a further model
    input, passed unchanged (refused otherwise, naming ``node``)."""
    out = {}
    for name, m in masks.items():
        if m is None or m in t.__dict__.get("absent_inputs", ()):
            continue
        if m not in _extra(t):
            t.fail(node, what, f"'{name}' must be a further input of the model, passed unchanged "
                               f"(forward(self, x, mask)); other masks are not supported")
        out[name] = _extra(t)[m]
    return out


class ExtraInput(OpRule):
    """``extra_input``: a further model input (``index``: its position in the call, from 1;
    ``rank``), read only as an attention mask: no channels, no nodes. ``to_graph(model, (x,
    mask))``; the rebuilt module and ``functional_forward`` take it after ``x``."""

    kind = "extra_input"
    doc = "a further model input (an attention mask): ``index``, ``rank``; no nodes"

    def trace_placeholder(self, t, node) -> None:
        if node.meta.get("tensor_meta") is None:
            if node.args and node.args[0] is None:   # an optional input left out: None
                t.__dict__.setdefault("absent_inputs", set()).add(node)
                t.vals[node] = None
                return
            t.fail(node, "input", "a further model input must be a tensor (an attention mask)")
        vid = t.new_vid()
        index = [n for n in t.gm.graph.nodes if n.op == "placeholder"].index(node)
        t.ops.append({"op": "extra_input", "index": index, "out": vid,
                      "rank": len(t.shape(node))})
        _extra(t)[node] = vid
        t.vals[node] = None
        t.__dict__.setdefault("untraced", {})[node] = ("a further model input is read only as "
                                                       "an attention mask")

    def out_parts(self, op, parts):
        return []


def _scores(t) -> dict:
    """fx node -> the attention scores it holds (queries, transposed keys, steps so far)."""
    return t.__dict__.setdefault("attn_scores", {})


def couple_heads(s, q: int, k: int, v: int, heads: int, d: int, dv: int) -> None:
    """Queries and keys share one permutation and reciprocal factors; permutations of the
    queries, keys and values stay inside each head, and whole heads move together, one
    permutation of the heads for all three (``SymmetryState.block_perm``)."""
    if q != k:
        s.align.union(q, k)
        s.inverse_tie(q, k)
    s.block_perm([(q, d), (k, d), (v, dv)], heads)
