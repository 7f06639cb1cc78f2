"""``nn.PReLU``: ``max(0, z) + a min(0, z)`` with a learned slope ``a``, one for all channels
(``num_parameters=1``) or one per channel.

For ``q > 0``: ``max(0, q z) + a min(0, q z) = q (max(0, z) + a min(0, z))``, so a neuron
feeding a PReLU keeps positive scaling, as under ReLU; ``q < 0`` would need
``PReLU(-z) = -PReLU(z)``, true only for ``a = 1`` (identity), so sign flips are not claimed. The
slope does not change under a factor: it is an *invariant* node feature (``prelu_weight``) of
the neurons it applies to, and it moves with its channel under a permutation. A single slope is
stored on every neuron of the node set (all equal; ``to_state_dict`` refuses a graph where they
differ)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..groups import POS
from .base import FeatureSlot, OpRule


class PReLU(OpRule):
    """``prelu``: ``module`` path, ``num_parameters`` (1 or the channel count); no new nodes."""

    kind = "prelu"
    modules = (nn.PReLU,)
    doc = ("``module`` path, ``num_parameters`` (1, or one slope per channel); the slopes are "
           "the invariant node feature ``prelu_weight`` of the node set it reads")

    def trace_module(self, t, node, m, x) -> None:
        t.claim_module(node, m)
        if len(x.parts) != 1 or x.flat is not None:
            t.fail(node, "PReLU", "its input must be the channels of one layer (no "
                                  "concatenation or flatten before it)")
        ns = x.parts[0]
        n = m.num_parameters
        if n not in (1, x.chan):
            t.fail(node, "PReLU", f"num_parameters={n} is neither 1 nor the {x.chan} channels")
        if n > 1:   # nn.PReLU applies its slopes along axis 1
            t.channel_axis(node, "PReLU", x, "first")
        other = t.feature_owner.setdefault((ns, "prelu_weight"), node.target)
        if other != node.target:
            t.fail(node, "PReLU", f"the neurons of '{t.names[ns]}' already feed the PReLU "
                                  f"'{other}'; two PReLUs of one layer are unsupported")
        t.emit(node, {"op": "prelu", "module": node.target, "num_parameters": n}, x)

    def feature_columns(self, op):
        return ("prelu_weight",)

    def constrain(self, op, s):
        i = op["in"][0]
        s.restrict(i, POS & s.allow[op["out"]])
        s.act_of.setdefault(i, ("prelu", {}))

    def features(self, op, lay):
        ns = lay.parts[op["in"][0]][0]
        return [FeatureSlot(op["module"] + ".weight", lay.col["prelu_weight"], lay.offsets[ns],
                            lay.sizes[ns], False, shared=op["num_parameters"] == 1)]

    def to_module(self, op):
        return nn.PReLU(op["num_parameters"])

    def batched(self, op, ins, params, B):
        t = ins[0]
        n = t.shape[0] // B
        w = params[op["module"] + ".weight"]                         # (B, 1) or (B, C)
        u = t.reshape(B, n, *t.shape[1:])
        w = w.reshape(B, 1, w.shape[1], *([1] * (t.dim() - 2)))
        return torch.where(u >= 0, u, w * u).reshape(t.shape)

    def act(self, op, sd, a, parts):
        if op["num_parameters"] > 1:
            key = op["module"] + ".weight"
            sd[key] = a.moved(sd[key], a.perm(parts[op["in"][0]][0]))
