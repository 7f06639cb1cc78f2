"""Parameter-sharing metanetworks behind ``scalegmn.build``: Monomial-NFN, MAGEP-NFN, NP, HNP
and STATNN. Each reads a ``Batch`` of one chain architecture (hidden widths may differ from the
spec's; depth, inputs, outputs, kernels and activation group may not) and returns ``(B, out_dim)``
(invariant task) or the edited ``Batch`` with raw ``delta_x``/``delta_edge_attr`` (equivariant).

Claims (``claimed_groups``), from the activations of the data (``Chain.mode``):
- Monomial-NFN and MAGEP-NFN: permutations, plus positive scaling (ReLU-like hidden layers) or
  sign flips (tanh/sine hidden layers). Between layers they use ReLU (scale and perm modes) or tanh
  (sign mode), which commute with those factors.
- NP, HNP, STATNN: permutations only.

No positional encodings are applied to anything that is not invariant, so every claim holds for
the whole model (published editing models break theirs: docs/methods.md 8.5). NP and HNP may read
every entry through a fixed Fourier feature map (``input_features: fourier``): entrywise, so it
keeps their permutation claim exactly; the other backends refuse it.
"""
from __future__ import annotations


import torch
import torch.nn as nn

from ..edits import edit_output
from ..spec import SpecInfo
from .layers import (EntryNormPool, FourierFeatures, MonomialLinear, NeuronSetLinear,
                     PolyInvariant, PolyLinear, mean_pool, weight_statistics)
from .weightspace import Chain, read, write


def head(d_in, d_hidden, d_out, dropout=0.0):
    """The shared invariant head: Linear-ReLU-Linear-ReLU-Linear (nfn's MlpHead)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


class WeightSpaceNet(nn.Module):
    """Common plumbing: the chain the model is built for, reading batches, writing edits."""

    invariant_only = False
    #: whether the backend reads ``input_features: fourier`` (permutation-only backends whose
    #: layers take any number of input channels)
    fourier_inputs = False

    def __init__(self, cfg, spec):
        super().__init__()
        if getattr(cfg, "input_features", "raw") != "raw" and not self.fourier_inputs:
            raise ValueError(f"backend {cfg.backend} ({type(self).__name__}) does not read "
                             f"input_features={cfg.input_features!r}; use input_features='raw'")
        info = SpecInfo.of(spec)
        chains = [Chain.of(a) for a in info.archs]
        sigs = {c.signature() for c in chains}
        if len(sigs) != 1:
            raise ValueError(f"backend {cfg.backend}: the spec's architectures differ in depth, "
                             f"inputs, outputs, kernels or group ({sorted(sigs)})")
        self.chain = chains[0]
        self.cfg = cfg
        self.equivariant = cfg.task == "equivariant"
        if self.equivariant and self.invariant_only:
            raise ValueError(f"backend {cfg.backend} has no equivariant head (invariant task only)")
        c = self.chain
        self.n0, self.nL, self.L, self.k = c.n[0], c.n[-1], c.L, c.k
        self.channels = list(cfg.channels) if cfg.channels else [cfg.hidden] * cfg.layers
        self.head_hidden = cfg.head_hidden or cfg.hidden
        if self.equivariant:
            self.alpha = nn.Parameter(torch.tensor(float(cfg.edit_init)))

    def claimed_groups(self):
        return self.chain.claimed()

    @property
    def act(self):
        return torch.tanh if self.chain.mode == "sign" else torch.relu

    def _dtype(self):
        return next(self.parameters()).dtype

    def forward(self, batch):
        ws, chain = read(batch, self._dtype())
        if chain.signature() != self.chain.signature():
            raise ValueError(f"backend {self.cfg.backend} was built for chains {self.chain.signature()} "
                             f"(depth, inputs, outputs, kernels, group) but the batch has "
                             f"{chain.signature()}")
        if not self.equivariant:
            return self.invariant(ws)
        d_x, d_ea = write(batch, self.edit(ws), chain)
        return edit_output(batch, d_x, d_ea, self.alpha, self.alpha)

    def _feats(self, c):
        """Weight features per layer and bias channels for ``c`` channels on the real kernels."""
        return tuple(c * k for k in self.k), c


class MonomialNFN(WeightSpaceNet):
    """Monomial-NFN: ``MonomialLinear`` layers with ReLU/tanh between them; invariant task:
    ``EntryNormPool`` then the head; equivariant task: a last ``MonomialLinear`` to one channel.
    Invariant also to *uncoupled* actions in scale mode (docs/methods.md 3.3)."""

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        sign = self.chain.mode == "sign"
        dims = [1] + self.channels
        self.layers = nn.ModuleList(
            MonomialLinear(self.n0, self.nL, self.L, *self._feats(a), *self._feats(b), sign=sign)
            for a, b in zip(dims[:-1], dims[1:]))
        if self.equivariant:
            self.out = MonomialLinear(self.n0, self.nL, self.L, *self._feats(dims[-1]),
                                      *self._feats(1), sign=sign)
        else:
            self.pool = EntryNormPool(self.n0, self.nL, self.L, *self._feats(dims[-1]), sign=sign)
            self.head = head(self.pool.out_dim, self.head_hidden, cfg.out_dim, cfg.dropout)

    def body(self, ws):
        for layer in self.layers:
            ws = layer(ws).map(self.act)
        return ws

    def invariant(self, ws):
        return self.head(self.pool(self.body(ws)))

    def edit(self, ws):
        return self.out(self.body(ws))


class MagepNFN(WeightSpaceNet):
    """MAGEP-NFN: a ``MonomialLinear`` from the kernels into ``hidden`` channels (k = 1), then
    ``layers`` ``PolyLinear`` layers (ReLU/tanh between); invariant task: ``PolyInvariant`` and the
    head; equivariant task: a last ``MonomialLinear`` back to one channel per kernel position."""

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        sign = self.chain.mode == "sign"
        C, L, n0, nL = cfg.hidden, self.L, self.n0, self.nL
        inner = ((C,) * L, C)
        self.embed = MonomialLinear(n0, nL, L, *self._feats(1), *inner, sign=sign)
        self.layers = nn.ModuleList(PolyLinear(n0, nL, L, C, C) for _ in range(cfg.layers))
        if self.equivariant:
            self.out = MonomialLinear(n0, nL, L, *inner, *self._feats(1), sign=sign)
        else:
            self.inv = PolyInvariant(n0, nL, L, C, C)
            self.head = head(C, self.head_hidden, cfg.out_dim, cfg.dropout)

    def body(self, ws):
        ws = self.embed(ws).map(self.act)
        for layer in self.layers:
            ws = layer(ws).map(self.act)
        return ws

    def invariant(self, ws):
        return self.head(torch.relu(self.inv(self.body(ws))))

    def edit(self, ws):
        return self.out(self.body(ws))


class NeuronSetNFN(WeightSpaceNet):
    """NP (``fixed_io=False``) and HNP (``fixed_io=True``): ``NeuronSetLinear`` layers with ReLU
    between; invariant task: mean pooling then the head; equivariant task: a last layer to one
    channel. Permutation-equivariant only. With ``input_features: fourier`` every entry first
    goes through ``FourierFeatures`` (2 * ``fourier_features`` input channels instead of 1)."""

    fourier_inputs = True

    def __init__(self, cfg, spec, fixed_io):
        super().__init__(cfg, spec)
        self.fixed_io = fixed_io
        self.fourier = (FourierFeatures(cfg.fourier_features, cfg.fourier_scale)
                        if cfg.input_features == "fourier" else None)
        dims = [self.fourier.channels if self.fourier is not None else 1] + self.channels
        n = (self.n0, self.nL)
        io = cfg.io_embed and not fixed_io
        self.layers = nn.ModuleList(
            NeuronSetLinear(n, self.L, *self._feats(a), *self._feats(b), fixed_io=fixed_io,
                            io_embed=io)
            for a, b in zip(dims[:-1], dims[1:]))
        if self.equivariant:
            self.out = NeuronSetLinear(n, self.L, *self._feats(dims[-1]), *self._feats(1),
                                       fixed_io=fixed_io, io_embed=io)
        else:
            c = dims[-1]
            d = sum(c * k for k in self.k) + self.L * c
            if fixed_io:
                d += (self.n0 - 1) * c * self.k[0] + (self.nL - 1) * (c * self.k[-1] + c)
            self.head = head(d, self.head_hidden, cfg.out_dim, cfg.dropout)

    def body(self, ws):
        if self.fourier is not None:
            ws = self.fourier(ws)
        for layer in self.layers:
            ws = layer(ws).map(torch.relu)
        return ws

    def claimed_groups(self):
        return ("fixed", "perm")

    def invariant(self, ws):
        return self.head(mean_pool(self.body(ws), self.fixed_io))

    def edit(self, ws):
        return self.out(self.body(ws))


class StatNN(WeightSpaceNet):
    """STATNN (Unterthiner et al.): 7 statistics of every weight and bias tensor, then the head.
    Invariant task only; permutation-invariant only."""

    invariant_only = True

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.norm = nn.LayerNorm(14 * self.L) if cfg.layer_norm else nn.Identity()
        self.head = head(14 * self.L, self.head_hidden, cfg.out_dim, cfg.dropout)

    def claimed_groups(self):
        return ("fixed", "perm")

    def invariant(self, ws):
        return self.head(self.norm(weight_statistics(ws)))
