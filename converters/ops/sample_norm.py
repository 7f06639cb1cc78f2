"""Normalisations by each sample's own statistics: ``GroupNorm``, ``InstanceNorm1d/2d/3d``
(``track_running_stats=False``) and ``RMSNorm`` over features.

With learned per-channel parameters (``affine`` / ``elementwise_affine``) each becomes a node set
after the normalised one, like ``BatchNorm`` and ``LayerNorm`` (``converters.ops.norm``): one
``norm`` edge per channel ``pre -> post`` holding ``gamma``, ``beta`` the post node's bias, the
two node sets aligned (one permutation). Without them the op has no parameters and no node set: it
acts on its input's channels in place, like an activation, passing on its consumers' constraints.

The factors each lets through its input, per channel (derivations in docs/design.md 3.5): with
``m`` and ``v`` the mean and variance a channel is normalised with and ``eps > 0``,
``(q x - q m) / sqrt(q^2 v + eps) = sign(q) (x - m) / sqrt(v + eps / q^2)``, which is
``sign(q)`` times the old value for every input only when ``q^2 = 1``. So:

- ``InstanceNorm`` (each channel its own statistics) and a ``GroupNorm`` with one channel per
  group: a sign flip per channel (``sign``), absorbed by ``gamma`` (``-gamma``) or passed to the
  output when there is no ``gamma``; any other factor changes the function;
- ``RMSNorm``: ``x / sqrt(mean(x^2) + eps)`` over the features; a sign flip of one channel
  leaves ``mean(x^2)`` unchanged and flips that channel's output: ``sign``; any magnitude change
  of one channel changes the shared normaliser;
- ``GroupNorm`` with several channels per group: a factor of one channel changes its group's
  mean and variance: no factor (``perm``). Permutations inside a group commute with it (the
  group statistics are symmetric in its channels), and so do moves of whole groups (channel
  ``c`` of group ``a`` to channel ``c`` of group ``b``, one permutation of the groups): both are
  declared, the moves as blocks (``SymmetryState.block_perm``; with one group, or one channel
  per group, every permutation is allowed and there is no block). Flipping a whole group is
  exact too (its mean flips, its variance does not) but not declared: docs/design.md 3.5.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..groups import NEG, ONE
from .base import FeatureSlot, OpRule
from .norm import _act_gamma_beta, _norm_edges

_IN = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}


def channels_on_axis_1(t, node, what: str, x) -> None:
    """Refuse (naming ``node``) a value whose channels are not on axis 1 (token-wise data
    ``(batch, *tokens, features)`` has them last): these layers read axis 1 as channels."""
    axis = getattr(x, "cdim", 1)
    if axis != 1:
        t.fail(node, what, f"it reads channels on axis 1, but its input's channels are on "
                           f"axis {axis}")


class _SampleNorm(OpRule):
    """Shared hooks: ``op["pre"]`` is the node set normalised; ``op["ns"]`` (the post node set)
    exists only with learned per-channel parameters (``op["affine"]``)."""

    #: op key telling whether the op has a beta (``None``: it never has one)
    bias_key: str | None = "affine"

    def _emit(self, t, node, x, op: dict, what: str) -> None:
        op = {**op, "module": node.target, "pre": t.single_set(node, what, x)}
        if op["affine"]:
            t.new_nodeset(node, op, [x], x.chan, node.target)
        else:
            t.emit(node, op, x)

    def input_bits(self, op: dict) -> int:
        """The factors of one input channel the normalisation absorbs or passes on."""
        return ONE

    def group_size(self, op: dict) -> int:
        """Channels per block (0: no block): permutations stay inside blocks or move whole
        blocks."""
        return 0

    def _has_bias(self, op) -> bool:
        return op["affine"] and (self.bias_key is not None and op.get(self.bias_key, False))

    # -- structure ------------------------------------------------------------------------
    def out_parts(self, op, parts):
        return [op["ns"]] if "ns" in op else list(parts[op["in"][0]])

    def feature_columns(self, op):
        return ("bias",) if self._has_bias(op) else ()

    # -- symmetry -------------------------------------------------------------------------
    def constrain(self, op, s):
        bits = self.input_bits(op)
        if "ns" in op:        # gamma absorbs what passes; the post node set is the consumers'
            s.restrict(op["in"][0], bits)
        else:                 # the factor reaches the output: its consumers must take it too
            s.pass_through(op, bits)

    def couple(self, op, s):
        pre = op["pre"]
        if "ns" in op:
            s.align.union(pre, op["ns"])
        k = self.group_size(op)
        if k:        # permutations inside each group, and whole groups move (docs 3.5)
            s.block_perm([(pre, k)], s.sizes[pre] // k)

    # -- layout ---------------------------------------------------------------------------
    def edges(self, op, lay):
        return _norm_edges(op, lay)

    def features(self, op, lay):
        if not ("ns" in op and self._has_bias(op)):
            return []
        return [FeatureSlot(op["module"] + ".bias", lay.col["bias"], lay.offsets[op["ns"]],
                            lay.sizes[op["ns"]], False)]

    def act(self, op, sd, a, parts):
        if "ns" in op:
            _act_gamma_beta(op, sd, a, self._has_bias(op))

    @staticmethod
    def _batched_channels(t, B, fn):
        """Run ``fn`` on the B networks' channels side by side: ``(B * n, C, *S)`` ->
        ``(n, B * C, *S)`` (network-major channels) and back."""
        Bn, C, sp = t.shape[0], t.shape[1], t.shape[2:]
        n = Bn // B
        u = t.reshape(B, n, C, *sp).transpose(0, 1).reshape(n, B * C, *sp)
        y = fn(u)
        return y.reshape(n, B, C, *sp).transpose(0, 1).reshape(Bn, C, *sp)


class GroupNorm(_SampleNorm):
    """``groupnorm``: ``num_groups`` groups of ``num_channels / num_groups`` channels, each
    normalised over its channels and space per sample. Module doc: sign flips per channel only
    with one channel per group, permutations inside groups and moves of whole groups."""

    kind = "groupnorm"
    modules = (nn.GroupNorm,)
    doc = ("``module``, ``num_groups``, ``num_channels``, ``eps``, ``affine``; ``pre`` and, "
           "when affine, ``ns``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        t.single_set(node, "GroupNorm", x)
        channels_on_axis_1(t, node, "GroupNorm", x)
        if x.rank < 2 or x.chan != m.num_channels:
            t.fail(node, "GroupNorm", f"expects (batch, {m.num_channels} channels, ...), got "
                                      f"{x.chan} channels")
        op = {"op": "groupnorm", "num_groups": m.num_groups, "num_channels": m.num_channels,
              "eps": float(m.eps), "affine": bool(m.affine)}
        self._emit(t, node, x, op, "GroupNorm")

    def input_bits(self, op):
        return NEG if op["num_channels"] == op["num_groups"] else ONE

    def group_size(self, op):
        G, C = op["num_groups"], op["num_channels"]
        return C // G if 1 < G < C else 0

    def to_module(self, op):
        return nn.GroupNorm(op["num_groups"], op["num_channels"], eps=op["eps"],
                            affine=op["affine"])

    def batched(self, op, ins, params, B):
        m = op["module"]
        w = params[m + ".weight"].reshape(-1) if op["affine"] else None
        b = params[m + ".bias"].reshape(-1) if op["affine"] else None
        return self._batched_channels(ins[0], B, lambda u: F.group_norm(
            u, op["num_groups"] * B, w, b, op["eps"]))


class InstanceNorm(_SampleNorm):
    """``instancenorm``: ``InstanceNorm{dim}d`` with ``track_running_stats=False``: every channel
    of every sample normalised over space by its own statistics. Module doc: sign flips per
    channel, all permutations."""

    kind = "instancenorm"
    modules = tuple(_IN)
    doc = ("``module``, ``dim``, ``num_features``, ``eps``, ``momentum``, ``affine``; ``pre``, "
           "``ns``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        d, name = _IN[type(m)], type(m).__name__
        if m.track_running_stats:
            t.fail(node, name, "track_running_stats=True (eval mode normalises with running "
                               "statistics) is unsupported; only per-sample statistics are")
        if x.flat is not None or x.rank != d + 2:
            t.fail(node, name, f"expects (batch, channels, {d} spatial dims); an input without "
                               f"the batch dimension is unsupported")
        channels_on_axis_1(t, node, name, x)
        if x.chan != m.num_features:
            t.fail(node, name, f"num_features={m.num_features} but its input has {x.chan} "
                               f"channels")
        op = {"op": "instancenorm", "dim": d, "num_features": m.num_features,
              "eps": float(m.eps), "momentum": m.momentum, "affine": bool(m.affine)}
        self._emit(t, node, x, op, name)

    def input_bits(self, op):
        return NEG

    def to_module(self, op):
        cls = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[op["dim"]]
        return cls(op["num_features"], eps=op["eps"], momentum=op["momentum"],
                   affine=op["affine"], track_running_stats=False)

    def batched(self, op, ins, params, B):
        m = op["module"]
        w = params[m + ".weight"].reshape(-1) if op["affine"] else None
        b = params[m + ".bias"].reshape(-1) if op["affine"] else None
        return self._batched_channels(ins[0], B, lambda u: F.instance_norm(
            u, weight=w, bias=b, use_input_stats=True, eps=op["eps"]))


class RMSNorm(_SampleNorm):
    """``rmsnorm``: ``RMSNorm`` over the features of ``(batch, features)`` or, token by token,
    of ``(batch, *tokens, features)``: ``x / sqrt(mean(x^2) + eps) * gamma`` (no beta). Module
    doc: sign flips per channel, all permutations."""

    kind = "rmsnorm"
    modules = (nn.RMSNorm,)
    bias_key = None
    doc = ("``module``, ``normalized_shape``, ``eps`` (None: the dtype's), ``affine``; "
           "``pre``, ``ns``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        if x.flat is not None:
            t.fail(node, "RMSNorm", "its input is a flattened feature map")
        t.channel_axis(node, "RMSNorm", x, "last")
        if tuple(m.normalized_shape) != (x.chan,):
            t.fail(node, "RMSNorm", f"only RMSNorm over the features (normalized_shape "
                                    f"({x.chan},)) is supported, got {tuple(m.normalized_shape)}")
        op = {"op": "rmsnorm", "normalized_shape": [x.chan],
              "eps": None if m.eps is None else float(m.eps),
              "affine": bool(m.elementwise_affine)}
        self._emit(t, node, x, op, "RMSNorm")

    def example_input(self, m, model, dtype):
        if len(m.normalized_shape) == 1:
            return True, torch.zeros(2, m.normalized_shape[0], dtype=dtype)
        return False, None

    def input_bits(self, op):
        return NEG

    def to_module(self, op):
        return nn.RMSNorm(op["normalized_shape"][0], eps=op["eps"],
                          elementwise_affine=op["affine"])

    def batched(self, op, ins, params, B):
        t = ins[0]
        C = t.shape[-1]                                  # (B * n, *tokens, C)
        u = F.rms_norm(t.reshape(B, -1, C), (C,), eps=op["eps"])
        if op["affine"]:
            u = u * params[op["module"] + ".weight"][:, None, :]
        return u.reshape(t.shape)
