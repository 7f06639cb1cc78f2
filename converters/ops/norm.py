"""Normalisations: eval-mode ``BatchNorm1d/2d/3d`` and ``LayerNorm`` over features.

Each becomes a node set after the normalised one, with one ``norm`` edge per channel
``pre -> post`` holding ``gamma``; ``beta`` is the post node's bias. The two node sets share one
permutation (``align``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..groups import ONE
from .base import Edges, FeatureSlot, OpRule

_BN = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}


def _norm_edges(op, lay) -> Edges:
    size = lay.sizes[op["ns"]]
    src = (lay.offsets[op["pre"]] + torch.arange(size))[:, None]
    return Edges(src, (), op["module"] + ".weight", "norm", (size,))


def _act_gamma_beta(op, sd, a, bias: bool) -> None:
    pre, post, m = op["pre"], op["ns"], op["module"]
    sd[m + ".weight"] = a.moved(a.scaled(sd[m + ".weight"], a.q(post) / a.q(pre)), a.perm(post))
    if bias:
        sd[m + ".bias"] = a.moved(a.scaled(sd[m + ".bias"], a.q(post)), a.perm(post))


class BatchNorm(OpRule):
    """``batchnorm``: eval-mode ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel.
    A pre channel scaled by any ``q != 0`` is absorbed exactly by ``gamma / q`` and ``mean * q``
    (``var`` unchanged: ``(q x - q mean) / sqrt(var + eps) * gamma / q`` is the old value), so
    the pre node set is unconstrained by it; running mean and variance are node features of the
    pre node set (``bn_mean`` transforms like the neuron, ``bn_var`` is invariant) and
    ``num_batches_tracked`` one of the post node set."""

    kind = "batchnorm"
    creates_nodes = True
    modules = tuple(_BN)
    doc = "eval-mode BatchNorm; ``pre`` (node set read) and ``ns`` (node set written)"

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        d = _BN[type(m)]
        pre = t.single_set(node, type(m).__name__, x)
        if not (m.affine and m.track_running_stats):
            t.fail(node, type(m).__name__, "BatchNorm needs affine=True and "
                                           "track_running_stats=True")
        t.channel_axis(node, type(m).__name__, x, "first")
        if x.rank not in (d + 1, d + 2) or (d == 1 and x.rank not in (2, 3)):
            t.fail(node, type(m).__name__, "unexpected input rank")
        other = t.bn_of.setdefault(pre, node.target)
        if other != node.target:   # both would keep their running statistics on these neurons
            t.fail(node, type(m).__name__, f"the neurons of '{t.names[pre]}' are already "
                                           f"normalised by the BatchNorm '{other}'; two "
                                           f"BatchNorms of one layer are unsupported")
        op = {"op": "batchnorm", "module": node.target, "dim": d, "num_features": m.num_features,
              "eps": float(m.eps), "momentum": m.momentum, "pre": pre}
        t.new_nodeset(node, op, [x], m.num_features, node.target)

    def feature_columns(self, op):
        return ("bias", "bn_mean", "bn_var", "bn_count")

    def constrain(self, op, s):
        """Absorbs any factor of its input: ``gamma / q`` and ``mean * q``."""

    def couple(self, op, s):
        s.align.union(op["pre"], op["ns"])

    def edges(self, op, lay):
        return _norm_edges(op, lay)

    def features(self, op, lay):
        m, pre, post = op["module"], lay.offsets[op["pre"]], lay.offsets[op["ns"]]
        size, col = lay.sizes[op["ns"]], lay.col
        return [FeatureSlot(m + ".bias", col["bias"], post, size, False),
                FeatureSlot(m + ".running_mean", col["bn_mean"], pre, size, False),
                FeatureSlot(m + ".running_var", col["bn_var"], pre, size, False),
                FeatureSlot(m + ".num_batches_tracked", col["bn_count"], post, size, True)]

    def to_module(self, op):
        cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[op["dim"]]
        return cls(op["num_features"], eps=op["eps"], momentum=op["momentum"])

    def batched(self, op, ins, params, B):
        t, m = ins[0], op["module"]
        n = t.shape[0] // B
        C = t.shape[1]
        shape = (B, 1, C) + (1,) * (t.dim() - 2)
        u = t.reshape(B, n, *t.shape[1:])
        mean = params[m + ".running_mean"].reshape(shape)
        var = params[m + ".running_var"].reshape(shape)
        gamma, beta = params[m + ".weight"].reshape(shape), params[m + ".bias"].reshape(shape)
        y = (u - mean) / torch.sqrt(var + op["eps"]) * gamma + beta
        return y.reshape(t.shape)

    def act(self, op, sd, a, parts):
        pre, m = op["pre"], op["module"]
        _act_gamma_beta(op, sd, a, True)
        sd[m + ".running_mean"] = a.moved(a.scaled(sd[m + ".running_mean"], a.q(pre)), a.perm(pre))
        sd[m + ".running_var"] = a.moved(sd[m + ".running_var"], a.perm(pre))


class LayerNorm(OpRule):
    """``layernorm``: LayerNorm over the features of ``(batch, features)`` or, token by token,
    of ``(batch, *tokens, features)``. Normalising removes
    every per-neuron factor of its input (``perm`` at most; a common positive factor is only
    approximately absorbed because of ``eps``); the post node set takes any factor through
    ``gamma`` and ``beta``."""

    kind = "layernorm"
    creates_nodes = True
    modules = (nn.LayerNorm,)
    doc = "LayerNorm over the channel (last) dimension; ``pre`` and ``ns``"

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        pre = t.single_set(node, "LayerNorm", x)
        if x.flat is not None:
            t.fail(node, "LayerNorm", "its input is a flattened feature map")
        t.channel_axis(node, "LayerNorm", x, "last")
        if tuple(m.normalized_shape) != (x.chan,):
            t.fail(node, "LayerNorm", f"only LayerNorm over the features (normalized_shape "
                                      f"({x.chan},)) is supported, got "
                                      f"{tuple(m.normalized_shape)}")
        if not m.elementwise_affine:
            t.fail(node, "LayerNorm", "LayerNorm needs elementwise_affine=True")
        op = {"op": "layernorm", "module": node.target, "normalized_shape": [x.chan],
              "eps": float(m.eps), "bias": m.bias is not None, "pre": pre}
        t.new_nodeset(node, op, [x], x.chan, node.target)

    def example_input(self, m, model, dtype):
        if len(m.normalized_shape) == 1:
            return True, torch.zeros(2, m.normalized_shape[0], dtype=dtype)
        return False, None

    def feature_columns(self, op):
        return ("bias",)

    def constrain(self, op, s):
        s.restrict(op["in"][0], ONE)

    def couple(self, op, s):
        s.align.union(op["pre"], op["ns"])

    def edges(self, op, lay):
        return _norm_edges(op, lay)

    def features(self, op, lay):
        if not op["bias"]:
            return []
        return [FeatureSlot(op["module"] + ".bias", lay.col["bias"], lay.offsets[op["ns"]],
                            lay.sizes[op["ns"]], False)]

    def to_module(self, op):
        return nn.LayerNorm(op["normalized_shape"][0], eps=op["eps"], bias=op["bias"])

    def batched(self, op, ins, params, B):
        t, m = ins[0], op["module"]
        C = t.shape[-1]                                  # (B * n, *tokens, C)
        u = F.layer_norm(t.reshape(B, -1, C), (C,), eps=op["eps"])
        u = u * params[m + ".weight"][:, None, :]
        if op["bias"]:
            u = u + params[m + ".bias"][:, None, :]
        return u.reshape(t.shape)

    def act(self, op, sd, a, parts):
        _act_gamma_beta(op, sd, a, op["bias"])
