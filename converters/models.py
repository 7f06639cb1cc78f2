"""Reference modules for the architectures of the public weight-space data sets.

Their state-dict keys are those of the published checkpoints, so ``converters.arch`` builds specs
by tracing them, and ``from_state_dict`` reads the published files directly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

_ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
         "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


def make_activation(name: str) -> nn.Module:
    if name not in _ACTS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTS)}")
    return _ACTS[name]()


class SineLayer(nn.Module):
    """``sin(w0 * (W x + b))`` with the layer at ``.linear`` (NFN's key layout)."""

    def __init__(self, d_in: int, d_out: int, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """A SIREN ``widths[0] -> ... -> widths[-1]``: sine hidden layers, linear last layer.

    ``style="dwsnets"``: keys ``seq.{i}.weight``; ``style="nfn"``: keys ``net.{i}.linear.weight``
    and ``net.{L-1}.weight``. ``output_offset`` is added to the output (DWSNets: 0.5).
    """

    def __init__(self, widths: Sequence[int] = (2, 32, 32, 1), w0: float = 30.0,
                 output_offset: float = 0.0, style: str = "dwsnets"):
        super().__init__()
        if style not in ("dwsnets", "nfn"):
            raise ValueError(f"style must be 'dwsnets' or 'nfn', got {style!r}")
        self.style, self.w0, self.output_offset = style, float(w0), float(output_offset)
        pairs = list(zip(widths[:-1], widths[1:]))
        if style == "dwsnets":
            self.seq = nn.ModuleList([nn.Linear(a, b) for a, b in pairs])
        else:
            self.net = nn.ModuleList([SineLayer(a, b, w0) for a, b in pairs[:-1]]
                                     + [nn.Linear(*pairs[-1])])

    def forward(self, x):
        if self.style == "dwsnets":
            for layer in self.seq[:-1]:
                x = torch.sin(self.w0 * layer(x))
            x = self.seq[-1](x)
        else:
            for layer in self.net:
                x = layer(x)
        if self.output_offset:
            x = x + self.output_offset
        return x


def mlp(widths: Sequence[int], activation: str = "relu", bias: bool = True) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` as an ``nn.Sequential`` (keys ``0.weight``, ``2.weight``)."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def cnn_zoo(stride: int = 2, activation: str = "relu", in_channels: int = 1,
            channels: int = 16, n_layers: int = 3, kernel: int = 3,
            n_classes: int = 10) -> nn.Sequential:
    """The Small CNN Zoo network (Unterthiner et al. 2020) in PyTorch layout.

    ``n_layers`` x (Conv(k, stride, valid) -> act), global average pooling, Linear. With the
    defaults: 160 + 2,320 + 2,320 + 170 = 4,970 parameters. Keys: ``0.weight``, ``2.weight``, ...
    """
    layers, c = [], in_channels
    for _ in range(n_layers):
        layers += [nn.Conv2d(c, channels, kernel, stride=stride), make_activation(activation)]
        c = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    return nn.Sequential(*layers)
