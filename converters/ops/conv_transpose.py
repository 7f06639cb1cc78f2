"""``nn.ConvTranspose1d/2d/3d``: one node per output channel, one edge per (input, output) channel
pair of a group holding the kernel slice ``weight[c, o % (out / groups)]``.

PyTorch stores a transposed convolution's weight as ``(in, out / groups, *k)`` (input channels
first), the graph's edges destination-major as ``(out, in / groups, *k)``: the block's
``edge_view`` / ``param_perm`` (``converters.ops.base.Block``) say how one is the other. Its
symmetry is a convolution's (``converters.ops.conv.Conv``): the map is linear in its input and
each output channel reads its group's input channels only through ``weight[c, o]``, so an input
channel multiplied by ``q_c`` is absorbed by ``weight[c, :] / q_c`` and an output channel's
factor ``q_o`` by ``weight[:, o] * q_o`` and ``bias[o] * q_o``; channel permutations commute with
stride, padding, output padding and dilation (they act on space only); ``groups > 1`` cuts both
sides into blocks that permutations may not cross."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Edges
from .conv import Conv, _jsonable, probe_input
from .linear import act_bias, channel_edges
from .sample_norm import channels_on_axis_1

_CONVT = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}


def _edge_view(op: dict) -> tuple:
    """``(groups, out / groups, in / groups, *k)``: the edge values of one group per block."""
    g = op["groups"]
    return (g, op["out_channels"] // g, op["in_channels"] // g, *op["kernel_size"])


class ConvTranspose(Conv):
    """``conv_transpose``: ``dim``-d transposed convolution (module doc). Absorbs any factor of
    its input; grouped ones cut their input and output channels like a grouped ``Conv``."""

    kind = "conv_transpose"
    modules = tuple(_CONVT)
    doc = ("``module``, ``dim``, channels, ``kernel_size``, ``stride``, ``padding``, "
           "``output_padding``, ``dilation``, ``groups``, ``bias``; weight "
           "``(in, out/groups, *k)``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        d = _CONVT[type(m)]
        name = type(m).__name__
        if x.flat is not None or x.rank != d + 2:
            t.fail(node, name, f"expects (batch, channels, {d} spatial dims)")
        channels_on_axis_1(t, node, name, x)
        if m.padding_mode != "zeros":   # PyTorch itself accepts only zeros
            t.fail(node, name, f"padding_mode={m.padding_mode!r} is unsupported")
        op = {"op": "conv_transpose", "module": node.target, "dim": d,
              "in_channels": m.in_channels, "out_channels": m.out_channels,
              "kernel_size": list(m.kernel_size), "stride": list(m.stride),
              "padding": _jsonable(m.padding), "output_padding": list(m.output_padding),
              "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}
        t.new_nodeset(node, op, [x], m.out_channels, node.target)

    def example_input(self, m, model, dtype):
        return True, probe_input(model, m.in_channels, _CONVT[type(m)], (8, 16, 4, 28, 32, 7),
                                 dtype)

    def edges(self, op, lay) -> Edges:
        g = op["groups"]
        return Edges(channel_edges(op, lay, g), tuple(op["kernel_size"]),
                     op["module"] + ".weight", "weight",
                     (op["in_channels"], op["out_channels"] // g, *op["kernel_size"]),
                     edge_view=_edge_view(op),
                     param_perm=(0, 2, 1, *range(3, 3 + op["dim"])))

    def to_module(self, op):
        cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[op["dim"]]
        return cls(op["in_channels"], op["out_channels"], tuple(op["kernel_size"]),
                   stride=tuple(op["stride"]), padding=tuple(op["padding"]),
                   output_padding=tuple(op["output_padding"]), groups=op["groups"],
                   bias=op["bias"], dilation=tuple(op["dilation"]))

    def batched(self, op, ins, params, B):
        # B networks as one transposed convolution with B * groups groups: network b's input
        # channels and weight rows are the b-th block of B * in
        t, m = ins[0], op["module"]
        Bn = t.shape[0]
        n = Bn // B
        W = params[m + ".weight"]                                        # (B, in, out/g, *k)
        sp = t.shape[2:]
        u = t.reshape(B, n, t.shape[1], *sp).transpose(0, 1).reshape(n, -1, *sp)
        bias = params[m + ".bias"].reshape(-1) if op["bias"] else None
        conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[op["dim"]]
        y = conv(u, W.reshape(-1, *W.shape[2:]), bias, tuple(op["stride"]), tuple(op["padding"]),
                 tuple(op["output_padding"]), op["groups"] * B, tuple(op["dilation"]))
        out = op["out_channels"]
        return y.reshape(n, B, out, *y.shape[2:]).transpose(0, 1).reshape(Bn, out, *y.shape[2:])

    def act(self, op, sd, a, parts):
        # W'[p_in(c), p_out(o) - group offset] = q_o / q_c W[c, o - group offset], o in c's group
        key, ns = op["module"] + ".weight", op["ns"]
        W = sd[key]                                                      # (in, opg, *k)
        g = op["groups"]
        ipg, opg = op["in_channels"] // g, op["out_channels"] // g
        c = torch.arange(op["in_channels"])
        o = ((c // ipg) * opg)[:, None] + torch.arange(opg)[None, :]      # (in, opg)
        p_in, q_in = a.perm_of(parts[op["in"][0]]), a.q_of(parts[op["in"][0]])
        p_out = a.perm(ns)
        ratio = a.q(ns)[o] / q_in[:, None]
        Wq = a.scaled(W, ratio.reshape(*ratio.shape, *([1] * (W.dim() - 2))))
        new_c = p_in[:, None].expand_as(o)
        new_j = p_out[o] - (new_c // ipg) * opg
        if bool(((new_j < 0) | (new_j >= opg)).any()):
            raise ValueError(f"the action moves a channel of '{op['module']}' across its groups")
        out = torch.empty_like(W)
        out[new_c, new_j] = Wq
        sd[key] = out
        act_bias(op, sd, a)
