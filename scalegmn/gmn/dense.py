"""``DenseEngine``: ScaleGMN's operations for a batch of one architecture.

The edges of an op are a ``(B, out, in, c)`` view (converters' edge order: layer-major,
destination-major, source-minor), so gathers are broadcasts and scatter-sums are sums over an
axis, and group-dispatched maps run on whole layers. Memory-lean (``lean_chunk``): the per-edge
functions run chunk by chunk of networks under activation checkpointing. See ``engine.py``.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch.utils.checkpoint import checkpoint

from converters.groups import EDGE_TYPE_ID, GROUPS
from converters.layout import layout

from .engine import EdgeValues, Mapped, Partners, fused_linear
from .sparse import group_index


class _Block:
    __slots__ = ("start", "stop", "out", "per", "dst_off", "src", "row", "dst_group",
                 "src_group", "src_index")

    def __copy__(self):
        new = _Block()
        for k in self.__slots__:
            setattr(new, k, getattr(self, k))
        return new


@functools.lru_cache(maxsize=64)
def _blocks(arch, group_key, device=None):
    """Per-op edge blocks of ``arch`` with the group of their endpoints; index tensors on
    ``device`` (on the host when ``None``)."""
    if device is not None:
        host, offsets, N, E = _blocks(arch, group_key)
        out = []
        for b in host:
            blk = copy.copy(b)
            blk.src = b.src.to(device)
            blk.row = b.row.to(device) if isinstance(b.row, torch.Tensor) else b.row
            blk.src_index = (None if b.src_index is None else
                             {g: i if i is None else i.to(device)
                              for g, i in b.src_index.items()})
            out.append(blk)
        return out, offsets, N, E
    lay = layout(arch)
    groups = torch.tensor(group_key)
    out = []
    for b in lay.blocks:
        blk = _Block()
        blk.start, blk.stop, blk.out, blk.per = b.start, b.stop, b.out, b.per_dest
        src = lay.edge_index[0, b.start:b.stop].view(b.out, b.per_dest)
        blk.dst_off = int(lay.edge_index[1, b.start])
        blk.src = src
        bcast = bool((src == src[:1]).all())
        row = src[0]
        if bcast and bool((row == torch.arange(int(row[0]), int(row[0]) + len(row))).all()):
            blk.row = slice(int(row[0]), int(row[0]) + len(row))
        else:
            blk.row = row if bcast else None
        blk.dst_group = GROUPS[int(groups[blk.dst_off])]
        sg = groups[src]
        blk.src_group = GROUPS[int(sg[0, 0])] if bool((sg == sg[0, 0]).all()) else None
        blk.src_index = group_index(sg.reshape(-1)) if blk.src_group is None else None
        out.append(blk)
    return out, lay.offsets, lay.num_nodes, lay.num_edges


class DenseEngine:
    """Message passing for B graphs of one architecture (see module doc)."""

    name = "dense"

    def __init__(self, arch, batch_size: int, groups_one, lean_chunk: int = 0,
                 device: torch.device | None = None, partner: torch.Tensor | None = None,
                 heads: tuple | None = None):
        """``groups_one``: the (N,) group ids of one network (a tuple or a host tensor);
        ``partner``: the (B * N,) inverse partners of the batch's nodes (``plan.partner_index``;
        ``heads``: the attention heads (``plan.head_index``); none when omitted)."""
        if bool((layout(arch).edge_type == EDGE_TYPE_ID["recurrent"]).any()):
            raise ValueError(f"the dense engine runs acyclic graphs only; architecture "
                             f"{arch.hash} has recurrent edges (cycles): use engine='sparse' "
                             f"(or 'auto')")
        self.B = batch_size
        self.partner = Partners(partner, batch_size * layout(arch).num_nodes, device, heads)
        self.head_scores = self.partner.head_scores
        self.lean_chunk = lean_chunk
        self.keep = None     # side -> op indices that ``message`` evaluates: see ``toward``
        group_key = tuple(groups_one.tolist() if isinstance(groups_one, torch.Tensor)
                          else groups_one)
        groups_one = torch.tensor(group_key)
        self.host_blocks = _blocks(arch, group_key)[0]
        self.blocks, self.offsets, self.N, self.E = _blocks(arch, group_key, device)
        self.sizes = [blk.stop - blk.start for blk in self.blocks]
        # node set k + 1 is written by op k (ops with parameters run in node-set order)
        self.dst_in_order = all(blk.dst_off == self.offsets[k + 1]
                                for k, blk in enumerate(self.blocks))
        self.node_ranges = []   # merged runs of node sets with one group
        for k in range(len(self.offsets) - 1):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            g = GROUPS[int(groups_one[lo])]
            if self.node_ranges and self.node_ranges[-1][2] == g and self.node_ranges[-1][1] == lo:
                self.node_ranges[-1] = (self.node_ranges[-1][0], hi, g)
            else:
                self.node_ranges.append((lo, hi, g))

    # views
    def _nodes(self, x):
        return x.view(self.B, self.N, x.shape[-1])

    def _split(self, z):
        """Per-op views (B, out, in, c) of an edge tensor (split: its backward is a cat)."""
        c = z.shape[-1]
        parts = z.view(self.B, self.E, c).split(self.sizes, dim=1)
        return [p.view(self.B, blk.out, blk.per, c) for p, blk in zip(parts, self.blocks)]

    def _flat_edges(self, parts):
        return torch.cat([p.reshape(self.B, -1, p.shape[-1]) for p in parts], dim=1).reshape(
            self.B * self.E, -1)

    def node_map(self, fn, x):
        xv = self._nodes(x)
        parts = [fn.fn(g)(xv[:, lo:hi]) for lo, hi, g in self.node_ranges]
        return torch.cat(parts, dim=1).reshape(self.B * self.N, -1)

    def _map_block(self, fn, blk, zb, by):
        g = blk.dst_group if by == "dst" else blk.src_group
        if g is not None:
            return fn.fn(g)(zb)
        # sources of mixed groups within one op (a cat of different layers)
        nb = zb.shape[0]
        flat = zb.reshape(nb, blk.out * blk.per, zb.shape[-1])
        ys = {g: fn.fn(g)(flat[:, i]) for g, i in blk.src_index.items()}
        y = flat.new_zeros(nb, flat.shape[1], next(iter(ys.values())).shape[-1])
        for g, i in blk.src_index.items():
            y[:, i] = ys[g]
        return y.view(nb, blk.out, blk.per, y.shape[-1])

    def edge_map(self, fn, z, by):
        return self._flat_edges([self._map_block(fn, blk, zb, by)
                                 for blk, zb in zip(self.blocks, self._split(z))])

    def _chunked(self, fn, *xs):
        """``fn(*xs)`` (tensors with the batch first); with ``lean_chunk`` set and gradients on,
        evaluated on chunks of ``lean_chunk`` networks under activation checkpointing (the
        chunk's intermediates are recomputed in the backward pass instead of being kept)."""
        k = self.lean_chunk
        if not k or not torch.is_grad_enabled():
            return fn(*xs)
        outs = [checkpoint(fn, *[x[i:i + k] for x in xs], use_reentrant=False)
                for i in range(0, self.B, k)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    @property
    def restricted(self) -> bool:
        """Whether ``message`` runs only toward some nodes (``toward``)."""
        return self.keep is not None

    def toward(self, nodes: torch.Tensor) -> "DenseEngine":
        """This engine with ``message`` evaluated only on the ops that send into one of
        ``nodes`` ((B * N,) bool; all networks have the same structure, the first one's are
        read) on their receiving (``to``) side; the sums onto the nodes of other ops are 0. See
        ``SparseEngine.toward``."""
        nodes_one = nodes[:self.N].cpu()
        eng = copy.copy(self)
        eng.keep = {"dst": {k for k, b in enumerate(self.host_blocks)
                            if bool(nodes_one[b.dst_off:b.dst_off + b.out].any())},
                    "src": {k for k, b in enumerate(self.host_blocks)
                            if bool(nodes_one[b.src.reshape(-1)].any())}}
        for side, ks in eng.keep.items():    # nothing to read on a side: evaluate it all
            if not ks:
                eng.keep[side] = set(range(len(self.blocks)))
        return eng

    def edge_linear(self, e, *maps):
        if self.lean_chunk or self.keep is not None:   # applied where the edges are evaluated
            return tuple(Mapped(e, m) for m in maps)
        return fused_linear(e, maps)

    def message(self, fn, ev: EdgeValues, nv, side, by, to):
        """Op by op, without materialising the edge tensors of the whole batch (no
        concatenation, no re-split); with ``lean_chunk``, chunk by chunk under checkpointing (a
        pending map of ``ev`` included, so that only ``ev`` itself is kept for the backward
        pass); with ``toward``, on its ops only."""
        values, emap = (ev.values, ev.fn) if isinstance(ev, Mapped) else (ev, None)
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        parts = []
        for k, (blk, e) in enumerate(zip(self.blocks, self._split(values))):
            if self.keep is not None and k not in self.keep[to]:
                parts.append(None)
                continue

            def f(e, nv, blk=blk):
                e = e if emap is None else emap(e)
                return self._reduce_block(blk, self._map_block(fn, blk, e * pick(nv, blk), by),
                                          to)
            parts.append(self._chunked(f, e, nv))
        return self._assemble(parts, to)

    def edge_gate(self, fn, g: EdgeValues, a, c):
        """Op by op (chunked like ``message``)."""
        values, gmap = (g.values, g.fn) if isinstance(g, Mapped) else (g, None)
        a, c = self._nodes(a), self._nodes(c)
        parts = []
        for blk, gb in zip(self.blocks, self._split(values)):
            def f(gb, a, c, blk=blk):
                gb = gb if gmap is None else gmap(gb)
                return gb * fn(self._src_nodes(a, blk) + self._dst_nodes(c, blk))
            parts.append(self._chunked(f, gb, a, c))
        return self._flat_edges(parts)

    def run_layer(self, layer, *states):
        return layer(self, *states)     # a lean dense engine chunks its edge functions itself

    def _src_nodes(self, nv, blk):
        """(B, 1, per, c) (broadcast over destinations) or (B, out, per, c)."""
        if blk.row is not None:
            return nv[:, blk.row].unsqueeze(1)
        return nv[:, blk.src.reshape(-1)].view(nv.shape[0], blk.out, blk.per, nv.shape[-1])

    def _dst_nodes(self, nv, blk):
        return nv[:, blk.dst_off:blk.dst_off + blk.out].unsqueeze(2)

    def gather(self, ev, nv, side):
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        return self._flat_edges([e * pick(nv, b) for b, e in zip(self.blocks, self._split(ev))])

    def gather_cat(self, ev, nv, side):
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        parts = []
        for blk, e in zip(self.blocks, self._split(ev)):
            n = pick(nv, blk).expand(self.B, blk.out, blk.per, nv.shape[-1])
            parts.append(torch.cat([e, n], dim=-1))
        return self._flat_edges(parts)

    def aggregate(self, m, to):
        return self._assemble([self._reduce_block(blk, mb, to)
                               for blk, mb in zip(self.blocks, self._split(m))], to)

    @staticmethod
    def _reduce_block(blk, mb, side):
        """An op's (B, out, per, c) edge values summed onto its destinations or sources."""
        if side == "dst":
            return mb.sum(2)
        return mb.sum(1) if blk.row is not None else mb

    def _assemble(self, parts, side):
        """Per-op sums onto ``side`` nodes -> (B * N, c); a ``None`` part adds nothing."""
        some = next(p for p in parts if p is not None)
        c = some.shape[-1]
        if side == "dst" and self.dst_in_order:
            first = some.new_zeros(self.B, self.offsets[1], c)
            parts = [some.new_zeros(self.B, blk.out, c) if p is None else p
                     for blk, p in zip(self.blocks, parts)]
            return torch.cat([first] + parts, dim=1).reshape(-1, c)
        out = some.new_zeros(self.B, self.N, c)
        for blk, r in zip(self.blocks, parts):
            if r is None:
                continue
            if side == "dst":
                out[:, blk.dst_off:blk.dst_off + blk.out] += r
            elif blk.row is not None:
                out[:, blk.row] += r
            else:
                out.index_add_(1, blk.src.reshape(-1), r.reshape(self.B, -1, c))
        return out.reshape(self.B * self.N, c)
