"""``to_module``: rebuild a ``torch.nn`` network from a ``ParameterGraph`` (the exact inverse).

The rebuilt module holds real ``nn.Linear`` / ``nn.ConvNd`` / ``nn.BatchNormNd`` / ``nn.LayerNorm``
layers at the original module paths, so its ``state_dict`` has the original keys, and runs the
traced op list with them, so its outputs are ``torch.equal`` to the original network's in eval mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .archspec import ArchSpec
from .graph import ParameterGraph, to_state_dict
from .interp import run


def _layer(op) -> nn.Module:
    kind = op["op"]
    if kind == "linear":
        return nn.Linear(op["in_features"], op["out_features"], bias=op["bias"])
    if kind == "conv":
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[op["dim"]]
        pad = op["padding"]
        return cls(op["in_channels"], op["out_channels"], tuple(op["kernel_size"]),
                   stride=tuple(op["stride"]), padding=pad if isinstance(pad, str) else tuple(pad),
                   dilation=tuple(op["dilation"]), groups=op["groups"], bias=op["bias"],
                   padding_mode=op["padding_mode"])
    if kind == "batchnorm":
        cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[op["dim"]]
        return cls(op["num_features"], eps=op["eps"], momentum=op["momentum"])
    if kind == "layernorm":
        return nn.LayerNorm(op["normalized_shape"][0], eps=op["eps"], bias=op["bias"])
    raise ValueError(kind)


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
            holder.add_module(leaf, _layer(op))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(self.arch, x, lambda op, ins: self.get_submodule(op["module"])(ins[0]))

    def extra_repr(self) -> str:
        return f"arch={self.arch.hash}"


def to_module(graph: ParameterGraph, *, strict: bool = True) -> nn.Module:
    """The network ``graph`` describes, in eval mode (see ``to_state_dict`` for ``strict``)."""
    sd = to_state_dict(graph, strict=strict)
    with torch.device("meta"):
        module = SpecModule(graph.arch)
    module.load_state_dict(sd, assign=True, strict=True)
    return module.eval()
