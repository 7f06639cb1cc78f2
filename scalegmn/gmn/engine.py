"""The engine interface: how ScaleGMN's equations run on a batch.

The layers (``layers.py``) hold only the equations; an engine executes the few operations they
are written in. Two engines implement it with one result (float64 tests compare them):
``SparseEngine`` (gather/scatter over ``edge_index``, any batch) and ``DenseEngine`` (one
architecture: an op's edges are a ``(B, out, in, c)`` view, gathers are broadcasts). An engine
decides by itself whether it evaluates eagerly, chunk by chunk under activation checkpointing
(memory-lean), or only on the edges into some nodes (``toward``): the layers never ask.

Shapes: node tensors (N, c) and edge tensors (E, c) in the batch's order; ``side``/``to`` name
an edge's end, ``"src"`` (j of ``j -> i``) or ``"dst"`` (i).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Mapped:
    """Edge values ``fn(values)`` not evaluated yet: the engine applies ``fn`` where it evaluates
    the edges (inside a recomputed chunk, or on the edges it keeps)."""
    values: torch.Tensor
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self) -> torch.Tensor:
        return self.fn(self.values)


EdgeValues = Union[torch.Tensor, Mapped]


def evaluated(ev: EdgeValues) -> torch.Tensor:
    """The tensor of edge values ``ev`` (applying a pending map)."""
    return ev() if isinstance(ev, Mapped) else ev


def fused_linear(x: torch.Tensor, maps) -> tuple:
    """``tuple(m(x) for m in maps)`` for bias-free ``nn.Linear`` maps, with one matmul."""
    if len(maps) == 1:
        return (maps[0](x),)
    weights = [m.weight for m in maps]
    return tuple(F.linear(x, torch.cat(weights)).split([w.shape[0] for w in weights], dim=-1))


class Partners:
    """The ``partner`` and ``head_scores`` operations of both engines, from host index tensors
    (kept on ``device``): ``partner`` (N,) each node's inverse partner or -1; ``heads``
    ``(q, k, head, v, v_head)``: the query/key node pairs of every attention head with their
    head id, and the value nodes with theirs (``plan.head_index``)."""

    def __init__(self, partner: torch.Tensor | None, num_nodes: int, device=None, heads=None):
        if partner is None:
            partner = torch.full((num_nodes,), -1, dtype=torch.long)
        self.any = bool((partner >= 0).any())
        self.paired = (partner >= 0).unsqueeze(1).to(device)
        self.index = partner.clamp(min=0).to(device)
        self.heads = None
        self.is_value = torch.zeros(num_nodes, 1, dtype=torch.bool)
        if heads is not None and len(heads[0]):
            self.n_heads = int(heads[2].max()) + 1
            self.heads = tuple(t.to(device) for t in heads)
            self.is_value[heads[3]] = True
        self.is_value = self.is_value.to(device)

    def __call__(self, x: torch.Tensor) -> tuple:
        if not self.any:
            return x.new_zeros(x.shape), self.paired
        return x.index_select(0, self.index) * self.paired.to(x.dtype), self.paired

    def head_scores(self, x: torch.Tensor) -> tuple:
        if self.heads is None:
            return x.new_zeros(x.shape), self.is_value
        q, k, head, v, v_head = self.heads
        per_head = x.new_zeros(self.n_heads, x.shape[1]).index_add(
            0, head, x.index_select(0, q) * x.index_select(0, k))
        return (x.new_zeros(x.shape).index_add(0, v, per_head.index_select(0, v_head)),
                self.is_value)


class Engine(Protocol):
    """The operations a ScaleGMN layer is written in (see the module doc)."""

    def node_map(self, fn: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        """``fn[g(i)](x_i)`` for every node i, by the node's group g(i): (N, c) -> (N, c')."""

    def edge_map(self, fn: nn.ModuleDict, z: torch.Tensor, by: str) -> torch.Tensor:
        """``fn[g](z_ij)`` for every edge, by the group of its ``by`` end: (E, c) -> (E, c')."""

    def gather(self, ev: torch.Tensor, nv: torch.Tensor, side: str) -> torch.Tensor:
        """``ev_ij * nv[side of ij]`` per edge: (E, c), (N, c) -> (E, c)."""

    def gather_cat(self, ev: torch.Tensor, nv: torch.Tensor, side: str) -> torch.Tensor:
        """``[ev_ij; nv[side of ij]]`` per edge: (E, c), (N, c') -> (E, c + c')."""

    def aggregate(self, m: torch.Tensor, to: str) -> torch.Tensor:
        """``sum over the edges of each node's `to` end``: (E, c) -> (N, c)."""

    def edge_linear(self, e: torch.Tensor, *maps: nn.Linear) -> tuple:
        """``(m(e) for m in maps)`` (bias-free linear maps of the edge states), as tensors or as
        ``Mapped`` values the engine evaluates later (where it evaluates the edges)."""

    def message(self, fn: nn.ModuleDict, ev: EdgeValues, nv: torch.Tensor, side: str, by: str,
                to: str) -> torch.Tensor:
        """``aggregate(edge_map(fn, gather(ev, nv, side), by), to)``, fused: (N, c)."""

    def edge_gate(self, fn: Callable, g: EdgeValues, a: torch.Tensor,
                  c: torch.Tensor) -> torch.Tensor:
        """``g_ij * fn(a_j + c_i)`` per edge ``j -> i``: (E, c)."""

    def partner(self, x: torch.Tensor) -> tuple:
        """``(x at each node's inverse partner, paired)``: (N, c) -> (N, c), (N, 1) bool. The
        partners are the node pairs whose factors are reciprocal (an attention's query and key
        neurons, ``converters.layout(arch).inverse_pairs``), in both directions; rows of
        unpaired nodes are 0."""

    def head_scores(self, x: torch.Tensor) -> tuple:
        """``(s, is_value)``: at every value neuron of an attention head, ``s = sum x_q * x_k``
        over the head's query and key neurons at one position, 0 at other nodes; (N, c) ->
        (N, c), (N, 1) bool. With ``x``
        transforming by each neuron's factor, the products are invariant (reciprocal factors, or
        signs when queries and keys are one node set)."""

    def toward(self, nodes: torch.Tensor) -> "Engine":
        """This engine with ``message`` evaluated only on the edges whose receiving end is one
        of ``nodes`` ((N,) bool, on the host); sums onto other nodes are 0."""

    def run_layer(self, layer: Callable, *states):
        """``layer(self, *states)``, under activation checkpointing when the engine is
        memory-lean and does not chunk by itself."""
