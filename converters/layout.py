"""Where every parameter of an architecture lives in its graph (cached per ``ArchSpec``).

The layout is the parameter manifest (docs/design.md 2.2): for each op that creates edges, the
edge range it owns, the kernel slots its entries occupy, and the state-dict keys it reads; for each
node-feature column, the node ranges and keys. Every parameter and buffer element is claimed by
exactly one slot, which is what makes ``to_module(to_graph(m))`` bitwise exact.

Edge order: layer-major (the node set an op writes), then destination-major, then source-minor in
the order of the weight's input channels. So the edges of one op, in a batch of one architecture,
reshape to ``(B, out, in, Fe)`` without a gather.
"""
from __future__ import annotations

import functools
import math

import torch

from . import ops
from .archspec import ArchSpec
from .groups import ACT_ID, EDGE_TYPE_ID, GROUP_ID, ROLE_ID
from .ops.base import Block, FeatureSlot, kernel_slots  # noqa: F401 (public names of this module)
from .symmetry import value_parts


class Layout:
    """Structure tensors and the parameter manifest of one ``ArchSpec`` (see module doc)."""

    def __init__(self, arch: ArchSpec):
        self.arch = arch
        sizes = [ns["size"] for ns in arch.nodesets]
        self.offsets = [0]
        for s in sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.num_nodes = self.offsets[-1]
        self.fe = math.prod(arch.kernel_shape) if arch.kernel_shape else 1
        self.fx = len(arch.node_features)
        parts = value_parts(arch.ops)

        self.sizes, self.parts = sizes, parts
        self.col = {name: i for i, name in enumerate(arch.node_features)}
        src_all, dst_all, etype_all, blocks = [], [], [], []
        features: list[FeatureSlot] = []
        e = 0
        for op in arch.ops:   # a driver loop: each op's rule says where its parameters live
            rule = ops.rule_for(op["op"])
            for ed in (rule.edge_blocks(op, self) if "ns" in op and op["op"] != "input" else ()):
                size, per_dest = ed.src.shape
                n_e = ed.src.numel()
                dst_local = torch.arange(size).repeat_interleave(per_dest)
                src_all.append(ed.src.reshape(-1))
                dst_all.append(self.offsets[op["ns"] if ed.dst is None else ed.dst] + dst_local)
                etype_all.append(torch.full((n_e,), EDGE_TYPE_ID[ed.etype], dtype=torch.long))
                blocks.append(Block(op, e, e + n_e, size, per_dest, ed.kshape,
                                    kernel_slots(ed.kshape, arch.kernel_shape), ed.key,
                                    tuple(ed.param_shape), tuple(ed.edge_view),
                                    tuple(ed.param_perm)))
                e += n_e
            features += rule.features(op, self)
        self.num_edges = e
        self.blocks = blocks
        #: one parameter used twice (a tied weight): ``(key, same_as, a, b)``, edges ``b`` hold
        #: the weights of edges ``a``; ``edge_tie`` gives each such pair one id (-1: untied)
        self.ties = [t for op in arch.ops for t in ops.rule_for(op["op"]).tied_edges(op, self)]
        self.edge_tie = torch.full((e,), -1, dtype=torch.long)
        n_tied = 0
        for _, _, a, b in self.ties:
            ids = n_tied + torch.arange(len(a))
            self.edge_tie[a], self.edge_tie[b] = ids, ids
            n_tied += len(a)
        self.features = features
        claimed = {}
        for f in features:
            for n in range(f.start, f.start + f.size):
                if (n, f.column) in claimed:
                    raise ValueError(f"'{f.key}' and '{claimed[(n, f.column)]}' claim the same "
                                     f"node feature")
            for n in range(f.start, f.start + f.size):
                claimed[(n, f.column)] = f.key
        empty = torch.zeros(0, dtype=torch.long)
        self.edge_index = torch.stack([torch.cat(src_all) if src_all else empty,
                                       torch.cat(dst_all) if dst_all else empty])
        self.edge_type = torch.cat(etype_all) if etype_all else empty
        self.edge_mask = torch.zeros(e, self.fe, dtype=torch.bool)
        for b in blocks:
            self.edge_mask[b.start:b.stop, b.slots] = True
        self._node_fields()

    def _node_fields(self):
        arch = self.arch
        layer, role, io, group, act, perm, tie = ([] for _ in range(7))
        perm_ids, tie_base, tie_first = {}, {}, {}
        for k, ns in enumerate(arch.nodesets):
            n = ns["size"]
            layer.append(torch.full((n,), k))
            role.append(torch.full((n,), ROLE_ID[ns["role"]]))
            io.append(torch.arange(n) if ns["role"] in ("input", "output")
                      else torch.full((n,), -1))
            group.append(torch.full((n,), GROUP_ID[ns["group"]]))
            act.append(torch.full((n,), ACT_ID[ns["act"]]))
            if ns["group"] == "fixed":
                perm.append(torch.full((n,), -1))
            else:
                bounds = [0, *ns["perm_cuts"], n]
                seg = torch.zeros(n, dtype=torch.long)
                for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                    seg[lo:hi] = perm_ids.setdefault((ns["align"], s), len(perm_ids))
                perm.append(seg)
            if ns["tie"] >= 0:
                if ns["tie"] not in tie_base:  # tied sets are equal in size: one id per position
                    tie_base[ns["tie"]] = sum(arch.nodesets[k2]["size"] for k2 in
                                              tie_first.values())
                    tie_first[ns["tie"]] = k
                tie.append(tie_base[ns["tie"]] + torch.arange(n))
            else:
                tie.append(torch.full((n,), -1))
        cat = lambda xs: torch.cat(xs).long() if xs else torch.zeros(0, dtype=torch.long)
        self.layer, self.role, self.io_index = cat(layer), cat(role), cat(io)
        self.group, self.act, self.perm_class, self.tie = cat(group), cat(act), cat(perm), cat(tie)
        # (P, 2) node pairs with reciprocal factors (node set records' ``inv_tie``: an
        # attention's query and key neurons); column 0 is the lower node set, sampled freely
        pairs = [torch.stack([self.offsets[k] + torch.arange(ns["size"]),
                              self.offsets[ns["inv_tie"]] + torch.arange(ns["size"])], 1)
                 for k, ns in enumerate(arch.nodesets) if ns.get("inv_tie", -1) > k]
        self.inverse_pairs = torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)
        # whole blocks that move together (node set records' ``blocks``: an attention's heads, a
        # GroupNorm's groups): per node of such a node set, (M,) each: the node, the first node
        # of its node set, the block size and the block-move id; ``block_count``: (J,) blocks
        # per id (one permutation of them moves the blocks of every node set of that id)
        rows, count = [], {}
        for k, ns in enumerate(arch.nodesets):
            b = ns.get("blocks")
            if b is None:
                continue
            n, d, j = ns["size"], b["size"], b["id"]
            if count.setdefault(j, n // d) != n // d or n % d:
                raise ValueError(f"node set '{ns['name']}' of {n} nodes is not {count[j]} "
                                 f"blocks of {d} (blocks id {j})")
            rows.append(torch.stack([self.offsets[k] + torch.arange(n),
                                     torch.full((n,), self.offsets[k]), torch.full((n,), d),
                                     torch.full((n,), j)], 1))
        blk = torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.long)
        self.block_node, self.block_start, self.block_size, self.block_id = blk.unbind(1)
        self.block_count = torch.tensor([count[j] for j in range(len(count))], dtype=torch.long)


@functools.lru_cache(maxsize=64)
def layout(arch: ArchSpec) -> Layout:
    """The (cached) ``Layout`` of ``arch``."""
    return Layout(arch)
