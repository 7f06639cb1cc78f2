"""Two execution engines for message passing on parameter graphs, with one result.

Both take node tensors of shape (N_total, c) and edge tensors of shape (E_total, c) in the order
of the batch, and offer the same few operations. The model is written once against them.

- ``SparseEngine``: gathers over ``edge_index`` and scatter-sums (PyG's ``scatter``; works on any
  graphs, mixed architectures included; no torch-scatter needed).
- ``DenseEngine``: for a batch of one architecture. Edges of an op are a reshape
  ``(B, out, in, c)`` (converters' edge order), so gathers become broadcasts and scatter-sums
  become sums over an axis; per-group functions run on whole layers.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch.utils.checkpoint import checkpoint
from torch_geometric.utils import scatter

from converters.groups import GROUP_ID, GROUPS, ROLE_ID
from converters.layout import layout


def _apply_groups(disp, x, index):
    """Apply ``disp.fn(g)`` to the rows ``index[g]`` of ``x`` (``None``: all rows)."""
    if len(index) == 1:
        (g, idx), = index.items()
        if idx is None:
            return disp.fn(g)(x)
    out = None
    for g, idx in index.items():
        y = disp.fn(g)(x[idx])
        if out is None:
            out = x.new_zeros(x.shape[0], y.shape[-1])
        out[idx] = y
    if out is None:
        out = disp.fn(next(iter(disp.keys())))(x[:0])
        out = x.new_zeros(x.shape[0], out.shape[-1])
    return out


def _group_index(groups: torch.Tensor, device=None) -> dict:
    """``{group name: row indices (on device)}`` of a host (CPU) tensor of group ids; a single
    group maps to ``None`` (all rows). Computed on the host, so that no forward pass waits for
    the device."""
    present = torch.unique(groups).tolist()
    if len(present) == 1:
        return {GROUPS[present[0]]: None}
    return {GROUPS[g]: (groups == g).nonzero().squeeze(1).to(device) for g in present}


def node_groups(archs: tuple, perm_only: bool = False) -> torch.Tensor:
    """(N,) host tensor: the group id of every node of a batch of ``archs`` (in batch order);
    with ``perm_only`` every non-``fixed`` node counts as ``perm`` (the GMN ablation)."""
    g = torch.cat([layout(a).group for a in archs])
    if perm_only:
        g = torch.where(g == GROUP_ID["fixed"], g, torch.full_like(g, GROUP_ID["perm"]))
    return g


def io_nodes(archs: tuple) -> torch.Tensor:
    """(N,) host bool tensor: the input and output neurons of a batch of ``archs``."""
    role = torch.cat([layout(a).role for a in archs])
    return (role == ROLE_ID["input"]) | (role == ROLE_ID["output"])


def _batch_edge_index(archs: tuple) -> torch.Tensor:
    """(2, E) host tensor: the edge index of a PyG batch of graphs of ``archs``."""
    parts, off = [], 0
    for a in archs:
        lay = layout(a)
        parts.append(lay.edge_index + off)
        off += lay.num_nodes
    return torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)


@functools.lru_cache(maxsize=32)
def sparse_engine(archs: tuple, perm_only: bool, device: str) -> "SparseEngine":
    """The sparse engine of a batch of ``archs`` on ``device``, built from the architectures
    alone and cached: a forward pass of an architecture tuple seen before costs no host work and
    no device synchronisation."""
    groups = node_groups(archs, perm_only)
    return SparseEngine(_batch_edge_index(archs), groups, groups.shape[0], torch.device(device))


def dense_engine(arch, batch_size: int, perm_only: bool, device: str,
                 lean_chunk: int = 0) -> "DenseEngine":
    """The dense engine of ``batch_size`` networks of ``arch`` on ``device`` (its per-op blocks
    are cached per architecture and device)."""
    groups = tuple(node_groups((arch,), perm_only).tolist())
    return DenseEngine(arch, batch_size, groups, lean_chunk, torch.device(device))


class SparseEngine:
    """Message passing over ``edge_index`` (see module doc). ``edge_index`` (2, E) and
    ``groups`` (N,) group ids are host tensors; the engine keeps its index tensors on
    ``device``."""

    name = "sparse"

    def __init__(self, edge_index: torch.Tensor, groups: torch.Tensor, num_nodes: int,
                 device: torch.device | None = None):
        edge_index, groups = edge_index.cpu(), groups.cpu()
        self.host_index, self.groups, self.device = edge_index, groups, device
        self.src, self.dst = edge_index.to(device)
        self.N = num_nodes
        self.sub = None      # side -> (edge ids, engine on those edges): see ``toward``
        self._toward = {}    # memo of ``toward`` by node mask
        self.node_index = _group_index(groups, device)
        src, dst = edge_index
        self.edge_index_by = {
            "src": _group_index(groups[src], device) if src.numel() else {},
            "dst": _group_index(groups[dst], device) if dst.numel() else {}}

    def node_map(self, disp, x):
        return _apply_groups(disp, x, self.node_index)

    def edge_map(self, disp, z, by):
        return _apply_groups(disp, z, self.edge_index_by[by])

    def _side(self, side):
        return self.src if side == "src" else self.dst

    def edge_times_node(self, ev, nv, side):
        return ev * nv.index_select(0, self._side(side))

    def edge_plus_nodes(self, a, b):
        """``a[src] + b[dst]`` per edge."""
        return a.index_select(0, self.src) + b.index_select(0, self.dst)

    def edge_cat_node(self, ev, nv, side):
        return torch.cat([ev, nv.index_select(0, self._side(side))], dim=-1)

    def sum_to(self, m, side):
        return scatter(m, self._side(side), dim=0, dim_size=self.N, reduce="sum")

    lean_chunk = 0   # no chunked recomputation here (the model checkpoints whole layers)

    @property
    def restricted(self) -> bool:
        """Whether ``message`` runs only toward some nodes (``toward``)."""
        return self.sub is not None

    def toward(self, nodes: torch.Tensor) -> "SparseEngine":
        """This engine with ``message`` evaluated only on the edges whose receiving end (its
        ``to`` side) is one of ``nodes`` ((N,) bool); the sums onto other nodes are 0. For a
        last layer whose readout reads only those nodes: the same readout, fewer edges.
        ``nodes`` is a host tensor; the result is memoised per mask."""
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

    def message(self, disp, ev, nv, side, by, to, emap=None):
        """``sum_to(edge_map(disp, edge_times_node(emap(ev), nv, side), by), to)``
        (``emap``: a map of the edge values applied first; default none)."""
        if self.sub is not None:            # only the edges into the nodes of ``toward``
            ids, eng = self.sub[to]
            return eng.message(disp, ev.index_select(0, ids), nv, side, by, to, emap)
        ev = ev if emap is None else emap(ev)
        return self.sum_to(self.edge_map(disp, self.edge_times_node(ev, nv, side), by), to)

    def edge_gate(self, fn, g, a, c, gmap=None):
        """``gmap(g) * fn(a[src] + c[dst])`` per edge (``gmap`` default: none)."""
        g = g if gmap is None else gmap(g)
        return g * fn(self.edge_plus_nodes(a, c))


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
        blk.src_index = _group_index(sg.reshape(-1)) if blk.src_group is None else None
        out.append(blk)
    return out, lay.offsets, lay.num_nodes, lay.num_edges


class DenseEngine:
    """Message passing for B graphs of one architecture (see module doc)."""

    name = "dense"

    def __init__(self, arch, batch_size: int, groups_one, lean_chunk: int = 0,
                 device: torch.device | None = None):
        """``groups_one``: the (N,) group ids of one network (a tuple or a host tensor)."""
        self.B = batch_size
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

    def node_map(self, disp, x):
        xv = self._nodes(x)
        parts = [disp.fn(g)(xv[:, lo:hi]) for lo, hi, g in self.node_ranges]
        return torch.cat(parts, dim=1).reshape(self.B * self.N, -1)

    def _map_block(self, disp, blk, zb, by):
        g = blk.dst_group if by == "dst" else blk.src_group
        if g is not None:
            return disp.fn(g)(zb)
        # sources of mixed groups within one op (a cat of different layers)
        nb = zb.shape[0]
        flat = zb.reshape(nb, blk.out * blk.per, zb.shape[-1])
        ys = {g: disp.fn(g)(flat[:, i]) for g, i in blk.src_index.items()}
        y = flat.new_zeros(nb, flat.shape[1], next(iter(ys.values())).shape[-1])
        for g, i in blk.src_index.items():
            y[:, i] = ys[g]
        return y.view(nb, blk.out, blk.per, y.shape[-1])

    def edge_map(self, disp, z, by):
        return self._flat_edges([self._map_block(disp, blk, zb, by)
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

    def message(self, disp, ev, nv, side, by, to, emap=None):
        """``sum_to(edge_map(disp, edge_times_node(emap(ev), nv, side), by), to)`` op by op,
        without materialising the edge tensors of the whole batch (no concatenation, no
        re-split); with ``lean_chunk``, chunk by chunk under checkpointing (``emap`` included,
        so that only ``ev`` itself is kept for the backward pass); with ``toward``, on its ops
        only."""
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        parts = []
        for k, (blk, e) in enumerate(zip(self.blocks, self._split(ev))):
            if self.keep is not None and k not in self.keep[to]:
                parts.append(None)
                continue

            def f(e, nv, blk=blk):
                e = e if emap is None else emap(e)
                return self._reduce_block(blk, self._map_block(disp, blk, e * pick(nv, blk), by),
                                          to)
            parts.append(self._chunked(f, e, nv))
        return self._assemble(parts, to)

    def edge_gate(self, fn, g, a, c, gmap=None):
        """``gmap(g) * fn(a[src] + c[dst])`` per edge, op by op (chunked like ``message``)."""
        a, c = self._nodes(a), self._nodes(c)
        parts = []
        for blk, gb in zip(self.blocks, self._split(g)):
            def f(gb, a, c, blk=blk):
                gb = gb if gmap is None else gmap(gb)
                return gb * fn(self._src_nodes(a, blk) + self._dst_nodes(c, blk))
            parts.append(self._chunked(f, gb, a, c))
        return self._flat_edges(parts)

    def _src_nodes(self, nv, blk):
        """(B, 1, per, c) (broadcast over destinations) or (B, out, per, c)."""
        if blk.row is not None:
            return nv[:, blk.row].unsqueeze(1)
        return nv[:, blk.src.reshape(-1)].view(nv.shape[0], blk.out, blk.per, nv.shape[-1])

    def _dst_nodes(self, nv, blk):
        return nv[:, blk.dst_off:blk.dst_off + blk.out].unsqueeze(2)

    def edge_times_node(self, ev, nv, side):
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        return self._flat_edges([e * pick(nv, b) for b, e in zip(self.blocks, self._split(ev))])

    def edge_plus_nodes(self, a, b):
        a, b = self._nodes(a), self._nodes(b)
        return self._flat_edges([self._src_nodes(a, blk) + self._dst_nodes(b, blk)
                                 for blk in self.blocks])

    def edge_cat_node(self, ev, nv, side):
        nv = self._nodes(nv)
        pick = self._src_nodes if side == "src" else self._dst_nodes
        parts = []
        for blk, e in zip(self.blocks, self._split(ev)):
            n = pick(nv, blk).expand(self.B, blk.out, blk.per, nv.shape[-1])
            parts.append(torch.cat([e, n], dim=-1))
        return self._flat_edges(parts)

    def sum_to(self, m, side):
        return self._assemble([self._reduce_block(blk, mb, side)
                               for blk, mb in zip(self.blocks, self._split(m))], side)

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
