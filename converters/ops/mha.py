"""``nn.MultiheadAttention`` (op kind ``mha``): its query, key and value projections and its
output projection are node sets; masks may be further model inputs. The symmetry is the one of
``converters.ops.attention`` (docs/design.md 3.8)."""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import _const, couple_heads, mask_inputs
from .base import Edges, FeatureSlot, OpRule


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
             same: tuple, masks: dict | None = None, causal: bool = False):
    """Append the ``mha`` op of module ``m`` at ``path`` reading the values ``q, k, v``; returns
    the value of its output (the output projection's node set). ``same``: whether the module
    was called with the key object the query (``same[0]``) and the value object the key;
    ``masks``: ``{attn_mask/key_padding_mask: value id}`` of further model inputs."""
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
    masks = dict(masks or {})
    t.ops.append({"op": "mha", "module": path, "in": [q.vid, k.vid, v.vid, *masks.values()],
                  "masks": list(masks), "is_causal": bool(causal), "out": vid,
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
        masks = mask_inputs(t, node, what, {k: p.get(k) for k in ("attn_mask",
                                                                   "key_padding_mask")})
        causal = bool(_const(t, node, what, "is_causal", p.get("is_causal", False)))
        if causal and "attn_mask" not in masks:
            t.fail(node, what, "is_causal=True needs attn_mask")
        need = _const(t, node, what, "need_weights", p.get("need_weights", True))
        _const(t, node, what, "average_attn_weights", p.get("average_attn_weights", True))
        args = [p.get(n) for n in self._NAMES[:3]]
        q, k, v = (t.tensor_arg(node, a) for a in args)
        _claim(t, node, path, m)
        _items(t)[node] = emit_mha(t, node, path, m, q, k, v, need,
                                   (args[1] is args[0], args[2] is args[1]), masks, causal)
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

    def attention_heads(self, op, parts):
        H = op["num_heads"]
        D = op["embed_dim"] // H
        return ((*op["qkv"], H, D, D),)

    def edge_blocks(self, op, lay):
        E, path = op["embed_dim"], op["module"]
        Q, K, V = op["qkv"]
        srcs = [_nodes(lay, lay.parts[x]) for x in op["in"][:3]]
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

    @staticmethod
    def _masks(op, ins) -> dict:
        kw = dict(zip(op.get("masks", ()), ins[3:]))
        return {**kw, "is_causal": True} if op.get("is_causal") else kw

    def forward(self, op, module, ins):
        q, k, v = ins[:3]
        # the module's arithmetic depends on which arguments are one object (a packed
        # projection of q alone, or of q, k, v at once): the call's identities are restored
        if k is q and not op["same"][0]:
            k = k.view(k.shape)
        if v is k and not op["same"][1]:
            v = v.view(v.shape)
        return module(q, k, v, need_weights=op["need_weights"], **self._masks(op, ins))[0]

    def batched(self, op, ins, params, B):
        path, E = op["module"], op["embed_dim"]
        P = lambda key: params.get(f"{path}.{key}")
        outs = []
        for b in range(B):
            q, k, v = (x.reshape(B, -1, *x.shape[1:])[b] for x in ins[:3])
            if op["batch_first"]:
                q, k, v = (x.transpose(0, 1) for x in (q, k, v))
            pick = lambda key: None if P(key) is None else P(key)[b]
            o, _ = F.multi_head_attention_forward(
                q, k, v, E, op["num_heads"], pick("in_proj_weight"), pick("in_proj_bias"),
                None, None, False, 0.0, pick("out_proj.weight"), pick("out_proj.bias"),
                training=False, need_weights=False,
                use_separate_proj_weight=not op["packed"], q_proj_weight=pick("q_proj_weight"),
                k_proj_weight=pick("k_proj_weight"), v_proj_weight=pick("v_proj_weight"),
                **self._masks(op, ins))
            outs.append(o.transpose(0, 1) if op["batch_first"] else o)
        return torch.cat(outs)

    def act(self, op, sd, a, parts):
        path, E = op["module"], op["embed_dim"]
        Q, K, V = op["qkv"]
        ins = [parts[x] for x in op["in"][:3]]
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
