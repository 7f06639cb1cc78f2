"""``SparseEngine``: ScaleGMN's operations as gathers and scatter-sums over ``edge_index``.

Works on any batch, mixed architectures included (PyG's ``scatter``; no torch-scatter needed).
See ``engine.py`` for the operations and their shapes.
"""
from __future__ import annotations

import copy

import torch
from torch.utils.checkpoint import checkpoint
from torch_geometric.utils import scatter

from converters.groups import GROUPS

from .engine import EdgeValues, Mapped, Partners, evaluated, fused_linear


def group_index(groups: torch.Tensor, device=None) -> dict:
    """``{group name: row indices (on device)}`` of a host tensor of group ids; a single group
    maps to ``None`` (all rows). Computed on the host: no forward pass waits for the device."""
    present = torch.unique(groups).tolist()
    if len(present) == 1:
        return {GROUPS[present[0]]: None}
    return {GROUPS[g]: (groups == g).nonzero().squeeze(1).to(device) for g in present}


def apply_by_group(fn, x: torch.Tensor, index: dict) -> torch.Tensor:
    """``fn[g](x[rows of g])`` for every group of ``index`` (``group_index``), in place."""
    if len(index) == 1:
        (g, idx), = index.items()
        if idx is None:
            return fn.fn(g)(x)
    parts = [(idx, fn.fn(g)(x[idx])) for g, idx in index.items()]
    if not parts:
        y = fn.fn(next(iter(fn.keys())))(x[:0])
        return x.new_zeros(x.shape[0], y.shape[-1], dtype=y.dtype)
    # under autocast the groups' maps may end in different dtypes (bf16 after a Linear, float32
    # after a LayerNorm): the rows take the widest
    dtype = parts[0][1].dtype
    for _, y in parts[1:]:
        dtype = torch.promote_types(dtype, y.dtype)
    out = x.new_zeros(x.shape[0], parts[0][1].shape[-1], dtype=dtype)
    for idx, y in parts:
        out[idx] = y.to(dtype)
    return out


class SparseEngine:
    """Message passing over ``edge_index`` (2, E) with node groups ``groups`` (N,), both host
    tensors; index tensors are kept on ``device``. ``partner``: (N,) each node's inverse
    partner or -1 (``plan.partner_index``), ``heads`` the attention heads (``plan.head_index``;
    none when omitted). ``checkpoint``: memory-lean, each layer is
    recomputed in the backward pass (``run_layer``)."""

    name = "sparse"

    def __init__(self, edge_index: torch.Tensor, groups: torch.Tensor, num_nodes: int,
                 device: torch.device | None = None, checkpoint: bool = False,
                 partner: torch.Tensor | None = None, heads: tuple | None = None):
        edge_index, groups = edge_index.cpu(), groups.cpu()
        self.partner = Partners(partner, num_nodes, device, heads)
        self.head_scores = self.partner.head_scores
        self.host_index, self.groups, self.device = edge_index, groups, device
        self.src, self.dst = edge_index.to(device)
        self.N, self.checkpoint = num_nodes, checkpoint
        self.sub = None      # side -> (edge ids, engine on those edges): see ``toward``
        self._toward = {}    # memo of ``toward`` by node mask
        self.node_index = group_index(groups, device)
        src, dst = edge_index
        self.edge_index_by = {
            "src": group_index(groups[src], device) if src.numel() else {},
            "dst": group_index(groups[dst], device) if dst.numel() else {}}

    def _side(self, side):
        return self.src if side == "src" else self.dst

    # -- the operations of ``Engine`` --------------------------------------------------------------
    def node_map(self, fn, x):
        return apply_by_group(fn, x, self.node_index)

    def edge_map(self, fn, z, by):
        return apply_by_group(fn, z, self.edge_index_by[by])

    def gather(self, ev, nv, side):
        return ev * nv.index_select(0, self._side(side))

    def gather_cat(self, ev, nv, side):
        return torch.cat([ev, nv.index_select(0, self._side(side))], dim=-1)

    def aggregate(self, m, to):
        return scatter(m, self._side(to), dim=0, dim_size=self.N, reduce="sum")

    def edge_linear(self, e, *maps):
        if self.sub is not None:     # evaluated on the kept edges only, in ``message``
            return tuple(Mapped(e, m) for m in maps)
        return fused_linear(e, maps)

    def message(self, fn, ev: EdgeValues, nv, side, by, to):
        if self.sub is not None:            # only the edges into the nodes of ``toward``
            ids, eng = self.sub[to]
            ev = (Mapped(ev.values.index_select(0, ids), ev.fn) if isinstance(ev, Mapped)
                  else ev.index_select(0, ids))
            return eng.message(fn, ev, nv, side, by, to)
        return self.aggregate(self.edge_map(fn, self.gather(evaluated(ev), nv, side), by), to)

    def edge_gate(self, fn, g: EdgeValues, a, c):
        return evaluated(g) * fn(a.index_select(0, self.src) + c.index_select(0, self.dst))

    @property
    def restricted(self) -> bool:
        """Whether ``message`` runs only toward some nodes (``toward``)."""
        return self.sub is not None

    def toward(self, nodes: torch.Tensor) -> "SparseEngine":
        nodes = nodes.cpu()
        key = nodes.numpy().tobytes()
        if key not in self._toward:
            eng = copy.copy(self)
            eng.sub = {}
            for k, side in enumerate(("src", "dst")):
                ids = nodes[self.host_index[k]].nonzero().squeeze(1)
                eng.sub[side] = (ids.to(self.device),
                                 SparseEngine(self.host_index[:, ids], self.groups, self.N,
                                              self.device))
            self._toward[key] = eng
        return self._toward[key]

    def run_layer(self, layer, *states):
        if self.checkpoint and torch.is_grad_enabled():
            return checkpoint(layer, self, *states, use_reentrant=False)
        return layer(self, *states)
