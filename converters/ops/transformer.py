"""``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``, ``nn.TransformerDecoderLayer`` and
``nn.TransformerDecoder`` read as the ops of their parts (``mha``, ``add``, ``layernorm``,
``linear``, ``act``) at their own module paths (docs/design.md 3.8); and the training-mode check
of the attention and transformer layers (``active_dropout``)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .base import OpRule
from .mha import _claim, check_mha, emit_mha


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
