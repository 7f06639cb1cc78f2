"""``nn.Linear``: one node set of ``out_features`` neurons, one edge per weight."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .base import Edges, FeatureSlot, OpRule


def channel_edges(op: dict, lay, groups: int = 1, size: int | None = None) -> torch.Tensor:
    """(out, in_channels / groups) global source ids of a weight layer writing ``op["ns"]`` from
    the channels of its input value (several node sets after a concatenation); a grouped layer
    reads only its group's block of input channels."""
    in_sets = lay.parts[op["in"][0]]
    if len(set(in_sets)) != len(in_sets):   # one (src, dst) pair would be two edges
        raise ValueError(f"'{op['module']}' reads node sets {list(in_sets)}: a node "
                         f"set may enter a layer only once")
    chan_nodes = torch.cat([torch.arange(lay.offsets[p], lay.offsets[p + 1]) for p in in_sets])
    size = lay.sizes[op["ns"]] if size is None else size
    ipg, opg = len(chan_nodes) // groups, size // groups
    o = torch.arange(size)
    return chan_nodes[((o // opg) * ipg)[:, None] + torch.arange(ipg)[None, :]]


def bias_slot(op: dict, lay) -> list:
    """The bias of a layer writing ``op["ns"]`` (none for a bias-free layer)."""
    if not op["bias"]:
        return []
    ns = op["ns"]
    return [FeatureSlot(op["module"] + ".bias", lay.col["bias"], lay.offsets[ns], lay.sizes[ns],
                        False)]


def act_bias(op: dict, sd: dict, a) -> None:
    """Bias of node set ``op["ns"]`` under the action: times the neuron's factor, moved."""
    if op.get("bias", True) and op["module"] + ".bias" in sd:
        ns, key = op["ns"], op["module"] + ".bias"
        sd[key] = a.moved(a.scaled(sd[key], a.q(ns)), a.perm(ns))


class Linear(OpRule):
    """``linear``: ``y = x W^T + b`` on ``(batch, features)`` or token-wise on ``(batch,
    *tokens, features)`` (one neuron per output feature, its weights shared by every token: the
    graph is the one of ``(batch, features)``); after a flatten of a ``(C, *S)`` map, one edge
    per (channel, neuron) holding the ``S`` block of weights that reads the channel (``spatial``
    = S). Absorbs any factor of its input (its weight columns divide by it)."""

    kind = "linear"
    creates_nodes = True
    modules = (nn.Linear,)
    doc = ("``module`` path, ``in_features``, ``out_features``, ``bias``; ``spatial``: the "
           "block shape when the input was flattened from (C, *spatial), else ``[]``")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        if x.flat is None:
            t.channel_axis(node, "Linear", x, "last")
        spatial = list(x.flat) if x.flat is not None else []
        if m.in_features != x.chan * math.prod(spatial):
            t.fail(node, "Linear", f"in_features {m.in_features} != {x.chan} channels x "
                                   f"{math.prod(spatial)}")
        op = {"op": "linear", "module": node.target, "in_features": m.in_features,
              "out_features": m.out_features, "bias": m.bias is not None, "spatial": spatial}
        from .product import split_parts
        pieces = split_parts(t, node)
        if pieces:
            # cut into equal pieces by its readers (a GLU's halves, GPT-2's fused q, k, v): the
            # pieces are node sets ns .. ns + pieces - 1, coupled by their readers
            n = m.out_features // pieces
            ns = len(t.sizes)
            for k in range(pieces):
                t.sizes[ns + k], t.names[ns + k] = n, f"{node.target}[{k * n}:{k * n + n}]"
            vid = t.new_vid()
            t.ops.append({**op, "split": pieces, "in": [x.vid], "out": vid, "ns": ns})
            t.vals[node] = t.value(vid, list(range(ns, ns + pieces)), m.out_features,
                                   len(t.shape(node)), None, x.caxes)
            return
        t.new_nodeset(node, op, [x], m.out_features, node.target)

    def example_input(self, m, model, dtype):
        return True, torch.zeros(2, m.in_features, dtype=dtype)

    def kernel(self, op):
        return list(op["spatial"]) if op["spatial"] else None

    def feature_columns(self, op):
        return ("bias",)

    @staticmethod
    def _sets(op) -> list:
        """The node sets the op writes: one, or ``split`` equal pieces (read by a GLU, cut by
        ``chunk``/``split``)."""
        return [op["ns"] + k for k in range(op.get("split", 1))]

    def out_parts(self, op, parts):
        return self._sets(op)

    def inner_sets(self, op):
        return self._sets(op)[1:]

    def constrain(self, op, s):
        """Absorbs any factor of its input: its weight columns are divided by it. (A split
        layer's value is read only by the ops cutting it in halves: they restrict the first half
        through the value, the second through its node set.)"""

    def edges(self, op, lay) -> Edges:
        return Edges(channel_edges(op, lay, size=op["out_features"]), tuple(op["spatial"]),
                     op["module"] + ".weight", "weight", (op["out_features"], op["in_features"]))

    def features(self, op, lay):
        if not op["bias"]:
            return []
        return [FeatureSlot(op["module"] + ".bias", lay.col["bias"], lay.offsets[op["ns"]],
                            op["out_features"], False)]

    def to_module(self, op):
        return nn.Linear(op["in_features"], op["out_features"], bias=op["bias"])

    def batched(self, op, ins, params, B):
        t, m = ins[0], op["module"]
        W = params[m + ".weight"]                                        # (B, out, in)
        # (B * n, *tokens, in): every token of a network's inputs reads its weights
        y = torch.bmm(t.reshape(B, -1, t.shape[-1]), W.transpose(1, 2))
        if op["bias"]:
            y = y + params[m + ".bias"][:, None, :]
        return y.reshape(*t.shape[:-1], -1)

    def act(self, op, sd, a, parts):
        # W'[p_out(i), p_in(j)] = q_i / q_j W[i, j]; a spatial block moves with its channel
        S = math.prod(op["spatial"]) if op["spatial"] else 1
        src = parts[op["in"][0]]
        p_in = (a.perm_of(src)[:, None] * S + torch.arange(S)[None, :]).reshape(-1)
        q_in = a.q_of(src).repeat_interleave(S)
        sets, key = self._sets(op), op["module"] + ".weight"
        q_out, p_out = a.q_of(sets), a.perm_of(sets)
        ratio = q_out[:, None] / q_in[None, :]
        sd[key] = a.moved(a.moved(a.scaled(sd[key], ratio), p_out, 0), p_in, 1)
        if op["bias"]:
            b = op["module"] + ".bias"
            sd[b] = a.moved(a.scaled(sd[b], q_out), p_out)
