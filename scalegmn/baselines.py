"""The flat-MLP baseline: an MLP on the concatenated weights of one architecture (no symmetry)."""
from __future__ import annotations

import torch
import torch.nn as nn

from converters.graph import archs_of, pad_shape

from .edits import edit_output
from .spec import SpecInfo


class FlatMLP(nn.Module):
    """Reads ``[edge_attr (masked entries); x]`` of each network as one vector.

    Invariant task: ``(B, out_dim)``; equivariant task: a ``Batch`` with ``W + alpha * delta``.
    It claims no symmetry (``claimed_groups() == ("fixed",)``)."""

    def __init__(self, cfg, spec):
        super().__init__()
        info = SpecInfo.of(spec)
        if len(info.archs) != 1:
            raise ValueError("the flat-MLP baseline needs data sets of one architecture")
        from converters.layout import layout
        self.cfg, self.arch = cfg, info.archs[0]
        lay = layout(self.arch)
        self.n_e, self.fe, self.n_x, self.fx = lay.num_edges, lay.fe, lay.num_nodes, lay.fx
        # flat positions of the real (unpadded) entries of one network's (E * Fe) edge values
        self.register_buffer("edge_slots", lay.edge_mask.reshape(-1).nonzero().squeeze(1),
                             persistent=False)
        self.n_ea = self.edge_slots.numel()
        d_in = self.n_ea + self.n_x * self.fx
        d, L = cfg.hidden, cfg.layers
        layers, width = [], d_in
        for _ in range(max(L - 1, 1)):
            layers += [nn.Linear(width, d), nn.LayerNorm(d) if cfg.layer_norm else nn.Identity(),
                       nn.SiLU(), nn.Dropout(cfg.dropout)]
            width = d
        self.body = nn.Sequential(*layers)
        self.equivariant = cfg.task == "equivariant"
        self.head = nn.Linear(d, d_in if self.equivariant else cfg.out_dim)
        if self.equivariant:
            self.alpha = nn.Parameter(torch.tensor(float(cfg.edit_init)))

    def claimed_groups(self):
        return ("fixed",)

    def _flat(self, batch):
        archs = archs_of(batch)
        if any(a != self.arch for a in archs) or pad_shape(batch) != tuple(self.arch.kernel_shape):
            raise ValueError("the flat-MLP baseline reads networks of its one architecture only")
        B = len(archs)
        dtype = self.head.weight.dtype
        ea = batch.edge_attr.to(dtype).reshape(B, self.n_e * self.fe)[:, self.edge_slots]
        x = batch.x.to(dtype).reshape(B, -1)
        return torch.cat([ea, x], dim=1), B

    def forward(self, batch):
        v, B = self._flat(batch)
        y = self.head(self.body(v))
        if not self.equivariant:
            return y
        n_ea = self.n_ea
        d_ea = y.new_zeros(B, self.n_e * self.fe)
        d_ea[:, self.edge_slots] = y[:, :n_ea]
        return edit_output(batch, y[:, n_ea:].reshape(-1, self.fx), d_ea.reshape(-1, self.fe),
                           self.alpha, self.alpha)
