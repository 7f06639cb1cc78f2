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
            if "param" in op:   # a parameter used outside a module (a learned position)
                holder, leaf = self._holder(op["param"])
                t = rule_for(op["op"]).to_param(op)
                if op.get("buffer"):
                    holder.register_buffer(leaf, t)
                else:
                    holder.register_parameter(leaf, nn.Parameter(t))
            if "module" not in op:
                continue
            holder, leaf = self._holder(op["module"])
            holder.add_module(leaf, rule_for(op["op"]).to_module(op))

    def _holder(self, path: str) -> tuple:
        """(module holding ``path``, its last name), creating containers on the way."""
        *parents, leaf = path.split(".")
        holder = self
        for p in parents:
            if not hasattr(holder, p):
                holder.add_module(p, _Container())
            holder = getattr(holder, p)
        return holder, leaf

    def _param_op(self, op: dict, ins: list) -> torch.Tensor:
        rule = rule_for(op["op"])
        if "param" in op:
            holder, leaf = self._holder(op["param"])
            return rule.forward(op, getattr(holder, leaf), ins)
        return rule.forward(op, self.get_submodule(op["module"]), ins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: the network input (one argument, so that ``torch.fx`` can trace the module)."""
        return run(self.arch, x, self._param_op)

    def extra_repr(self) -> str:
        return f"arch={self.arch.hash}"


class SpecModuleWithInputs(SpecModule):
    """A rebuilt network that reads further inputs (attention masks): ``forward(x, *extra)``."""

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """``x``: the network input; ``extra``: the further inputs, in the original order."""
        return run(self.arch, (x, *extra), self._param_op)


def to_module(graph: ParameterGraph, *, strict: bool = True) -> nn.Module:
    """The network ``graph`` describes, in eval mode (see ``to_state_dict`` for ``strict``)."""
    sd = to_state_dict(graph, strict=strict)
    cls = (SpecModuleWithInputs if any(op["op"] == "extra_input" for op in graph.arch.ops)
           else SpecModule)
    with torch.device("meta"):
        module = cls(graph.arch)
    module.load_state_dict(sd, assign=True, strict=True)
    for op in graph.arch.ops:   # e.g. a tied weight made one Parameter again
        rule_for(op["op"]).finish_module(op, module)
    return module.eval()
