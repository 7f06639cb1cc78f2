"""``nn.Conv1d/2d/3d``: one node per output channel, one edge per (input, output) channel pair
holding the kernel slice; grouped convolutions create edges only inside their groups."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Edges, OpRule
from .linear import act_bias, bias_slot, channel_edges

_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _jsonable(v):
    if isinstance(v, torch.Size):
        v = tuple(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot record argument {v!r}")


def probe_input(model, channels: int, ndim: int, sizes: tuple, dtype):
    """The first ``(2, channels, s, ..., s)`` zeros (``ndim`` spatial axes, ``s`` from
    ``sizes``) that ``model`` runs on, or None: the guessed example input of a network whose
    first layer is a convolution."""
    for s in sizes:
        x = torch.zeros(2, channels, *([s] * ndim), dtype=dtype)
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception:       # noqa: BLE001 - any failure: try the next size
            continue
    return None


def conv_padding(op: dict) -> list:
    """``F.pad`` widths for non-zero padding modes, as ``nn.ConvNd`` computes them."""
    k, d, pad = op["kernel_size"], op["dilation"], op["padding"]
    widths = []
    for i in reversed(range(op["dim"])):
        if pad == "same":
            total = d[i] * (k[i] - 1)
            widths += [total // 2, total - total // 2]
        elif pad == "valid":
            widths += [0, 0]
        else:
            widths += [pad[i], pad[i]]
    return widths


class Conv(OpRule):
    """``conv``: ``dim``-d convolution. Channel permutations and per-channel factors commute with
    stride, padding (every mode), dilation; ``groups > 1`` cuts the input and output channels into
    blocks that a permutation may not split (whole blocks may move together). Absorbs any factor
    of its input."""

    kind = "conv"
    creates_nodes = True
    modules = tuple(_CONV)
    doc = ("``module``, ``dim``, channels, ``kernel_size``, ``stride``, ``padding``, "
           "``dilation``, ``groups``, ``padding_mode``, ``bias``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        d = _CONV[type(m)]
        if x.flat is not None or x.rank != d + 2:
            t.fail(node, type(m).__name__, f"expects (batch, channels, {d} spatial dims)")
        t.channel_axis(node, type(m).__name__, x, "first")
        op = {"op": "conv", "module": node.target, "dim": d, "in_channels": m.in_channels,
              "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
              "stride": list(m.stride), "padding": _jsonable(m.padding),
              "dilation": list(m.dilation), "groups": m.groups, "padding_mode": m.padding_mode,
              "bias": m.bias is not None}
        t.new_nodeset(node, op, [x], m.out_channels, node.target)

    def example_input(self, m, model, dtype):
        return True, probe_input(model, m.in_channels, _CONV[type(m)], (32, 28, 64, 224, 16, 8),
                                 dtype)

    def kernel(self, op):
        return list(op["kernel_size"])

    def feature_columns(self, op):
        return ("bias",)

    def constrain(self, op, s):
        """Absorbs any factor of its input: its weight columns are divided by it."""

    def couple(self, op, s):
        if op["groups"] == 1:
            return
        g = op["groups"]
        ipg, opg = op["in_channels"] // g, op["out_channels"] // g
        s.cuts[op["ns"]].update(range(opg, op["out_channels"], opg))
        pos = 0
        for ns in s.parts[op["in"][0]]:
            s.cuts[ns].update(c - pos for c in range(ipg, op["in_channels"], ipg)
                              if pos < c < pos + s.sizes[ns])
            pos += s.sizes[ns]

    def edges(self, op, lay) -> Edges:
        ipg = op["in_channels"] // op["groups"]
        return Edges(channel_edges(op, lay, op["groups"]), tuple(op["kernel_size"]),
                     op["module"] + ".weight", "weight",
                     (op["out_channels"], ipg, *op["kernel_size"]))

    def features(self, op, lay):
        return bias_slot(op, lay)

    def to_module(self, op):
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[op["dim"]]
        pad = op["padding"]
        return cls(op["in_channels"], op["out_channels"], tuple(op["kernel_size"]),
                   stride=tuple(op["stride"]), padding=pad if isinstance(pad, str) else tuple(pad),
                   dilation=tuple(op["dilation"]), groups=op["groups"], bias=op["bias"],
                   padding_mode=op["padding_mode"])

    def batched(self, op, ins, params, B):
        t, m = ins[0], op["module"]
        Bn = t.shape[0]
        n = Bn // B
        W = params[m + ".weight"]                                        # (B, out, ipg, *k)
        sp = t.shape[2:]
        u = t.reshape(B, n, t.shape[1], *sp).transpose(0, 1).reshape(n, -1, *sp)
        bias = params[m + ".bias"].reshape(-1) if op["bias"] else None
        pad = op["padding"]
        if op["padding_mode"] != "zeros":
            u = F.pad(u, conv_padding(op), mode=op["padding_mode"])
            pad = 0 if not isinstance(pad, str) else "valid"
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[op["dim"]]
        y = conv(u, W.reshape(-1, *W.shape[2:]), bias, tuple(op["stride"]),
                 pad if isinstance(pad, (str, int)) else tuple(pad),
                 tuple(op["dilation"]), op["groups"] * B)
        out = W.shape[1]
        return y.reshape(n, B, out, *y.shape[2:]).transpose(0, 1).reshape(Bn, out, *y.shape[2:])

    def act(self, op, sd, a, parts):
        # W'[p_out(o), p_in(c) - group offset] = q_o / q_c W[o, c - group offset], c in o's group
        key, ns = op["module"] + ".weight", op["ns"]
        W = sd[key]
        g = op["groups"]
        ipg, opg = op["in_channels"] // g, op["out_channels"] // g
        o = torch.arange(op["out_channels"])
        c = ((o // opg) * ipg)[:, None] + torch.arange(ipg)[None, :]        # (out, ipg)
        p_in, q_in = a.perm_of(parts[op["in"][0]]), a.q_of(parts[op["in"][0]])
        p_out = a.perm(ns)
        ratio = a.q(ns)[:, None] / q_in[c]
        Wq = a.scaled(W, ratio.reshape(*ratio.shape, *([1] * (W.dim() - 2))))
        new_o = p_out[:, None].expand_as(c)
        new_j = p_in[c] - (new_o // opg) * ipg
        if bool(((new_j < 0) | (new_j >= ipg)).any()):
            raise ValueError(f"the action moves a channel of '{op['module']}' across its groups")
        out = torch.empty_like(W)
        out[new_o, new_j] = Wq
        sd[key] = out
        act_bias(op, sd, a)
