"""The architectures every converter test runs on: one of each supported layer type."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from converters import models


class BasicBlock(nn.Module):
    """A ResNet basic block, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        out += identity
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, width=4, n_classes=3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class GroupedCNN(nn.Module):
    """Stride, padding, dilation, groups, max-pool, and a flatten with a spatial block."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, stride=1, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=3)
        self.c3 = nn.Conv2d(6, 4, (3, 1), padding=(1, 0), padding_mode="circular")
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        x = torch.tanh(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.max_pool2d(self.c3(x), 2)
        return self.fc(x.view(x.size(0), -1))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 5, 5, padding=2)
        self.bn = nn.BatchNorm1d(5)
        self.c2 = nn.Conv1d(5, 4, 3, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = F.leaky_relu(self.bn(self.c1(x)), 0.1)
        x = nn.functional.avg_pool1d(torch.sigmoid(self.c2(x)), 2)
        return self.fc(x.mean(-1))


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 3, 3, padding=1)
        self.c2 = nn.Conv3d(3, 2, 1)
        self.pool = nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.pool(self.c2(F.relu(self.c1(x)))).flatten(1))


class CatNet(nn.Module):
    """Two branches concatenated along channels, then a linear layer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 5)
        self.out = nn.Linear(9, 2)

    def forward(self, x):
        return self.out(torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], dim=1))


class LayerNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        self.l2 = nn.Linear(6, 5)
        self.l3 = nn.Linear(5, 2)

    def forward(self, x):
        return self.l3(F.silu(self.l2(F.gelu(self.ln(self.l1(x))))))


class ResidualMLP(nn.Module):
    """Residual MLP with an identity hidden layer and a BatchNorm1d."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 6)
        self.h1 = nn.Linear(6, 6)
        self.h2 = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = h + self.h2(self.h1(h))      # h1 has an identity activation
        return self.out(torch.relu(self.bn(h)))


class DepthwiseCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3)
        self.dw = nn.Conv2d(4, 4, 3, groups=4, padding=1)
        self.pw = nn.Conv2d(4, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.c1(x))))
        x = nn.functional.avg_pool2d(torch.relu(self.pw(x)), 2)
        return self.fc(x.mean((2, 3)))


class ElementwiseActs(nn.Module):
    """Every elementwise activation without a factor symmetry, each on its own layer: modules
    first, then functional and method forms."""

    def __init__(self):
        super().__init__()
        mods = [nn.ReLU6(), nn.Hardtanh(-0.5, 2.0), nn.ELU(0.7), nn.SELU(), nn.CELU(1.3),
                nn.Softplus(2.0, 5.0), nn.Hardswish(), nn.Hardsigmoid(), nn.Mish(),
                nn.LogSigmoid()]
        self.acts = nn.ModuleList(mods)
        self.layers = nn.ModuleList([nn.Linear(3, 5)] + [nn.Linear(5, 5) for _ in range(19)])
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        fns = [F.relu6, lambda h: F.hardtanh(h, -2.0, 1.0), lambda h: F.elu(h, alpha=0.5),
               torch.selu, lambda h: F.celu(h, 0.8), lambda h: F.softplus(h, beta=0.5),
               F.hardswish, F.hardsigmoid, F.mish, F.logsigmoid]
        for act, layer in zip(list(self.acts) + fns, self.layers):
            x = act(layer(x))
        return self.out(x)


class ClampAbs(nn.Module):
    """``torch.clamp`` with constants (its group depends on the bounds) and ``abs``."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 4)] + [nn.Linear(4, 4) for _ in range(6)])
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        l0, l1, l2, l3, l4, l5, l6 = self.layers
        x = torch.clamp(l0(x), -1.0, 3.0)         # perm
        x = l1(x).clamp(min=0)                    # scale (a ReLU)
        x = torch.clip(l2(x), -1.5, 1.5)          # sign (odd)
        x = torch.abs(l3(x))                      # scale
        x = l4(x).clamp_max(0.0)                  # scale (min(z, 0))
        x = l5(x).abs()                           # scale
        x = torch.clamp_min(l6(x), 0.25)          # perm
        return self.out(x)


class PReLUMLP(nn.Module):
    """A single-slope and a per-neuron PReLU."""

    def __init__(self):
        super().__init__()
        self.l1, self.act1 = nn.Linear(3, 6), nn.PReLU()
        self.l2, self.act2 = nn.Linear(6, 5), nn.PReLU(5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        return self.out(self.act2(self.l2(self.act1(self.l1(x)))))


class PReLUCNN(nn.Module):
    """Per-channel PReLU after a convolution and after an eval BatchNorm, a single-slope one
    after a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(2, 4, 3, padding=1), nn.PReLU(4)
        self.c2, self.bn, self.a2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU(4)
        self.c3, self.a3 = nn.Conv2d(4, 3, 1), nn.PReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        h = self.a1(self.c1(x))
        h = self.a2(self.bn(self.c2(h)))
        h = self.a3(self.c3(h))
        return self.fc(h.mean((2, 3)))


class GroupNormCNN(nn.Module):
    """GroupNorm with 3 groups of 2 channels (affine), one channel per group (affine), 2 groups
    without affine parameters and 1 group without them."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn1 = nn.Conv2d(2, 6, 3, padding=1), nn.GroupNorm(3, 6, eps=0.1)
        self.c2, self.gn2 = nn.Conv2d(6, 6, 3, padding=1), nn.GroupNorm(6, 6, eps=0.1)
        self.c3, self.gn3 = nn.Conv2d(6, 4, 1), nn.GroupNorm(2, 4, eps=0.1, affine=False)
        self.c4, self.gn4 = nn.Conv2d(4, 4, 1), nn.GroupNorm(1, 4, affine=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.gn1(self.c1(x)))
        h = torch.tanh(self.gn2(self.c2(h)))
        h = self.gn3(self.c3(h))
        h = self.gn4(self.c4(h))
        return self.fc(h.mean((2, 3)))


class GroupNormMLP(nn.Module):
    """GroupNorm on (batch, features) and one channel per group without affine parameters."""

    def __init__(self):
        super().__init__()
        self.l1, self.gn1 = nn.Linear(3, 6), nn.GroupNorm(2, 6)
        self.l2, self.gn2 = nn.Linear(6, 4), nn.GroupNorm(4, 4, eps=0.5, affine=False)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.gn2(self.l2(F.relu(self.gn1(self.l1(x))))))


class InstanceNormCNN(nn.Module):
    """InstanceNorm2d with and without affine parameters, then ReLU, tanh or a convolution."""

    def __init__(self):
        super().__init__()
        self.c1, self.in1 = nn.Conv2d(2, 4, 3, padding=1), nn.InstanceNorm2d(4, eps=0.1,
                                                                             affine=True)
        self.c2, self.in2 = nn.Conv2d(4, 4, 3, padding=1), nn.InstanceNorm2d(4, eps=0.1)
        self.c3, self.in3 = nn.Conv2d(4, 3, 1), nn.InstanceNorm2d(3, affine=True)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        h = F.relu(self.in1(self.c1(x)))
        h = self.c3(self.in2(self.c2(h)))            # in2's output read by a conv: signs pass
        h = torch.tanh(self.in3(h))
        return self.fc(h.mean((2, 3)))


class InstanceNorm1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.in1 = nn.Conv1d(3, 5, 3, padding=1), nn.InstanceNorm1d(5, affine=True)
        self.c2, self.in2 = nn.Conv1d(5, 4, 3), nn.InstanceNorm1d(4, eps=0.2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.in2(self.c2(F.leaky_relu(self.in1(self.c1(x)), 0.2))))
        return self.fc(h.mean(-1))


class RMSNormMLP(nn.Module):
    """RMSNorm with a weight (eps from the dtype), then without one (eps given)."""

    def __init__(self):
        super().__init__()
        self.l1, self.n1 = nn.Linear(3, 6), nn.RMSNorm(6)
        self.l2, self.n2 = nn.Linear(6, 5), nn.RMSNorm(5, eps=0.1, elementwise_affine=False)
        self.l3 = nn.Linear(5, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.n1(self.l1(x)))
        h = self.l3(self.n2(self.l2(h)))              # n2's output read by a linear layer
        return self.out(torch.tanh(h))


class RMSNormTokens(nn.Module):
    """RMSNorm over the features of each token of ``(batch, tokens, features)``."""

    def __init__(self):
        super().__init__()
        self.l1, self.n1, self.out = nn.Linear(3, 5), nn.RMSNorm(5, eps=0.1), nn.Linear(5, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.n1(self.l1(x)))).mean(1)


class ConvTransposeCNN(nn.Module):
    """Transposed convolutions: stride, padding, output padding, groups, dilation, no bias."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.t1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.t2 = nn.ConvTranspose2d(6, 3, 2, dilation=2, bias=False)
        self.t3 = nn.ConvTranspose2d(3, 4, (3, 1), stride=(1, 2), padding=(1, 0))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = torch.tanh(self.t1(h))
        h = self.t3(self.t2(h))
        return self.fc(F.relu(h).mean((2, 3)))


class ConvTranspose1dNet(nn.Module):
    """A 1d decoder (transposed convolution first) with an InstanceNorm1d without affine
    parameters after it."""

    def __init__(self):
        super().__init__()
        self.t1 = nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.InstanceNorm1d(4)
        self.t2 = nn.ConvTranspose1d(4, 2, 2, groups=2, dilation=3)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.t2(F.relu(self.norm(self.t1(x)))).mean(-1))


class ConvTranspose3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 3, 3, stride=2, padding=1)
        self.t1 = nn.ConvTranspose3d(3, 2, 3, stride=2, padding=1, output_padding=1)
        self.in1 = nn.InstanceNorm3d(2, affine=True)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        h = self.in1(self.t1(F.relu(self.c1(x))))
        return self.fc(F.relu(h).mean((2, 3, 4)))


class RecurrentHead(nn.Module):
    """A recurrent layer (``nn.RNN``/``LSTM``/``GRU``, batch first) and a linear head reading
    the last time step of its output (``out[:, -1]``) or the last layer's final state
    (``h_n[-1]``)."""

    def __init__(self, cls, read="out", **kw):
        super().__init__()
        self.rnn = cls(4, 6, batch_first=True, **kw)
        self.head = nn.Linear(6, 3)
        self.read = read

    def forward(self, x):
        if self.read == "out":
            out, _ = self.rnn(x)
            return self.head(out[:, -1])
        if isinstance(self.rnn, nn.LSTM):
            out, (h, c) = self.rnn(x)
        else:
            out, h = self.rnn(x)
        return self.head(h[-1])


class TokenMLP(nn.Module):
    """Token-wise layers on ``(batch, tokens, features)``: Linear, LayerNorm, GELU, a residual
    add, a BatchNorm1d between two transposes, a single-slope PReLU, a concatenation along the
    features, a mean over the tokens."""

    def __init__(self):
        super().__init__()
        self.l1, self.ln, self.l2 = nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 6)
        self.bn, self.act = nn.BatchNorm1d(6), nn.PReLU()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 3)
        self.out = nn.Linear(7, 2)

    def forward(self, x):
        h = F.gelu(self.ln(self.l1(x)))
        h = h + self.l2(h)
        h = self.act(self.bn(h.transpose(1, 2)).transpose(1, 2))
        h = torch.cat([torch.relu(self.a(h)), torch.tanh(self.b(h))], dim=-1)
        return self.out(h).mean(1)


class TokenHeads(nn.Module):
    """The reshapes of attention code on ``(batch, tokens, features)``: features split into
    (heads, head_dim) with ``view``, heads moved before the tokens and back, merged with
    ``reshape`` and ``flatten``; ``permute``, ``unsqueeze``/``squeeze``, ``contiguous``, shapes read
    from ``x.shape`` and ``x.size``."""

    def __init__(self, heads=2):
        super().__init__()
        self.h = heads
        self.l1, self.l2, self.l3 = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        B, T, _ = x.shape
        C = self.l1.out_features
        q = self.l1(x).view(B, T, self.h, C // self.h).transpose(1, 2)      # (B, H, T, D)
        q = torch.relu(q).transpose(1, 2).contiguous().reshape(B, T, C)
        k = torch.tanh(self.l2(q)).reshape(B, x.size(1), self.h, -1)       # (B, T, H, D)
        k = k.permute(0, 2, 1, 3).permute(0, 2, 1, 3).flatten(2)            # (B, T, C)
        k = self.l3(k).unsqueeze(1).squeeze(1)
        return self.out(torch.relu(k.unsqueeze(-2)).squeeze(-2))


class ConvToTokens(nn.Module):
    """A 1d convolution over ``(batch, channels, length)``, then its channels moved last and read
    token-wise by a Linear and a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3, padding=1)
        self.l1, self.ln, self.out = nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).transpose(1, 2)                           # (B, L, 5)
        return self.out(torch.sigmoid(self.ln(self.l1(h))))


class Tokens4d(nn.Module):
    """``(batch, rows, columns, features)``: Linear on the last axis, the two token axes merged by
    ``flatten(1, 2)``, then a mean over them."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)).flatten(1, 2).mean(1))


class SoftmaxMLP(nn.Module):
    """``nn.Softmax`` over the features in the middle, ``F.log_softmax`` at the output."""

    def __init__(self):
        super().__init__()
        self.l1, self.sm, self.l2, self.l3 = nn.Linear(3, 5), nn.Softmax(dim=1), \
            nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.l2(self.sm(self.l1(x))))
        return F.log_softmax(self.l3(h), dim=-1)


class SoftmaxTokens(nn.Module):
    """Softmax over the features (``x.softmax(-1)``, ``nn.LogSoftmax(-1)``) and over the tokens
    (``torch.softmax(h, 1)``, ``x.log_softmax(dim=1)``) of ``(batch, tokens, features)``."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 4)
        self.lsm, self.out = nn.LogSoftmax(-1), nn.Linear(4, 2)

    def forward(self, x):
        h = self.l1(x).softmax(-1)
        h = torch.softmax(self.l2(h), 1)
        h = self.lsm(self.l3(h))
        return self.out(h.log_softmax(dim=1))


class Gates(nn.Module):
    """Products of two branches on ``(batch, features)``: gating ``sigmoid(g) * v``, a bilinear
    ``torch.mul(a, b)``, ``relu(c).mul(tanh(d))`` and ``x * relu(e(x))`` with the input."""

    def __init__(self):
        super().__init__()
        self.g, self.v = nn.Linear(3, 5), nn.Linear(3, 5)
        self.a, self.b = nn.Linear(5, 4), nn.Linear(5, 4)
        self.c, self.d = nn.Linear(4, 4), nn.Linear(4, 4)
        self.e, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.sigmoid(self.g(x)) * self.v(x)
        h = torch.mul(self.a(h), self.b(h))
        h = torch.relu(self.c(h)).mul(torch.tanh(self.d(h)))
        return self.out(h * torch.relu(self.e(h)))


class SwiGLU(nn.Module):
    """A token-wise SwiGLU feed-forward block with a residual, ``silu(W1 x) * (W3 x)``, then a
    GLU (``F.glu`` over the features) and ``nn.GLU`` on ``(batch, features)`` after a mean."""

    def __init__(self):
        super().__init__()
        self.inp, self.ln = nn.Linear(3, 4), nn.LayerNorm(4)
        self.w1, self.w3, self.w2 = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 4)
        self.g1, self.glu, self.g2 = nn.Linear(4, 8), nn.GLU(), nn.Linear(4, 6)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        h = self.inp(x)
        n = self.ln(h)
        h = h + self.w2(F.silu(self.w1(n)) * self.w3(n))
        h = F.glu(self.g1(h), dim=-1).mean(1)
        return self.out(torch.tanh(self.glu(self.g2(h))))


class SDPAttention(nn.Module):
    """User-written attention on ``(batch, tokens, features)``: an embedding, Q/K/V
    ``nn.Linear``s, the features split into heads (view + transpose),
    ``F.scaled_dot_product_attention``, the heads merged, an output projection, a ReLU head.
    ``heads=1`` leaves the features unsplit."""

    def __init__(self, heads=2, causal=True, scale=None, vdim=6):
        super().__init__()
        self.h, self.causal, self.scale = heads, causal, scale
        self.emb = nn.Linear(3, 6)
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, vdim)
        self.o, self.out = nn.Linear(vdim, 5), nn.Linear(5, 2)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.emb(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        if self.h > 1:
            q, k, v = (t.view(B, T, self.h, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        if self.h > 1:
            y = y.transpose(1, 2).reshape(B, T, -1)
        return self.out(torch.relu(self.o(y)))


class MHABlock(nn.Module):
    """``nn.MultiheadAttention`` (packed ``in_proj_weight``, batch first) as self-attention on an
    embedding, its weights output ignored, then a ReLU head."""

    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Linear(3, 6), nn.Linear(6, 2)
        self.attn = nn.MultiheadAttention(6, 3, batch_first=True)

    def forward(self, x):
        h = self.emb(x)
        y, _ = self.attn(h, h, h)
        return self.out(torch.relu(y))


class MHACross(nn.Module):
    """``nn.MultiheadAttention`` with ``kdim``/``vdim`` (separate ``q/k/v_proj_weight``), no
    bias, sequence first, ``need_weights=False``, on three projections of the input."""

    def __init__(self):
        super().__init__()
        self.pq, self.pk, self.pv = nn.Linear(3, 6), nn.Linear(3, 4), nn.Linear(3, 5)
        self.attn = nn.MultiheadAttention(6, 2, bias=False, kdim=4, vdim=5)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.attn(self.pq(x), self.pk(x), self.pv(x), need_weights=False)[0])


class Decoder(nn.Module):
    """An embedding, an encoder layer for the memory, ``nn.TransformerDecoder`` (``layers`` x
    ``nn.TransformerDecoderLayer``: self-attention, cross-attention on the memory, feed-forward)
    with a final LayerNorm, and a linear head; ``memory="input"`` attends to the embedding."""

    def __init__(self, norm_first=False, activation="relu", batch_first=True, layers=2,
                 memory="encoder"):
        super().__init__()
        self.memory = memory
        self.emb, self.out = nn.Linear(3, 6), nn.Linear(6, 2)
        if memory == "encoder":
            self.enc = nn.TransformerEncoderLayer(6, 2, 8, dropout=0.1, batch_first=batch_first)
        layer = nn.TransformerDecoderLayer(6, 2, 10, dropout=0.1, activation=activation,
                                           batch_first=batch_first, norm_first=norm_first)
        self.dec = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(6))

    def forward(self, x):
        h = self.emb(x)
        return self.out(self.dec(h, self.enc(h) if self.memory == "encoder" else h))


class WrittenAttention(nn.Module):
    """Attention written out (as in many GPT codes), two heads: ``softmax(q @ k.transpose(-2,
    -1) * (1.0 / math.sqrt(k.size(-1)))) @ v`` with an eval-mode dropout on the weights, the
    values 4 wide, then tanh (the values' neurons: sign flips)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(3, 6)
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 4)
        self.drop, self.o = nn.Dropout(0.1), nn.Linear(4, 2)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.emb(x)
        q, k, v = (f(h).view(B, T, 2, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        y = self.drop(F.softmax(att, dim=-1)) @ v
        return self.o(torch.tanh(y.transpose(1, 2).contiguous().view(B, T, -1)))


class MaskedAttention(nn.Module):
    """``F.scaled_dot_product_attention`` with an additive mask passed as a further model input
    (``forward(x, mask)``; without it, no mask), two heads, then a ReLU head."""

    def __init__(self):
        super().__init__()
        self.emb, self.o, self.out = nn.Linear(3, 6), nn.Linear(6, 4), nn.Linear(4, 2)
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x, mask=None):
        B, T, _ = x.shape
        h = self.emb(x)
        q, k, v = (f(h).view(B, T, 2, 3).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(torch.relu(self.o(y.transpose(1, 2).reshape(B, T, 6))))


class Encoder(nn.Module):
    """An embedding, ``nn.TransformerEncoder`` (``layers`` x ``nn.TransformerEncoderLayer``,
    dropout 0.1, inactive in eval mode) with a final LayerNorm, and a linear head."""

    def __init__(self, norm_first=False, activation="relu", batch_first=True, layers=2):
        super().__init__()
        self.emb, self.out = nn.Linear(3, 6), nn.Linear(6, 2)
        layer = nn.TransformerEncoderLayer(6, 2, 10, dropout=0.1, activation=activation,
                                           batch_first=batch_first, norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(6),
                                         enable_nested_tensor=False)

    def forward(self, x):
        return self.out(self.enc(self.emb(x)))


class EmbeddingMLP(nn.Module):
    """Token ids ``(batch, tokens)`` -> ``nn.Embedding`` (with a padding row) -> a token-wise
    ReLU layer -> mean over the tokens -> a Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.l1, self.out = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, ids):
        return self.out(torch.relu(self.l1(self.emb(ids))).mean(1))


class EmbeddingPositions(nn.Module):
    """A learned position table sliced to the sequence (``self.pos[:, :T]``), a CLS token
    concatenated in front (``torch.cat([cls.expand(B, -1, -1), h], dim=1)``), a tanh layer."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.pos = nn.Parameter(torch.zeros(1, 9, 4))
        self.cls = nn.Parameter(torch.zeros(1, 1, 4))
        self.l1, self.out = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, ids):
        B, T = ids.shape
        h = self.emb(ids) + self.pos[:, :T]
        h = torch.cat([self.cls.expand(B, -1, -1), h], dim=1)
        return self.out(torch.tanh(self.l1(h)).mean(1))


class TiedLM(nn.Module):
    """A small language model: embedding + a ``(T, d)`` position table (no slice), a pre-norm
    feed-forward block with a residual, a final LayerNorm and an un-embedding head whose weight
    *is* the embedding's (``head.weight = emb.weight``), with its own bias."""

    def __init__(self, vocab=9, d=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(6, d))
        self.ln, self.l1, self.l2 = nn.LayerNorm(d), nn.Linear(d, 6), nn.Linear(6, d)
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids) + self.pos
        h = h + self.l2(F.gelu(self.l1(self.ln(h))))
        return self.head(self.ln_f(h))


class TiedTanh(nn.Module):
    """``head(tanh(l1(emb(ids))))`` with ``head.weight = emb.weight`` (no bias): the tied
    embedding and head-input neurons share their permutation and sign flips."""

    def __init__(self):
        super().__init__()
        self.emb, self.l1 = nn.Embedding(6, 4), nn.Linear(4, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.l1(self.emb(ids))))


class GEGLU(nn.Module):
    """Hand-written halves of a Linear on ``(batch, tokens, features)``: GEGLU
    ``v, g = proj(h).chunk(2, dim=-1); v * gelu(g)``, and ``torch.split`` into two halves read by
    different activations."""

    def __init__(self):
        super().__init__()
        self.inp, self.proj, self.mid = nn.Linear(3, 4), nn.Linear(4, 10), nn.Linear(5, 6)
        self.p2, self.out = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        v, g = self.proj(self.inp(x)).chunk(2, dim=-1)
        h = self.mid(v * F.gelu(g))
        a, b = torch.split(self.p2(h), 3, dim=-1)
        return self.out(torch.cat([torch.tanh(a), torch.relu(b)], -1))


class FusedQKV(nn.Module):
    """GPT-2's fused projection on ``(batch, tokens, features)``: ``q, k, v =
    c_attn(x).split(C, dim=2)`` into two heads, ``F.scaled_dot_product_attention`` (causal), a
    residual; then ``c2(h).chunk(3, dim=-1)`` with the attention written out (one head)."""

    def __init__(self, d=4, heads=2):
        super().__init__()
        self.heads = heads
        self.inp, self.c_attn, self.proj = nn.Linear(3, d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c2, self.out = nn.Linear(d, 3 * 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.inp(x)
        B, T, C = h.size()
        q, k, v = self.c_attn(h).split(C, dim=2)
        q, k, v = (z.view(B, T, self.heads, C // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(y.transpose(1, 2).reshape(B, T, C))
        q, k, v = self.c2(h).chunk(3, dim=-1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        return self.out(torch.tanh(att.softmax(dim=-1) @ v))


class TokenReadouts(nn.Module):
    """Readouts of one token and maxima over the tokens of ``(batch, tokens, features)``: a CLS
    readout ``h[:, 0]``, the last token ``h[:, -1, :]``, ``.max(dim=1).values``, ``.max(1)[0]``,
    ``torch.amax(h, dim=1)``, a slice ``h[:, 1:]`` then ``h[..., 0, :]``."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 3), nn.Linear(3, 2)
        self.d, self.e, self.f = nn.Linear(3, 3), nn.Linear(3, 2), nn.Linear(3, 2)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        return self.out(torch.cat([
            self.a(x)[:, 0], torch.tanh(self.b(x))[:, -1, :],
            torch.relu(self.c(x)).max(dim=1).values, self.d(x).max(1)[0],
            torch.amax(F.gelu(self.e(x)), dim=1), self.f(x)[:, 1:][..., 0, :]], dim=1))


class ConvMaxOverTime(nn.Module):
    """A 1d convolution, ReLU, max over time as ``F.max_pool1d(h, h.size(2))`` (a window as
    long as the input) and as ``h.amax(2)``, and a sign-flipping tanh branch read at its middle
    step (``h[:, :, 2]``)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(3, 4, 3), nn.Conv1d(3, 3, 2)
        self.c3, self.out = nn.Conv1d(3, 2, 1), nn.Linear(9, 2)

    def forward(self, x):
        h1 = F.relu(self.c1(x))
        return self.out(torch.cat([F.max_pool1d(h1, h1.size(2)).squeeze(2),
                                   self.c2(x).amax(2), torch.tanh(self.c3(x))[:, :, 2]], 1))


class ArangePositions(nn.Module):
    """nanoGPT's positions: ``self.wpe(torch.arange(T, device=ids.device))`` added to the token
    embedding, a tanh layer, then ``torch.arange(0, T, dtype=torch.long)`` looked up in a second
    table added to the hidden stream, and a CLS-style readout ``h[:, 0]``."""

    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(7, 4), nn.Embedding(8, 4)
        self.l1, self.wpe2 = nn.Linear(4, 5), nn.Embedding(6, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, ids):
        T = ids.size(1)
        h = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))
        h = torch.tanh(self.l1(h))
        h = self.wpe2(torch.arange(0, T, dtype=torch.long)) + h
        return self.out(h[:, 0])


def _randomise_bn(model, generator):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))
            m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=generator)))
    return model


#: name -> (factory, example input shape without the batch dimension)
ZOO = {
    "mlp_relu": (lambda: models.mlp([3, 8, 8, 2], "relu"), (3,)),
    "mlp_leaky": (lambda: models.mlp([3, 7, 2], "leaky_relu"), (3,)),
    "mlp_tanh": (lambda: models.mlp([2, 6, 6, 3], "tanh"), (2,)),
    "mlp_mixed": (lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(),
                                        nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 4), nn.SiLU(),
                                        nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 4),
                                        nn.Identity(), nn.Linear(4, 2)), (3,)),
    "siren_dws": (lambda: models.Siren((2, 16, 16, 1), 30.0, 0.5, "dwsnets"), (2,)),
    "siren_nfn": (lambda: models.Siren((2, 16, 16, 3), 30.0, 0.0, "nfn"), (2,)),
    "cnn_zoo": (lambda: models.cnn_zoo(stride=2, channels=4), (1, 28, 28)),
    "cnn_zoo_tanh": (lambda: models.cnn_zoo(stride=2, activation="tanh", channels=4),
                     (1, 28, 28)),
    "cnn_grouped": (GroupedCNN, (2, 8, 8)),
    "conv1d": (Conv1dNet, (3, 16)),
    "conv3d": (Conv3dNet, (1, 4, 4, 4)),
    "resnet": (TinyResNet, (3, 8, 8)),
    "cat": (CatNet, (3,)),
    "layernorm": (LayerNormMLP, (4,)),
    "residual_mlp": (ResidualMLP, (3,)),
    "depthwise": (DepthwiseCNN, (2, 8, 8)),
    "acts_perm": (ElementwiseActs, (3,)),
    "acts_clamp": (ClampAbs, (3,)),
    "prelu_mlp": (PReLUMLP, (3,)),
    "prelu_cnn": (PReLUCNN, (2, 6, 6)),
    "tokens_mlp": (TokenMLP, (7, 3)),
    "tokens_heads": (TokenHeads, (4, 5)),
    "tokens_conv": (ConvToTokens, (3, 8)),
    "tokens_4d": (Tokens4d, (2, 3, 4)),
    "softmax_mlp": (SoftmaxMLP, (3,)),
    "softmax_tokens": (SoftmaxTokens, (6, 3)),
    "gates": (Gates, (3,)),
    "swiglu": (SwiGLU, (5, 3)),
    "geglu": (GEGLU, (4, 3)),
    "groupnorm_cnn": (GroupNormCNN, (2, 5, 5)),
    "groupnorm_mlp": (GroupNormMLP, (3,)),
    "instnorm_cnn": (InstanceNormCNN, (2, 5, 5)),
    "instnorm_1d": (InstanceNorm1dNet, (3, 9)),
    "rmsnorm_mlp": (RMSNormMLP, (3,)),
    "rmsnorm_tokens": (RMSNormTokens, (4, 3)),
    "convt_cnn": (ConvTransposeCNN, (2, 6, 6)),
    "convt_1d": (ConvTranspose1dNet, (3, 5)),
    "convt_3d": (ConvTranspose3dNet, (1, 4, 4, 4)),
    "rrelu_mlp": (lambda: nn.Sequential(nn.Linear(3, 6), nn.RReLU(0.1, 0.3), nn.Linear(6, 5),
                                        nn.RReLU(), nn.Linear(5, 2)), (3,)),
    "lstm": (lambda: RecurrentHead(nn.LSTM, num_layers=2), (7, 4)),
    "gru_state": (lambda: RecurrentHead(nn.GRU, "state", num_layers=2, bias=False), (5, 4)),
    "rnn_tanh": (lambda: RecurrentHead(nn.RNN, "state"), (6, 4)),
    "rnn_relu": (lambda: RecurrentHead(nn.RNN, num_layers=2, nonlinearity="relu"), (6, 4)),
    "attn_sdpa": (SDPAttention, (4, 3)),
    "attn_sdpa_1head": (lambda: SDPAttention(heads=1, causal=False, scale=0.3, vdim=4), (4, 3)),
    "attn_written": (WrittenAttention, (4, 3)),
    "attn_masked": (MaskedAttention, (4, 3)),
    "mha": (MHABlock, (4, 3)),
    "mha_kv": (MHACross, (4, 3)),
    "encoder": (Encoder, (4, 3)),
    "encoder_prenorm": (lambda: Encoder(True, "gelu", batch_first=False, layers=1), (4, 3)),
    "decoder": (Decoder, (4, 3)),
    "decoder_prenorm": (lambda: Decoder(True, "gelu", False, 1, memory="input"), (4, 3)),
    "emb_mlp": (EmbeddingMLP, (6,)),
    "emb_positions": (EmbeddingPositions, (6,)),
    "emb_tied_lm": (TiedLM, (6,)),
    "emb_tied_tanh": (TiedTanh, (5,)),
    "fused_qkv": (FusedQKV, (5, 3)),
    "token_readouts": (TokenReadouts, (4, 3)),
    "conv_max_time": (ConvMaxOverTime, (3, 6)),
    "emb_arange": (ArangePositions, (5,)),
}

#: ZOO models whose input is token ids: name -> vocabulary size (``make`` draws integer ids)
TOKEN_IDS = {"emb_mlp": 7, "emb_positions": 7, "emb_tied_lm": 9, "emb_tied_tanh": 6,
             "emb_arange": 7}


#: ZOO models with further inputs (attention masks): name -> the inputs after ``x``
EXTRA_INPUTS = {
    "attn_masked": lambda x: (torch.randn(x.shape[1], x.shape[1], dtype=x.dtype,
                                          generator=torch.Generator().manual_seed(5)),),
}


def extra_inputs(name: str, x: torch.Tensor) -> tuple:
    """The further inputs of ZOO model ``name`` for the example input ``x`` (usually none)."""
    return EXTRA_INPUTS[name](x) if name in EXTRA_INPUTS else ()


def make(name: str, dtype=torch.float64, seed: int = 0):
    """(model in eval mode, example input (batch 5)) for a ZOO entry."""
    factory, shape = ZOO[name]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = factory().to(dtype)
    with torch.no_grad():
        for p in model.parameters():  # weights large enough that units are active
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.7)
        _randomise_bn(model, g)
    if name in TOKEN_IDS:
        x = torch.randint(0, TOKEN_IDS[name], (5, *shape), generator=g)
    else:
        x = torch.randn(5, *shape, generator=g, dtype=dtype)
    return model.eval(), x


def toy_sign_task(n=64, seed=0):
    """The toy invariant task of the backend tests: (batch of ReLU 2-6-1 MLP graphs, labels =
    whether each network's output at a fixed point is positive)."""
    from torch_geometric.data import Batch
    import converters as C
    torch.manual_seed(seed)
    graphs, labels = [], []
    x0 = torch.tensor([[0.5, -0.3]])
    for _ in range(n):
        m = C.models.mlp([2, 6, 1], "relu")
        graphs.append(C.to_graph(m))
        labels.append(float(m(x0).item() > 0))
    return Batch.from_data_list(graphs), torch.tensor(labels)
