"""Small reference models written the way people write them: a ViT, a GPT-style decoder, a
LLaMA-style block, a MobileNetV2, a U-Net, LSTM/GRU sequence classifiers and a TextCNN.

Each is built by a function with small default sizes, so that the converter's tests and
benchmarks (and a user's first try) run in seconds. They are re-exported by
``converters.models``; ``ZOO_FACTORIES`` lists them with an example input maker.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


# -- ViT ----------------------------------------------------------------------------------------
class ViT(nn.Module):
    """A Vision Transformer: a patch-embedding conv, a CLS token, learned positions, pre-norm
    ``nn.TransformerEncoderLayer`` blocks, a final LayerNorm and a linear head on the mean of
    the tokens (``pool="mean"``) or on the CLS token (``pool="cls"``, ``x[:, 0]``).

    Input (B, in_channels, image_size, image_size), output (B, n_classes)."""

    def __init__(self, image_size: int = 16, patch_size: int = 4, in_channels: int = 3,
                 dim: int = 32, depth: int = 2, heads: int = 4, mlp_dim: int = 64,
                 n_classes: int = 10, pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.pool = pool
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)         # (B, N, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed              # (B, N + 1, dim)
        x = self.encoder(x)
        x = self.norm(x)
        return self.head(x.mean(dim=1) if self.pool == "mean" else x[:, 0])


def vit_tiny(image_size: int = 16, patch_size: int = 4, dim: int = 32, depth: int = 2,
             heads: int = 4, n_classes: int = 10, pool: str = "mean") -> ViT:
    """A tiny ViT (2 pre-norm blocks of width 32, 4 heads, 4x4 patches of a 16x16 RGB image,
    CLS token, mean pooling by default). Input (B, 3, image_size, image_size), output
    (B, n_classes)."""
    return ViT(image_size, patch_size, 3, dim, depth, heads, 2 * dim, n_classes, pool)


# -- GPT ----------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: (B, T, dim) -> (B, T, dim). Separate ``query``,
    ``key`` and ``value`` projections (minGPT's form), or with ``fused_qkv=True`` one
    ``c_attn`` projection split into three (GPT-2's form, ``q, k, v = c_attn(x).split(C,
    dim=2)``)."""

    def __init__(self, dim: int, heads: int, fused_qkv: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.fused_qkv = heads, fused_qkv
        if fused_qkv:
            self.c_attn = nn.Linear(dim, 3 * dim)
        else:
            self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        if self.fused_qkv:
            q, k, v = self.c_attn(x).split(C, dim=2)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)     # (B, H, T, D)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class GPTBlock(nn.Module):
    """A pre-norm GPT block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (GELU MLP, 4x)."""

    def __init__(self, dim: int, heads: int, fused_qkv: bool = False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, fused_qkv)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A GPT-style decoder: token ``nn.Embedding``, learned positions (a parameter sliced to the
    sequence, ``self.wpe[:, :T]``, or with ``positions="embedding"`` nanoGPT's
    ``self.wpe(torch.arange(T))`` of an ``nn.Embedding``), pre-norm blocks with causal
    ``F.scaled_dot_product_attention``, a final LayerNorm and a bias-free language-model head
    whose weight is the token embedding's (tied).

    Input token ids (B, T) with T <= block_size, output logits (B, T, vocab_size)."""

    def __init__(self, vocab_size: int = 32, block_size: int = 8, dim: int = 16,
                 depth: int = 2, heads: int = 2, fused_qkv: bool = False,
                 positions: str = "parameter"):
        super().__init__()
        if positions not in ("parameter", "embedding"):
            raise ValueError(f"positions must be 'parameter' or 'embedding', got {positions!r}")
        self.positions = positions
        self.wte = nn.Embedding(vocab_size, dim)
        if positions == "embedding":
            self.wpe = nn.Embedding(block_size, dim)
        else:
            self.wpe = nn.Parameter(torch.zeros(1, block_size, dim))
            nn.init.normal_(self.wpe, std=0.02)
        self.blocks = nn.ModuleList([GPTBlock(dim, heads, fused_qkv) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                        # weight tying

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if self.positions == "embedding":
            x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        else:
            x = self.wte(idx) + self.wpe[:, :T]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt_tiny(vocab_size: int = 32, block_size: int = 8, dim: int = 16, depth: int = 2,
             heads: int = 2, fused_qkv: bool = False, positions: str = "parameter") -> GPT:
    """A tiny GPT (2 blocks of width 16, 2 heads, vocabulary 32, context 8, tied head;
    ``fused_qkv``: GPT-2's fused projection; ``positions="embedding"``: an ``nn.Embedding`` of
    positions looked up with ``torch.arange(T)``). Input ids (B, T) with T <= block_size,
    output logits (B, T, vocab_size)."""
    return GPT(vocab_size, block_size, dim, depth, heads, fused_qkv, positions)


# -- LLaMA --------------------------------------------------------------------------------------
class LlamaAttention(nn.Module):
    """Causal multi-head attention with bias-free q/k/v/o projections: (B, T, dim) -> same."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class SwiGLUMLP(nn.Module):
    """LLaMA's feed-forward: ``down(silu(gate(x)) * up(x))``, bias-free."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """A LLaMA-style decoder block: ``h = x + attn(rms(x))``, ``h + mlp(rms(h))`` with
    ``nn.RMSNorm`` and a SwiGLU MLP. Input and output (B, T, dim)."""

    def __init__(self, dim: int = 16, heads: int = 2, hidden: int = 32, eps: float = 1e-6):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(dim, eps=eps)
        self.self_attn = LlamaAttention(dim, heads)
        self.post_attention_layernorm = nn.RMSNorm(dim, eps=eps)
        self.mlp = SwiGLUMLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x))
        return h + self.mlp(self.post_attention_layernorm(h))


def llama_block(dim: int = 16, heads: int = 2, hidden: int = 32) -> LlamaBlock:
    """One LLaMA-style block (width 16, 2 heads, SwiGLU hidden 32; no rotary embedding).
    Input and output (B, T, dim)."""
    return LlamaBlock(dim, heads, hidden)


# -- MobileNetV2 --------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (BN, ReLU6), 3x3 depthwise conv (BN, ReLU6), 1x1
    linear projection (BN), and the input added when stride is 1 and the widths match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """A small MobileNetV2: a strided 3x3 stem (BN, ReLU6), inverted residual blocks given as
    (expand_ratio, channels, stride), a 1x1 conv (BN, ReLU6), global average pooling, a linear
    classifier. Input (B, 3, H, W), output (B, n_classes)."""

    def __init__(self, n_classes: int = 10, stem: int = 8,
                 blocks: Sequence[Tuple[int, int, int]] = ((1, 8, 1), (4, 12, 2), (4, 12, 1)),
                 last: int = 32):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                nn.ReLU6(inplace=True))]
        c = stem
        for t, out, s in blocks:
            layers.append(InvertedResidual(c, out, s, t))
            c = out
        layers.append(nn.Sequential(nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last),
                                    nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2_tiny(n_classes: int = 10) -> MobileNetV2:
    """A tiny MobileNetV2 (stem 8, three inverted residual blocks, one with a residual add;
    eval mode). Input (B, 3, H, W), output (B, n_classes)."""
    return MobileNetV2(n_classes).eval()


# -- U-Net --------------------------------------------------------------------------------------
class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) twice, keeping the spatial size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """A 2x2 stride-2 ``nn.ConvTranspose2d`` upsampling, the skip concatenated before it on the
    channels, then a DoubleConv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """A small U-Net: DoubleConv, two max-pool downsamplings, two transposed-conv upsamplings
    with skip concatenation, a 1x1 output conv. Input (B, in_channels, H, W) with H and W
    divisible by 4, output (B, n_classes, H, W)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, base: int = 4):
        super().__init__()
        self.inc = DoubleConv(in_channels, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * base, 4 * base))
        self.up1 = Up(4 * base, 2 * base)
        self.up2 = Up(2 * base, base)
        self.outc = nn.Conv2d(base, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.up1(x3, x2)
        x = self.up2(x, x1)
        return self.outc(x)


def unet_small(in_channels: int = 1, n_classes: int = 2, base: int = 4) -> UNet:
    """A small U-Net (widths 4/8/16, two levels; eval mode). Input (B, in_channels, H, W),
    H and W divisible by 4; output (B, n_classes, H, W)."""
    return UNet(in_channels, n_classes, base).eval()


# -- recurrent classifiers ----------------------------------------------------------------------
class RNNClassifier(nn.Module):
    """A sequence classifier: an ``nn.LSTM`` or ``nn.GRU`` (batch first) and a linear layer on
    the last layer's final hidden state (``h_n[-1]``; ``bidirectional=True``: both directions'
    final states, ``torch.cat([h_n[-2], h_n[-1]], dim=1)``). Input (B, T, input_size), output
    (B, n_classes)."""

    def __init__(self, cell: str = "lstm", input_size: int = 8, hidden_size: int = 16,
                 num_layers: int = 2, n_classes: int = 4, bidirectional: bool = False):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(input_size, hidden_size, num_layers, batch_first=True,
                       bidirectional=bidirectional)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.rnn, nn.LSTM):
            _, (h_n, _) = self.rnn(x)
        else:
            _, h_n = self.rnn(x)
        if self.rnn.bidirectional:
            return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))
        return self.fc(h_n[-1])


def lstm_classifier(input_size: int = 8, hidden_size: int = 16, num_layers: int = 2,
                    n_classes: int = 4, bidirectional: bool = False) -> RNNClassifier:
    """A 2-layer LSTM (hidden 16) sequence classifier (``bidirectional=True``: a BiLSTM whose
    head reads both directions' final states). Input (B, T, input_size), output
    (B, n_classes)."""
    return RNNClassifier("lstm", input_size, hidden_size, num_layers, n_classes, bidirectional)


def gru_classifier(input_size: int = 8, hidden_size: int = 16, num_layers: int = 2,
                   n_classes: int = 4) -> RNNClassifier:
    """A 2-layer GRU (hidden 16) sequence classifier. Input (B, T, input_size), output
    (B, n_classes)."""
    return RNNClassifier("gru", input_size, hidden_size, num_layers, n_classes)


# -- TextCNN ------------------------------------------------------------------------------------
class TextCNN(nn.Module):
    """Kim's TextCNN: an ``nn.Embedding``, parallel 1-d convolutions of several widths over the
    words, ReLU, max over time (``pool="adaptive"``: ``F.adaptive_max_pool1d(h, 1)``;
    ``"max"``: ``h.max(dim=2).values``; ``"max_pool"``: ``F.max_pool1d(h, h.size(2))``), the
    pooled features concatenated, dropout, a linear classifier.
    Input token ids (B, T) with T >= max(kernel_sizes), output (B, n_classes)."""

    def __init__(self, vocab_size: int = 50, embed_dim: int = 16,
                 kernel_sizes: Sequence[int] = (2, 3, 4), n_filters: int = 8,
                 n_classes: int = 3, dropout: float = 0.5, pool: str = "adaptive"):
        super().__init__()
        if pool not in ("adaptive", "max", "max_pool"):
            raise ValueError(f"pool must be 'adaptive', 'max' or 'max_pool', got {pool!r}")
        self.pool = pool
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(embed_dim, n_filters, k) for k in kernel_sizes])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_filters * len(kernel_sizes), n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).permute(0, 2, 1)                   # (B, embed_dim, T)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(x))                                    # (B, n_filters, T')
            if self.pool == "max":
                pooled.append(h.max(dim=2).values)
            elif self.pool == "max_pool":
                pooled.append(F.max_pool1d(h, h.size(2)).squeeze(2))
            else:
                pooled.append(F.adaptive_max_pool1d(h, 1).squeeze(2))
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


def text_cnn(vocab_size: int = 50, embed_dim: int = 16, n_filters: int = 8,
             n_classes: int = 3, pool: str = "adaptive") -> TextCNN:
    """A small TextCNN (vocabulary 50, embedding 16, widths 2/3/4 with 8 filters each; eval
    mode; ``pool``: how the max over time is written, see ``TextCNN``). Input ids (B, T) with
    T >= 4, output (B, n_classes)."""
    return TextCNN(vocab_size, embed_dim, (2, 3, 4), n_filters, n_classes, pool=pool).eval()


# -- the list -----------------------------------------------------------------------------------
def _ids(vocab: int, length: int) -> Callable[[int, torch.Generator], torch.Tensor]:
    return lambda batch, gen: torch.randint(1, vocab, (batch, length), generator=gen)


def _floats(*shape: int) -> Callable[[int, torch.Generator], torch.Tensor]:
    return lambda batch, gen: torch.randn(batch, *shape, generator=gen)


#: name -> (factory, example input maker ``(batch, generator) -> tensor``; float inputs are
#: float32, cast them with the model)
ZOO_FACTORIES: Dict[str, Tuple[Callable[[], nn.Module],
                               Callable[[int, torch.Generator], torch.Tensor]]] = {
    "vit_tiny": (vit_tiny, _floats(3, 16, 16)),
    "gpt_tiny": (gpt_tiny, _ids(32, 8)),
    "llama_block": (llama_block, _floats(6, 16)),
    "mobilenet_v2_tiny": (mobilenet_v2_tiny, _floats(3, 16, 16)),
    "unet_small": (unet_small, _floats(1, 16, 16)),
    "lstm_classifier": (lstm_classifier, _floats(7, 8)),
    "gru_classifier": (gru_classifier, _floats(7, 8)),
    "text_cnn": (text_cnn, _ids(50, 9)),
}


def example_input(name: str, batch: int = 2, dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> torch.Tensor:
    """An example input of zoo model ``name`` (token ids stay long; floats take ``dtype``)."""
    if name not in ZOO_FACTORIES:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(ZOO_FACTORIES)}")
    x = ZOO_FACTORIES[name][1](batch, torch.Generator().manual_seed(seed))
    return x if not x.is_floating_point() else x.to(dtype)
