"""Reference modules for the architectures of the public weight-space data sets.

Their state-dict keys are those of the published checkpoints, so ``converters.arch`` builds specs
by tracing them, and ``from_state_dict`` reads the published files directly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
         "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}
ACTIVATION_NAMES = tuple(sorted(_ACTS)) + ("sin",)


class Sine(nn.Module):
    """``sin(w0 * x)``, elementwise (SIREN's activation)."""

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


def make_activation(name: str, w0: float = 30.0) -> nn.Module:
    """The activation module called ``name`` (one of ``ACTIVATION_NAMES``; ``sin`` uses
    ``w0``)."""
    if name == "sin":
        return Sine(w0)
    if name not in _ACTS:
        raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATION_NAMES}")
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


def mlp(widths: Sequence[int], activation: str = "relu", bias: bool = True,
        w0: float = 30.0) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` as an ``nn.Sequential`` (keys ``0.weight``,
    ``2.weight``); ``activation`` one of ``ACTIVATION_NAMES`` (``sin``: ``sin(w0 x)``)."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(make_activation(activation, w0))
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


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BatchNorm, ReLU, and an identity (or 1x1-conv
    downsampling) shortcut added before the last ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) in torchvision's layout and key names, written out so that
    torchvision is not a dependency: 11,689,512 parameters with ``n_classes=1000``.
    Input (B, 3, H, W), output (B, n_classes)."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, c = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Reference models written as people write them (ViT, GPT, LLaMA block, MobileNetV2, U-Net,
# LSTM/GRU classifiers, TextCNN): converters/zoo_models.py keeps this module short.
from .zoo_models import (GPT, RNNClassifier, LlamaBlock, MobileNetV2, TextCNN,  # noqa: E402
                         UNet, ViT, ZOO_FACTORIES, example_input, gpt_tiny, gru_classifier,
                         llama_block, lstm_classifier, mobilenet_v2_tiny, text_cnn, unet_small,
                         vit_tiny)
