"""Group actions on parameter graphs: ``sample_action`` and ``Action``.

An action is a permutation ``perm`` of the nodes (``perm[n]`` is the new index of node n) and a
factor ``q[n]`` per node. It maps a network's parameters as

    W'_l = D_l P_l W_l P_{l-1}^T D_{l-1}^{-1},     b'_l = D_l P_l b_l,

i.e. the edge ``j -> i`` moves to ``perm[j] -> perm[i]`` and is multiplied by ``q_i / q_j``; node
feature columns are multiplied by ``q`` ("neuron"), ``1/q`` ("inverse") or left alone
("invariant"), as declared in ``groups.NODE_FEATURES``. Sampled actions stay inside the graph's
declared symmetry group, so they keep the network function (the tests check this promise).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .graph import batch_vector
from .groups import GROUP_ID, NODE_FEATURES




def _compact(*keys) -> torch.Tensor:
    """Dense ids 0..K-1 for the rows of the stacked integer keys."""
    stacked = torch.stack(keys, dim=1)
    return torch.unique(stacked, dim=0, return_inverse=True)[1]


@dataclass
class Action:
    """A symmetry-group element for one graph or a batch (see module doc).

    ``perm``: (N,) long, new index of each node; ``q``: (N,) float64, factor of each node.
    """

    perm: torch.Tensor
    q: torch.Tensor

    def to(self, device) -> "Action":
        """This action with its tensors on ``device``."""
        return Action(self.perm.to(device), self.q.to(device))

    def inverse(self) -> "Action":
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(len(self.perm), device=self.perm.device)
        q = torch.empty_like(self.q)
        q[self.perm] = 1.0 / self.q
        return Action(inv, q)

    def edge_source(self, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """For every edge position of the transformed graph, the edge it comes from."""
        src, dst = edge_index
        key = src * num_nodes + dst
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(num_nodes, device=self.perm.device)
        target = inv[src] * num_nodes + inv[dst]
        order = torch.argsort(key)
        pos = torch.searchsorted(key[order], target).clamp_max(max(len(key) - 1, 0))
        old = order[pos]
        if not torch.equal(key[old], target):
            raise ValueError("the permutation does not preserve the graph structure "
                             "(was the action sampled for another graph?)")
        return old

    def apply(self, graph):
        """A new graph (or ``Batch``) with the same structure and transformed values (on the
        graph's device)."""
        N = graph.num_nodes
        if len(self.perm) != N:
            raise ValueError(f"action is for {len(self.perm)} nodes, graph has {N}")
        device = graph.edge_index.device
        if self.perm.device != device:
            return self.to(device).apply(graph)
        q = self.q
        fx = graph.x.shape[1]
        kinds = list(NODE_FEATURES.values())[:fx]
        factors = torch.stack([q if k == "neuron" else 1.0 / q if k == "inverse"
                               else torch.ones_like(q) for k in kinds], dim=1)
        x = torch.empty_like(graph.x)
        x[self.perm] = (graph.x.double() * factors).to(graph.x.dtype)
        old = self.edge_source(graph.edge_index, N)
        src, dst = graph.edge_index
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(N, device=device)
        ratio = q[inv[dst]] / q[inv[src]]
        ea = (graph.edge_attr[old].double() * ratio[:, None]).to(graph.edge_attr.dtype)
        out = copy.copy(graph)
        out.x, out.edge_attr = x, ea
        return out

    def apply_state_dict(self, arch, state_dict: dict) -> dict:
        """The action on a state dict of architecture ``arch`` (an ``ArchSpec``, or a graph whose
        ``arch`` is used), computed op by op by each op's action rule (``OpRule.act``) rather than
        on the graph. Equal, bitwise, to ``to_state_dict(self.apply(graph))``: the two are
        independent implementations of one action, and the tests hold them to each other."""
        from .layout import layout
        from .ops import ParamAction, rule_for
        from .symmetry import value_parts
        arch = getattr(arch, "arch", arch)
        lay = layout(arch)
        if len(self.perm) != lay.num_nodes:
            raise ValueError(f"action is for {len(self.perm)} nodes, arch has {lay.num_nodes}")
        perm, q = self.perm.cpu(), self.q.cpu()
        perms, qs, sizes = {}, {}, {}
        for k, ns in enumerate(arch.nodesets):
            lo, n = lay.offsets[k], ns["size"]
            local = perm[lo:lo + n] - lo
            if n and (int(local.min()) < 0 or int(local.max()) >= n):
                raise ValueError(f"the action moves nodes of '{ns['name']}' out of their node set")
            perms[k], qs[k], sizes[k] = local, q[lo:lo + n], n
        a = ParamAction(perms, qs, sizes)
        parts = value_parts(arch.ops)
        sd = {k: v.detach().clone() for k, v in state_dict.items()}
        for op in arch.ops:
            rule_for(op["op"]).act(op, sd, a, parts)
        return sd

    def apply_dense(self, dense):
        """The action on a dense view (returns a new ``DenseWeights``)."""
        from .dense import from_dense, to_dense
        return to_dense(self.apply(from_dense(dense)))

    def apply_module(self, module: nn.Module, example_input: Optional[torch.Tensor] = None):
        """A transformed copy of ``module`` (same class, new parameter and buffer values)."""
        from .convert import to_graph
        from .graph import to_state_dict
        g = to_graph(module, example_input)
        sd = to_state_dict(self.apply(g))
        new = copy.deepcopy(module)
        new.load_state_dict(sd, strict=True)
        return new


def sample_action(graph, generator: Optional[torch.Generator] = None,
                  scale_range=(0.1, 10.0)) -> Action:
    """A random element of ``graph``'s symmetry group (one independent draw per graph of a batch).

    A permutation per ``perm_class`` (aligned node sets move together), followed by a move of
    whole blocks where the node sets declare them (an attention's heads, a GroupNorm's groups:
    the node-set records' ``blocks``, docs/design.md 4); per neuron a factor:
    log-uniform in ``scale_range`` for ``scale``, a random sign for ``sign``, both for ``linear``,
    1 for ``perm`` and ``fixed``; tied neurons share both. ``scale_range=(1, 1)`` gives
    permutations (and signs) only. Drawn on the host (``generator`` is a CPU generator); the
    action lives on the graph's device.
    """
    device = graph.edge_index.device
    if device.type != "cpu":
        # a copy: PyG's .cpu() moves the graph itself
        return sample_action(copy.copy(graph).cpu(), generator, scale_range).to(device)
    lo, hi = scale_range
    if not (0 < lo <= hi):
        raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
    N = graph.num_nodes
    batch = batch_vector(graph)
    idx = torch.arange(N)
    perm = idx.clone()
    pc = graph.perm_class
    valid = pc >= 0
    if bool(valid.any()):
        nodes = idx[valid]
        cls = _compact(batch[valid], pc[valid])
        seg = _compact(batch[valid], pc[valid], graph.layer[valid])
        start = torch.full((int(seg.max()) + 1,), N, dtype=torch.long)
        start = start.scatter_reduce(0, seg, nodes, reduce="amin")
        k = nodes - start[seg]
        m = torch.zeros(int(cls.max()) + 1, dtype=torch.long).scatter_reduce(
            0, cls, k + 1, reduce="amax")
        pi = _random_perms(m, generator)
        perm[valid] = nodes - k + pi[cls, k]

    g = graph.group
    u = torch.rand(N, generator=generator, dtype=torch.float64)
    s = torch.rand(N, generator=generator, dtype=torch.float64)
    mag = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    sign = torch.where(s < 0.5, -1.0, 1.0).double()
    q = torch.ones(N, dtype=torch.float64)
    q = torch.where(g == GROUP_ID["scale"], mag, q)
    q = torch.where(g == GROUP_ID["sign"], sign, q)
    q = torch.where(g == GROUP_ID["linear"], mag * sign, q)
    tie = graph.tie
    tied = tie >= 0
    if bool(tied.any()):
        t = _compact(batch[tied], tie[tied])
        rep = torch.full((int(t.max()) + 1,), N, dtype=torch.long).scatter_reduce(
            0, t, idx[tied], reduce="amin")
        q[tied] = q[rep[t]]
    pairs = _inverse_pairs(graph, batch)
    if len(pairs):   # an attention's keys take the reciprocals of their queries' factors
        q[pairs[:, 1]] = 1.0 / q[pairs[:, 0]]
    return Action(_move_blocks(graph, batch, perm, generator), q)


def _random_perms(counts: torch.Tensor, generator) -> torch.Tensor:
    """(K, max(counts)) long: row i a uniformly random permutation of ``0..counts[i]-1`` (then
    the padding positions, in order)."""
    u = torch.rand(len(counts), int(counts.max()), generator=generator, dtype=torch.float64)
    u[torch.arange(u.shape[1])[None, :] >= counts[:, None]] = math.inf
    return torch.argsort(u, dim=1, stable=True)


def _move_blocks(graph, batch: torch.Tensor, perm: torch.Tensor, generator) -> torch.Tensor:
    """``perm`` followed by a uniformly random move of whole blocks (``Layout.block_node``: an
    attention's heads, a GroupNorm's groups): per network and block-move id one permutation
    ``sigma`` of the block indices, the same for every node set of that id; a node at position
    ``b D + r`` of its node set (after ``perm``, which keeps it in block ``b``) goes to
    ``sigma(b) D + r``. Drawn after the other permutations and factors are, so that graphs
    without blocks draw the same actions as before blocks existed."""
    from .graph import archs_of
    from .layout import layout
    if getattr(graph, "arch", None) is None:
        return perm
    archs = archs_of(graph)
    counts = torch.bincount(batch, minlength=len(archs))
    starts = torch.cumsum(counts, 0) - counts
    node, start, size, bid, n_blocks = [], [], [], [], []
    n_ids = 0
    for i, a in enumerate(archs):
        lay = layout(a)
        if not len(lay.block_node):
            continue
        off = int(starts[i])
        node.append(lay.block_node + off)
        start.append(lay.block_start + off)
        size.append(lay.block_size)
        bid.append(lay.block_id + n_ids)
        n_blocks.append(lay.block_count)
        n_ids += len(lay.block_count)
    if not node:
        return perm
    node, start, size, bid = (torch.cat(t) for t in (node, start, size, bid))
    sigma = _random_perms(torch.cat(n_blocks), generator)
    new = perm[node] - start
    perm = perm.clone()
    perm[node] = start + sigma[bid, new // size] * size + new % size
    return perm


def _inverse_pairs(graph, batch: torch.Tensor) -> torch.Tensor:
    """(P, 2) global node ids of the pairs with reciprocal factors (``Layout.inverse_pairs``
    of each network's ``ArchSpec``, offset by the network's first node)."""
    from .graph import archs_of
    from .layout import layout
    if getattr(graph, "arch", None) is None:
        return torch.zeros(0, 2, dtype=torch.long)
    archs = archs_of(graph)
    counts = torch.bincount(batch, minlength=len(archs))
    starts = torch.cumsum(counts, 0) - counts
    out = [layout(a).inverse_pairs + int(starts[i]) for i, a in enumerate(archs)
           if len(layout(a).inverse_pairs)]
    return torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.long)
