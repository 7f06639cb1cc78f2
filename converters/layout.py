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
from dataclasses import dataclass

import torch

from .archspec import ArchSpec
from .groups import ACT_ID, EDGE_TYPE_ID, GROUP_ID, ROLE_ID
from .symmetry import value_parts


@dataclass
class Block:
    """The edges one op creates. ``values`` of the op reshape to ``(out, per_dest, K)``."""
    op: dict
    start: int
    stop: int
    out: int          # destinations (= size of the node set written)
    per_dest: int     # sources per destination
    kshape: tuple     # spatial shape of one edge's values (() for a scalar weight)
    slots: torch.Tensor  # (K,) positions of those values in the padded feature axis
    weight_key: str | None  # state-dict key of the values (None: structural constant 1)

    @property
    def param_shape(self):
        op = self.op
        if op["op"] == "linear":
            return (self.out, op["in_features"])
        if op["op"] == "conv":
            return (self.out, self.per_dest, *op["kernel_size"])
        return (self.out,)


@dataclass
class FeatureSlot:
    key: str      # state-dict key
    column: int   # column of x
    start: int    # first node
    size: int     # number of nodes
    scalar: bool  # a 0-d buffer broadcast over the nodes (num_batches_tracked)


def kernel_slots(kshape, kernel_shape) -> torch.Tensor:
    """Flat positions of a ``kshape`` kernel centred in a ``kernel_shape`` grid."""
    kernel_shape = tuple(kernel_shape)
    if not kernel_shape:
        return torch.zeros(1, dtype=torch.long)
    kshape = tuple(kshape) or (1,) * len(kernel_shape)
    grids = [torch.arange(k) + (K - k) // 2 for k, K in zip(kshape, kernel_shape)]
    pos = torch.zeros(1, dtype=torch.long)
    for g, K in zip(grids, kernel_shape):
        pos = (pos[:, None] * K + g[None, :]).reshape(-1)
    return pos


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

        src_all, dst_all, etype_all, blocks = [], [], [], []
        features: list[FeatureSlot] = []
        col = {name: i for i, name in enumerate(arch.node_features)}
        e = 0
        for op in arch.param_ops:
            kind, ns = op["op"], op["ns"]
            off, size = self.offsets[ns], sizes[ns]
            if kind in ("linear", "conv"):
                in_sets = parts[op["in"][0]]
                if len(set(in_sets)) != len(in_sets):   # one (src, dst) pair would be two edges
                    raise ValueError(f"'{op['module']}' reads node sets {list(in_sets)}: a node "
                                     f"set may enter a layer only once")
                chan_nodes = torch.cat([torch.arange(self.offsets[p], self.offsets[p + 1])
                                        for p in in_sets])
                groups = op.get("groups", 1)
                ipg = len(chan_nodes) // groups
                opg = size // groups
                o = torch.arange(size)
                src = chan_nodes[((o // opg) * ipg)[:, None] + torch.arange(ipg)[None, :]]
                per_dest = ipg
                kshape = tuple(op["kernel_size"]) if kind == "conv" else tuple(op["spatial"])
                key = op["module"] + ".weight"
                etype = EDGE_TYPE_ID["weight"]
                if op["bias"]:
                    features.append(FeatureSlot(op["module"] + ".bias", col["bias"], off, size,
                                                False))
            elif kind in ("batchnorm", "layernorm"):
                pre = self.offsets[op["pre"]]
                src = (pre + torch.arange(size))[:, None]
                per_dest, kshape, key = 1, (), op["module"] + ".weight"
                etype = EDGE_TYPE_ID["norm"]
                if kind == "batchnorm" or op["bias"]:
                    features.append(FeatureSlot(op["module"] + ".bias", col["bias"], off, size,
                                                False))
                if kind == "batchnorm":
                    m = op["module"]
                    features += [FeatureSlot(m + ".running_mean", col["bn_mean"], pre, size, False),
                                 FeatureSlot(m + ".running_var", col["bn_var"], pre, size, False),
                                 FeatureSlot(m + ".num_batches_tracked", col["bn_count"], off,
                                             size, True)]
            elif kind == "add":
                a, b = (self.offsets[parts[v][0]] for v in op["in"])
                src = torch.stack([a + torch.arange(size), b + torch.arange(size)], 1)
                per_dest, kshape, key = 2, (), None
                etype = EDGE_TYPE_ID["residual"]
            else:  # pragma: no cover
                raise AssertionError(kind)
            n_e = src.numel()
            dst_local = torch.arange(size).repeat_interleave(per_dest)
            src_all.append(src.reshape(-1))
            dst_all.append(off + dst_local)
            etype_all.append(torch.full((n_e,), etype, dtype=torch.long))
            blocks.append(Block(op, e, e + n_e, size, per_dest, kshape,
                                kernel_slots(kshape, arch.kernel_shape), key))
            e += n_e
        self.num_edges = e
        self.blocks = blocks
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


@functools.lru_cache(maxsize=64)
def layout(arch: ArchSpec) -> Layout:
    """The (cached) ``Layout`` of ``arch``."""
    return Layout(arch)
