"""Attention: ``F.scaled_dot_product_attention`` on traced queries, keys and values (op kind
``attention``, parameter-free, no new nodes), ``nn.MultiheadAttention`` (op kind ``mha``: its
projections are node sets), and ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``, read
as the ops of their parts (``mha``, ``add``, ``layernorm``, ``linear``, ``act``).

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
of that head together) is a symmetry too, but a permutation class cannot say "blocks move
together": not declared (the smaller group), tested as a symmetry that is never sampled.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..groups import NEG
from .base import Edges, FeatureSlot, OpRule, is_number


def head_layout(t, node, x, what: str, transposed: bool = False) -> tuple:
    """``(heads, head_dim)`` of an attention operand ``x`` (a ``_Val``): one node set, the
    features of one head on the last axis, the tokens on the axis before (``transposed``: the
    other way round, a transposed key), the heads (when the features are split) on an axis
    before both. Refused, naming ``node``, otherwise."""
    t.single_set(node, what, x)
    r = x.rank
    if r < 3:
        t.fail(node, what, f"its operands must be (batch, ..., tokens, features), got rank {r}")
    fa = r - 2 if transposed else r - 1
    if x.cdim is not None:
        if x.cdim != fa:
            t.fail(node, what, f"it reads the features on axis {fa}, but its operand's "
                               f"features are on axis {x.cdim}")
        return 1, x.chan
    if len(x.caxes) != 2 or x.caxes[1] != fa or x.caxes[0] >= r - 2:
        t.fail(node, what, f"its operand's features are split over axes {list(x.caxes)} (sizes "
                           f"{list(x.csplit)}): attention needs the heads on an axis before the "
                           f"tokens and each head's features on the last axis "
                           f"(x.view(B, T, H, D).transpose(1, 2))")
    return tuple(int(c) for c in x.csplit)


def _const(t, node, what: str, name: str, v, kinds=(bool,)):
    if isinstance(v, fx.Node) or not isinstance(v, kinds):
        t.fail(node, what, f"'{name}' must be a Python constant ({kinds[0].__name__}), got {v!r}")
    return v


class Attention(OpRule):
    """``attention``: ``F.scaled_dot_product_attention(q, k, v)``; ``in`` = [q, k, v],
    ``heads``, ``head_dim`` (of q and k), ``v_head_dim``, ``causal``, ``scale`` (None: 1 /
    sqrt(head_dim)). Parameter-free; its channels are ``v``'s."""

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
        if p.get("attn_mask") is not None:
            t.fail(node, what, "an attention mask (attn_mask) is not supported; is_causal is")
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
        q, k, v = (t.tensor_arg(node, p.get(n)) for n in self._NAMES[:3])
        (hq, dq), (hk, dk), (hv, dv) = (head_layout(t, node, x, what) for x in (q, k, v))
        if not (hq == hk == hv) or dq != dk:
            t.fail(node, what, f"queries, keys and values must have one number of heads and "
                               f"queries and keys one head size, got (heads, size) "
                               f"{(hq, dq)}, {(hk, dk)}, {(hv, dv)}")
        if not (q.rank == k.rank == v.rank) or not (q.caxes == k.caxes == v.caxes):
            t.fail(node, what, "queries, keys and values must have their heads and features on "
                               "the same axes")
        vid = t.new_vid()
        t.ops.append({"op": "attention", "in": [q.vid, k.vid, v.vid], "out": vid, "heads": hq,
                      "head_dim": dq, "v_head_dim": dv, "causal": causal,
                      "scale": None if scale is None else float(scale)})
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
        (hq, dq), (hk, dk) = head_layout(t, node, q, what), head_layout(t, node, kt, what, True)
        if hq != hk or dq != dk or q.rank != kt.rank or q.caxes[:-1] != kt.caxes[:-1]:
            t.fail(node, what, "a product of two layers' values is read only as attention "
                               "scores q @ k.transpose(-2, -1), with one number of heads and "
                               "one head size")
        _scores(t)[node] = {"q": q, "kt": kt, "steps": [], "heads": hq, "head_dim": dq}
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
            hv, dv = head_layout(t, node, v, what)
            q, kt = info["q"], info["kt"]
            if hv != info["heads"] or v.rank != q.rank or v.caxes != q.caxes:
                t.fail(node, what, "the values must have the queries' heads and axes")
            vid = t.new_vid()
            t.ops.append({"op": "attention", "in": [q.vid, kt.vid, v.vid], "out": vid,
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
        q, k, v = op["in"]
        s.allow[v] &= s.allow[op["out"]]     # the output is linear in every column of V
        if s.parts[q] == s.parts[k]:         # scores read q_d q_d: only a sign flips both
            s.restrict(q, NEG)

    def couple(self, op, s):
        q, k, v = (s.parts[x][0] for x in op["in"])
        couple_heads(s, q, k, v, op["heads"], op["head_dim"], op["v_head_dim"])

    def apply(self, op, ins):
        if "steps" not in op:
            return F.scaled_dot_product_attention(ins[0], ins[1], ins[2],
                                                  is_causal=op["causal"], scale=op["scale"])
        s = ins[0] @ ins[1]                   # the written-out form, step by step
        for step in op["steps"]:
            if step[0] == "softmax":
                s = s.softmax(step[1])
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
    """The size of axis ``axis`` of the traced value ``src`` when it holds features."""
    v = t.vals.get(src) if isinstance(src, fx.Node) else None
    if v is None or not isinstance(axis, int) or axis % v.rank not in v.caxes:
        return None
    return t.shape(src)[axis]


def _scores(t) -> dict:
    """fx node -> the attention scores it holds (queries, transposed keys, steps so far)."""
    return t.__dict__.setdefault("attn_scores", {})


def couple_heads(s, q: int, k: int, v: int, heads: int, d: int, dv: int) -> None:
    """Queries and keys share one permutation and reciprocal factors; permutations of the
    queries, keys and values stay inside each head."""
    if q != k:
        s.align.union(q, k)
        s.inverse_tie(q, k)
    for h in range(1, heads):
        s.cuts[q].add(h * d)
        s.cuts[k].add(h * d)
        s.cuts[v].add(h * dv)


# -- nn.MultiheadAttention ---------------------------------------------------------------------
def _claim(t, node, path: str, m: nn.Module) -> None:
    """Claim the parameters of ``m`` (at ``path``, a layer inside a leaf module) and ``m``."""
    if path in t.used_modules:
        t.fail(node, type(m).__name__, f"module '{path}' called more than once (weight sharing)")
    t.used_modules[path] = m
    for name, p in list(m.named_parameters()) + list(m.named_buffers()):
        if id(p) in t.used_params:
            t.fail(node, type(m).__name__, f"parameter '{path}.{name}' is shared with "
                                           f"'{t.used_params[id(p)]}' (tied weights)")
        t.used_params[id(p)] = f"{path}.{name}"


def check_mha(t, node, m: nn.MultiheadAttention, path: str) -> None:
    """Refuse, naming the module, the ``nn.MultiheadAttention`` options the graph cannot hold."""
    what = f"MultiheadAttention '{path}'"
    if m.bias_k is not None or m.bias_v is not None:
        t.fail(node, what, "add_bias_kv=True is not supported (the learned key/value rows)")
    if m.add_zero_attn:
        t.fail(node, what, "add_zero_attn=True is not supported")


def emit_mha(t, node, path: str, m: nn.MultiheadAttention, q, k, v, need_weights: bool,
             same: tuple):
    """Append the ``mha`` op of module ``m`` at ``path`` reading the values ``q, k, v``; returns
    the value of its output (the output projection's node set). ``same``: whether the module
    was called with the key object the query (``same[0]``) and the value object the key."""
    what = f"MultiheadAttention '{path}'"
    for x, n, name in ((q, m.embed_dim, "query"), (k, m.kdim, "key"), (v, m.vdim, "value")):
        if x.rank != 3:
            t.fail(node, what, f"only batched inputs (rank 3) are supported, its {name} has "
                               f"rank {x.rank}")
        if x.flat is not None or x.cdim != x.rank - 1:
            t.fail(node, what, f"its {name} must hold the features on the last axis")
        if x.chan != n:
            t.fail(node, what, f"its {name} has {x.chan} features, the module expects {n}")
    E = m.embed_dim
    first = len(t.sizes)
    for i, part in enumerate(("q", "k", "v", "out_proj")):
        t.sizes[first + i], t.names[first + i] = E, f"{path}.{part}"
    vid = t.new_vid()
    t.ops.append({"op": "mha", "module": path, "in": [q.vid, k.vid, v.vid], "out": vid,
                  "ns": first + 3, "qkv": [first, first + 1, first + 2], "embed_dim": E,
                  "num_heads": m.num_heads, "kdim": m.kdim, "vdim": m.vdim,
                  "packed": bool(m._qkv_same_embed_dim), "bias": m.in_proj_bias is not None,
                  "batch_first": bool(m.batch_first), "dropout": float(m.dropout),
                  "need_weights": bool(need_weights), "same": [bool(same[0]), bool(same[1])]})
    return t.value(vid, [first + 3], E, q.rank, None, (q.rank - 1,), None)


def _items(t) -> dict:
    """fx node -> the output value of the ``nn.MultiheadAttention`` call whose tuple it is."""
    return t.__dict__.setdefault("mha_items", {})


def _nodes(lay, parts) -> torch.Tensor:
    return torch.cat([torch.arange(lay.offsets[p], lay.offsets[p + 1]) for p in parts])


class MultiheadAttention(OpRule):
    """``mha``: ``nn.MultiheadAttention`` at ``module``; ``in`` = [query, key, value] values;
    writes the node sets ``qkv`` (queries, keys, values: the rows of ``in_proj_weight``, or of
    ``q/k/v_proj_weight`` when ``packed`` is false) and ``ns`` (the output projection);
    ``embed_dim``, ``num_heads``, ``kdim``, ``vdim``, ``bias``, ``batch_first``, ``dropout``,
    ``need_weights`` (as called: the output's arithmetic depends on it), ``same`` (the call
    passed the query object as the key, the key object as the value). Also reads indexing of
    the module's ``(output, weights)`` tuple: the weights are no node set (refused if used)."""

    kind = "mha"
    creates_nodes = True
    modules = (nn.MultiheadAttention,)
    functions = (operator.getitem,)
    #: the tracer hands over the call with all its arguments (``converters.trace``)
    reads_call = True
    doc = ("``nn.MultiheadAttention``: ``module``, sizes, ``packed``, ``bias``, ``batch_first``; "
           "writes ``qkv`` and ``ns`` (the output projection)")

    _NAMES = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
              "average_attn_weights", "is_causal")

    def trace_module(self, t, node, m, x):
        path = node.target
        what = f"MultiheadAttention '{path}'"
        p = dict(zip(self._NAMES, node.args))
        for key, val in node.kwargs.items():
            if key not in self._NAMES:
                t.fail(node, what, f"unexpected argument {key!r}")
            p[key] = val
        check_mha(t, node, m, path)
        for key in ("key_padding_mask", "attn_mask"):
            if p.get(key) is not None:
                t.fail(node, what, f"'{key}' is not supported")
        if _const(t, node, what, "is_causal", p.get("is_causal", False)):
            t.fail(node, what, "is_causal=True needs attn_mask, which is not supported")
        need = _const(t, node, what, "need_weights", p.get("need_weights", True))
        _const(t, node, what, "average_attn_weights", p.get("average_attn_weights", True))
        args = [p.get(n) for n in self._NAMES[:3]]
        q, k, v = (t.tensor_arg(node, a) for a in args)
        _claim(t, node, path, m)
        _items(t)[node] = emit_mha(t, node, path, m, q, k, v, need,
                                   (args[1] is args[0], args[2] is args[1]))
        t.vals[node] = None

    def trace_function(self, t, node, fn, args, kwargs, name):
        src, idx = args
        if src not in _items(t):   # not ours: the next rule reading getitem (recurrent layers)
            from . import FORMS
            rule = next((r for r in FORMS[FORMS.index(self) + 1:]
                         if r.matches_function(fn, name)), None)
            if rule is None:
                t.fail(node, "indexing", "indexing or slicing a traced tensor is unsupported")
            return rule.trace_function(t, node, fn, args, kwargs, name)
        where = f"the result of MultiheadAttention '{src.target}'"
        if idx == 0:
            t.vals[node] = _items(t)[src]
        elif idx == 1:
            if node.users:
                t.fail(node, "attention weights", f"{where}[1], the attention weights, is not a "
                                                  f"node set of the graph: use only the output")
            t.vals[node] = None
        else:
            t.fail(node, "indexing", f"{where} is (output, weights): index 0, got {idx!r}")

    # -- structure ----------------------------------------------------------------------------
    def out_parts(self, op, parts):
        return [op["ns"]]

    def inner_sets(self, op):
        return list(op["qkv"])

    def feature_columns(self, op):
        return ("bias",)

    def constrain(self, op, s):
        """Its inputs' factors are absorbed by the projection weights' columns; the value
        neurons' by the output projection's columns (nothing to restrict)."""

    def couple(self, op, s):
        q, k, v = op["qkv"]
        H = op["num_heads"]
        D = op["embed_dim"] // H
        couple_heads(s, q, k, v, H, D, D)

    def edge_blocks(self, op, lay):
        E, path = op["embed_dim"], op["module"]
        Q, K, V = op["qkv"]
        srcs = [_nodes(lay, lay.parts[x]) for x in op["in"]]
        blocks = []
        if op["packed"]:
            src = torch.cat([n[None, :].expand(E, -1) for n in srcs])
            blocks.append(Edges(src, (), path + ".in_proj_weight", "weight", (3 * E, E), dst=Q))
        else:
            for n, key, ns in zip(srcs, ("q", "k", "v"), (Q, K, V)):
                blocks.append(Edges(n[None, :].expand(E, -1), (), f"{path}.{key}_proj_weight",
                                    "weight", (E, len(n)), dst=ns))
        vn = torch.arange(lay.offsets[V], lay.offsets[V] + E)
        blocks.append(Edges(vn[None, :].expand(E, -1), (), path + ".out_proj.weight", "weight",
                            (E, E)))
        return blocks

    def features(self, op, lay):
        if not op["bias"]:
            return []
        E, path, col = op["embed_dim"], op["module"], lay.col["bias"]
        return [FeatureSlot(path + ".in_proj_bias", col, lay.offsets[op["qkv"][0]], 3 * E, False),
                FeatureSlot(path + ".out_proj.bias", col, lay.offsets[op["ns"]], E, False)]

    # -- running ------------------------------------------------------------------------------
    def to_module(self, op):
        return nn.MultiheadAttention(op["embed_dim"], op["num_heads"], dropout=op["dropout"],
                                     bias=op["bias"], kdim=op["kdim"], vdim=op["vdim"],
                                     batch_first=op["batch_first"])

    def forward(self, op, module, ins):
        q, k, v = ins
        # the module's arithmetic depends on which arguments are one object (a packed
        # projection of q alone, or of q, k, v at once): the call's identities are restored
        if k is q and not op["same"][0]:
            k = k.view(k.shape)
        if v is k and not op["same"][1]:
            v = v.view(v.shape)
        return module(q, k, v, need_weights=op["need_weights"])[0]

    def batched(self, op, ins, params, B):
        path, E = op["module"], op["embed_dim"]
        P = lambda key: params.get(f"{path}.{key}")
        outs = []
        for b in range(B):
            q, k, v = (x.reshape(B, -1, *x.shape[1:])[b] for x in ins)
            if op["batch_first"]:
                q, k, v = (x.transpose(0, 1) for x in (q, k, v))
            pick = lambda key: None if P(key) is None else P(key)[b]
            o, _ = F.multi_head_attention_forward(
                q, k, v, E, op["num_heads"], pick("in_proj_weight"), pick("in_proj_bias"),
                None, None, False, 0.0, pick("out_proj.weight"), pick("out_proj.bias"),
                training=False, need_weights=False,
                use_separate_proj_weight=not op["packed"], q_proj_weight=pick("q_proj_weight"),
                k_proj_weight=pick("k_proj_weight"), v_proj_weight=pick("v_proj_weight"))
            outs.append(o.transpose(0, 1) if op["batch_first"] else o)
        return torch.cat(outs)

    def act(self, op, sd, a, parts):
        path, E = op["module"], op["embed_dim"]
        Q, K, V = op["qkv"]
        ins = [parts[x] for x in op["in"]]
        q_rows, p_rows = a.q_of([Q, K, V]), a.perm_of([Q, K, V])

        def weight(W, q_out, src):
            return a.moved(a.scaled(W, q_out[:, None] / a.q_of(src)[None, :]), a.perm_of(src), 1)

        if op["packed"]:
            key = path + ".in_proj_weight"
            W = torch.cat([weight(sd[key][i * E:(i + 1) * E], q_rows[i * E:(i + 1) * E], src)
                           for i, src in enumerate(ins)])
            sd[key] = a.moved(W, p_rows, 0)
        else:
            for name, ns, src in zip("qkv", (Q, K, V), ins):
                key = f"{path}.{name}_proj_weight"
                sd[key] = a.moved(weight(sd[key], a.q(ns), src), a.perm(ns), 0)
        key = path + ".out_proj.weight"
        sd[key] = a.moved(weight(sd[key], a.q(op["ns"]), [V]), a.perm(op["ns"]), 0)
        if op["bias"]:
            b = path + ".in_proj_bias"
            sd[b] = a.moved(a.scaled(sd[b], q_rows), p_rows)
            b = path + ".out_proj.bias"
            sd[b] = a.moved(a.scaled(sd[b], a.q(op["ns"])), a.perm(op["ns"]))


def active_dropout(m: nn.Module, path: str, modes: dict):
    """Why the attention or transformer layer ``m`` (a traced leaf at ``path``) computes another
    function than in eval mode under the training flags ``modes`` (``{module path: training}``):
    a dropout inside it that is active; None when there is none."""
    if not isinstance(m, _LEAVES):
        return None
    for name, sub in m.named_modules():
        full = f"{path}.{name}" if name else path
        p = (sub.p if isinstance(sub, nn.modules.dropout._DropoutNd)
             else sub.dropout if isinstance(sub, nn.MultiheadAttention) else 0.0)
        if p and modes.get(full, False):
            return f"'{full}' is in training mode, where its dropout (p={p}) is active"
    return None


# -- nn.TransformerEncoderLayer, nn.TransformerEncoder ------------------------------------------
def _act_op(t, node, what: str, act) -> dict:
    """The ``act`` op of a transformer layer's activation (ReLU or GELU, function or module)."""
    if act is F.relu or isinstance(act, nn.ReLU):
        return {"op": "act", "name": "relu", "params": {}}
    if act is F.gelu:
        return {"op": "act", "name": "gelu", "params": {"approximate": "none"}}
    if isinstance(act, nn.GELU):
        return {"op": "act", "name": "gelu", "params": {"approximate": act.approximate}}
    t.fail(node, what, f"activation {act!r} is not supported (relu and gelu are)")


class _Emit:
    """Appends the ops of a transformer layer's parts after the value ``x`` (helpers)."""

    def __init__(self, t, node, what):
        self.t, self.node, self.what = t, node, what

    def new_set(self, op, ins, size, name):
        t = self.t
        ns = len(t.sizes)
        t.sizes[ns], t.names[ns] = size, name
        vid = t.new_vid()
        t.ops.append({**op, "in": [v.vid for v in ins], "out": vid, "ns": ns})
        x = ins[0]
        return t.value(vid, [ns], size, x.rank, None, (x.rank - 1,), None)

    def chain(self, op, x):
        vid = self.t.new_vid()
        self.t.ops.append({**op, "in": [x.vid], "out": vid})
        return self.t.value(vid, list(x.parts), x.chan, x.rank, None, x.caxes, x.csplit)

    def linear(self, path, m, x):
        if x.chan != m.in_features:
            self.t.fail(self.node, self.what, f"'{path}' reads {m.in_features} features, its "
                                              f"input has {x.chan}")
        _claim(self.t, self.node, path, m)
        return self.new_set({"op": "linear", "module": path, "in_features": m.in_features,
                             "out_features": m.out_features, "bias": m.bias is not None,
                             "spatial": []}, [x], m.out_features, path)

    def layernorm(self, path, m, x):
        if tuple(m.normalized_shape) != (x.chan,) or not m.elementwise_affine:
            self.t.fail(self.node, self.what, f"'{path}' must be a LayerNorm over the "
                                              f"{x.chan} features with elementwise_affine=True")
        pre = self.t.single_set(self.node, self.what, x)
        _claim(self.t, self.node, path, m)
        return self.new_set({"op": "layernorm", "module": path, "normalized_shape": [x.chan],
                             "eps": float(m.eps), "bias": m.bias is not None, "pre": pre},
                            [x], x.chan, path)

    def add(self, a, b, name):
        sa, sb = (self.t.single_set(self.node, self.what, v) for v in (a, b))
        if sa == sb:
            self.t.fail(self.node, self.what, "adding a layer to itself is unsupported")
        return self.new_set({"op": "add"}, [a, b], a.chan, name)


def emit_encoder_layer(t, node, path: str, m: nn.TransformerEncoderLayer, x):
    """Append the ops of ``nn.TransformerEncoderLayer`` ``m`` (at ``path``) on value ``x`` in its
    eval-mode order (``norm_first`` or not); returns the output value."""
    what = f"TransformerEncoderLayer '{path}'"
    e = _Emit(t, node, what)
    act = _act_op(t, node, what, m.activation)
    if isinstance(m.activation, nn.Module):
        _claim(t, node, f"{path}.activation", m.activation)
    check_mha(t, node, m.self_attn, f"{path}.self_attn")
    if x.flat is not None or x.rank != 3 or x.cdim != x.rank - 1:
        t.fail(node, what, "its input must be (batch, tokens, features) with the features last "
                           "(or (tokens, batch, features) without batch_first)")
    sa_path = f"{path}.self_attn"

    def sa(v):
        _claim(t, node, sa_path, m.self_attn)
        return emit_mha(t, node, sa_path, m.self_attn, v, v, v, False, (True, True))

    def ff(v):
        h = e.chain(act, e.linear(f"{path}.linear1", m.linear1, v))
        return e.linear(f"{path}.linear2", m.linear2, h)

    if m.norm_first:
        x = e.add(x, sa(e.layernorm(f"{path}.norm1", m.norm1, x)), f"{path}:add1")
        return e.add(x, ff(e.layernorm(f"{path}.norm2", m.norm2, x)), f"{path}:add2")
    x = e.layernorm(f"{path}.norm1", m.norm1, e.add(x, sa(x), f"{path}:add1"))
    return e.layernorm(f"{path}.norm2", m.norm2, e.add(x, ff(x), f"{path}:add2"))


def emit_decoder_layer(t, node, path: str, m: nn.TransformerDecoderLayer, x, mem):
    """Append the ops of ``nn.TransformerDecoderLayer`` ``m`` (at ``path``) on the target value
    ``x`` and the memory value ``mem``, in its eval-mode order; returns the output value."""
    what = f"TransformerDecoderLayer '{path}'"
    e = _Emit(t, node, what)
    act = _act_op(t, node, what, m.activation)
    if isinstance(m.activation, nn.Module):
        _claim(t, node, f"{path}.activation", m.activation)
    for sub in ("self_attn", "multihead_attn"):
        check_mha(t, node, getattr(m, sub), f"{path}.{sub}")
    for v, name in ((x, "target"), (mem, "memory")):
        if v.flat is not None or v.rank != 3 or v.cdim != v.rank - 1:
            t.fail(node, what, f"its {name} must be (batch, tokens, features) with the features "
                               f"last (or (tokens, batch, features) without batch_first)")

    def attn(sub, q, kv, same):
        sp = f"{path}.{sub}"
        _claim(t, node, sp, getattr(m, sub))
        return emit_mha(t, node, sp, getattr(m, sub), q, kv, kv, False, same)

    def sa(v):
        return attn("self_attn", v, v, (True, True))

    def ca(v):
        return attn("multihead_attn", v, mem, (v is mem, True))

    def ff(v):
        h = e.chain(act, e.linear(f"{path}.linear1", m.linear1, v))
        return e.linear(f"{path}.linear2", m.linear2, h)

    norm = lambda i, v: e.layernorm(f"{path}.norm{i}", getattr(m, f"norm{i}"), v)
    if m.norm_first:
        x = e.add(x, sa(norm(1, x)), f"{path}:add1")
        x = e.add(x, ca(norm(2, x)), f"{path}:add2")
        return e.add(x, ff(norm(3, x)), f"{path}:add3")
    x = norm(1, e.add(x, sa(x), f"{path}:add1"))
    x = norm(2, e.add(x, ca(x), f"{path}:add2"))
    return norm(3, e.add(x, ff(x), f"{path}:add3"))


_DEC_ARGS = ("tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask",
             "memory_key_padding_mask", "tgt_is_causal", "memory_is_causal")


class TransformerEncoder(OpRule):
    """No op kind of its own: ``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``,
    ``nn.TransformerDecoderLayer`` and ``nn.TransformerDecoder`` (in eval mode, without masks)
    are read as the ops of their parts, module by module at their own paths
    (``layers.0.self_attn``: an ``mha`` op; ``linear1``, ``norm1``, ...), so the rebuilt network
    holds the same parameters under the same keys."""

    kind = None
    modules = (nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.TransformerDecoderLayer,
               nn.TransformerDecoder)
    reads_call = True

    _ARGS = {nn.TransformerEncoderLayer: ("src", "src_mask", "src_key_padding_mask",
                                          "is_causal"),
             nn.TransformerEncoder: ("src", "mask", "src_key_padding_mask", "is_causal"),
             nn.TransformerDecoderLayer: _DEC_ARGS, nn.TransformerDecoder: _DEC_ARGS}

    def trace_module(self, t, node, m, x):
        path, what = node.target, f"{type(m).__name__} '{node.target}'"
        names = self._ARGS[type(m)]
        p = dict(zip(names, node.args))
        for key, val in node.kwargs.items():
            if key not in names:
                t.fail(node, what, f"unexpected argument {key!r}")
            p[key] = val
        decoder = names is _DEC_ARGS
        for key in (names[2:6] if decoder else names[1:3]):
            if p.get(key) is not None:
                t.fail(node, what, f"'{key}' is not supported")
        for key in (names[6:] if decoder else names[3:]):
            if p.get(key):
                t.fail(node, what, f"{key}=True needs a mask, which is not supported")
        x = t.tensor_arg(node, p.get(names[0]))
        if decoder and p.get("memory") is None:
            t.fail(node, what, "it needs the memory tensor: layer(tgt, memory)")
        mem = t.tensor_arg(node, p["memory"]) if decoder else None
        if path in t.used_modules:
            t.fail(node, what, "module called more than once (weight sharing)")
        t.used_modules[path] = m
        one = emit_decoder_layer if decoder else emit_encoder_layer
        extra = (mem,) if decoder else ()
        if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            y = one(t, node, path, m, x, *extra)
        else:
            y = x
            for i, layer in enumerate(m.layers):
                y = one(t, node, f"{path}.layers.{i}", layer, y, *extra)
            if m.norm is not None:
                y = _Emit(t, node, what).layernorm(f"{path}.norm", m.norm, y)
        t.vals[node] = y


_LEAVES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder,
           nn.TransformerDecoderLayer, nn.TransformerDecoder)
