"""Which engine a batch gets, built from the batch's architectures alone (on the host) and cached
per architecture tuple and device: a forward pass of a batch seen before makes no host work and
no device synchronisation."""
from __future__ import annotations

import functools

import torch

from converters.groups import EDGE_TYPE_ID, GROUP_ID, ROLE_ID
from converters.layout import layout

from .dense import DenseEngine
from .engine import Engine
from .sparse import SparseEngine


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


def partner_index(archs: tuple) -> torch.Tensor:
    """(N,) host long tensor: for every node of a batch of ``archs``, the node whose factor is
    the reciprocal of its own (``Layout.inverse_pairs``, both ways), -1 for none."""
    parts, off = [], 0
    for a in archs:
        lay = layout(a)
        p = torch.full((lay.num_nodes,), -1, dtype=torch.long)
        pairs = lay.inverse_pairs
        if len(pairs):
            if len(torch.unique(pairs.reshape(-1))) != pairs.numel():
                raise ValueError(f"architecture {a.hash}: a node is in two inverse pairs")
            p[pairs[:, 0]], p[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
        parts.append(torch.where(p >= 0, p + off, p))
        off += lay.num_nodes
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def head_index(archs: tuple) -> tuple:
    """``(q, k, head, v, v_head)`` host long tensors for a batch of ``archs``: the query and key
    neurons of every attention head, pairwise (one position of the head each), with a global head
    id, and the value neurons with theirs (``OpRule.attention_heads`` of each op)."""
    from converters import ops
    q, k, head, v, v_head = [], [], [], [], []
    off, n_heads = 0, 0
    for a in archs:
        lay = layout(a)
        for op in a.ops:
            for qs, ks, vs, H, d, dv in ops.rule_for(op["op"]).attention_heads(op, lay.parts):
                q.append(off + lay.offsets[qs] + torch.arange(H * d))
                k.append(off + lay.offsets[ks] + torch.arange(H * d))
                head.append(n_heads + torch.arange(H).repeat_interleave(d))
                v.append(off + lay.offsets[vs] + torch.arange(H * dv))
                v_head.append(n_heads + torch.arange(H).repeat_interleave(dv))
                n_heads += H
        off += lay.num_nodes
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long)
    return cat(q), cat(k), cat(head), cat(v), cat(v_head)


def is_recurrent(arch) -> bool:
    """Whether ``arch`` has recurrent (hidden -> gate) edges: its graph has cycles, and a gate
    layer's edges enter node sets of different groups (the dense engine cannot run it)."""
    return bool((layout(arch).edge_type == EDGE_TYPE_ID["recurrent"]).any())


def _batch_edge_index(archs: tuple) -> torch.Tensor:
    """(2, E) host tensor: the edge index of a PyG batch of graphs of ``archs``."""
    parts, off = [], 0
    for a in archs:
        lay = layout(a)
        parts.append(lay.edge_index + off)
        off += lay.num_nodes
    return torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)


@functools.lru_cache(maxsize=32)
def sparse_engine(archs: tuple, perm_only: bool, device: str,
                  checkpoint: bool = False) -> SparseEngine:
    """The sparse engine of a batch of ``archs`` on ``device`` (cached)."""
    groups = node_groups(archs, perm_only)
    return SparseEngine(_batch_edge_index(archs), groups, groups.shape[0], torch.device(device),
                        checkpoint, partner=partner_index(archs), heads=head_index(archs))


@functools.lru_cache(maxsize=32)
def dense_engine(arch, batch_size: int, perm_only: bool, device: str,
                 lean_chunk: int = 0) -> DenseEngine:
    """The dense engine of ``batch_size`` networks of ``arch`` on ``device`` (cached; its per-op
    blocks are cached per architecture and device)."""
    groups = tuple(node_groups((arch,), perm_only).tolist())
    return DenseEngine(arch, batch_size, groups, lean_chunk, torch.device(device),
                       partner=partner_index((arch,) * batch_size),
                       heads=head_index((arch,) * batch_size))


def engine_for(archs: tuple, kind: str, perm_only: bool, device, checkpoint: bool = False,
               checkpoint_chunk: int = 16) -> Engine:
    """The engine for a batch of ``archs``: ``kind`` ``"dense"`` (one architecture only),
    ``"sparse"`` or ``"auto"`` (dense when the batch has one architecture without recurrent
    edges). ``checkpoint``:
    memory-lean (the dense engine recomputes its edge functions in chunks of
    ``checkpoint_chunk`` networks, the sparse one recomputes whole layers)."""
    one = all(a is archs[0] or a == archs[0] for a in archs[1:])
    if kind == "dense" and not one:
        raise ValueError("the dense engine needs a batch of one architecture; use "
                         "engine='sparse' or 'auto' for mixed batches")
    device = str(device)
    if kind == "auto" and one and is_recurrent(archs[0]):
        kind = "sparse"   # graphs with cycles: the dense engine refuses them
    if kind == "dense" or (kind == "auto" and one):
        return dense_engine(archs[0], len(archs), perm_only, device,
                            lean_chunk=checkpoint_chunk if checkpoint else 0)
    return sparse_engine(archs, perm_only, device, checkpoint)
