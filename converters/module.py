"""``to_module``: rebuild a ``torch.nn`` network from a ``ParameterGraph`` (the exact inverse).

The rebuilt module holds real layers (``nn.Linear``, ``nn.ConvNd``, ``nn.BatchNormNd``,
``nn.LayerNorm``, ...: whatever each op's rule builds, ``OpRule.to_module``) at the original module
paths, so its ``state_dict`` has the original keys, and runs the traced op list with them, so its
outputs are ``torch.equal`` to the original network's in eval mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .archspec import ArchSpec
from .graph import ParameterGraph, to_state_dict
from .interp import run
from .ops import rule_for


class _Container(nn.Module):
    """A plain holder for submodules (paths like ``layer1.0``)."""


class SpecModule(nn.Module):
    """A network rebuilt from an ``ArchSpec``; its layers sit at the original module paths."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        for op in arch.ops:
            if "module" not in op:
                continue
            *parents, leaf = op["module"].split(".")
            holder = self
            for p in parents:
                if not hasattr(holder, p):
                    holder.add_module(p, _Container())
                holder = getattr(holder, p)
            holder.add_module(leaf, rule_for(op["op"]).to_module(op))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(self.arch, x, lambda op, ins: rule_for(op["op"]).forward(
            op, self.get_submodule(op["module"]), ins))

    def extra_repr(self) -> str:
        return f"arch={self.arch.hash}"


def to_module(graph: ParameterGraph, *, strict: bool = True) -> nn.Module:
    """The network ``graph`` describes, in eval mode (see ``to_state_dict`` for ``strict``)."""
    sd = to_state_dict(graph, strict=strict)
    with torch.device("meta"):
        module = SpecModule(graph.arch)
    module.load_state_dict(sd, assign=True, strict=True)
    return module.eval()
