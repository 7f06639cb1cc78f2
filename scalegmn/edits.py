"""The output of an equivariant (editing) metanetwork, built in one place for every backend.

An edit is the input batch with new values and the raw deltas attached: ``x' = x + s_n delta_x``
and ``edge_attr' = edge_attr + s_e delta_edge_attr`` (``s_n``, ``s_e``: a learned scalar, or one
per node / per edge), same structure, so ``to_data_list`` and ``converters.to_module`` read it.
"""
from __future__ import annotations

import copy

import torch


def _per_row(scale: torch.Tensor) -> torch.Tensor:
    return scale[:, None] if scale.dim() == 1 else scale


def edit_output(batch, delta_x: torch.Tensor, delta_w: torch.Tensor, node_scale: torch.Tensor,
                edge_scale: torch.Tensor):
    """A copy of ``batch`` (a ``ParameterGraph`` or ``Batch``) with ``x + node_scale *
    delta_x`` (N, Fx) and ``edge_attr + edge_scale * delta_w`` (E, Fe); scales are 0-d or
    per row ((N,), (E,)). ``delta_x`` / ``delta_edge_attr`` hold the raw deltas (what the
    equivariance harness compares). Equivariant when the deltas are (per-row scales are
    invariants of the structure)."""
    out = copy.copy(batch)
    out.x = batch.x.to(delta_x.dtype) + _per_row(node_scale) * delta_x
    step = _per_row(edge_scale) * delta_w
    partner = _tie_partner(batch)
    if partner is not None:      # one tied weight, two edges: both take the mean change
        step, delta_w = (step + step[partner]) / 2, (delta_w + delta_w[partner]) / 2
    out.edge_attr = batch.edge_attr.to(delta_w.dtype) + step
    out.delta_x, out.delta_edge_attr = delta_x, delta_w
    return out


def _tie_partner(batch):
    """(E,) for each edge the other edge holding the same tied weight (``edge_tie``, ids local
    to each graph, two edges per id), itself when untied; ``None`` without the field. No host
    synchronisation (fixed-size sort), so it runs on any device. The two edges of a tie move
    together under every action (one permutation, one factor: ``q_head = 1 / q_emb`` scales
    both the same way), so the mean keeps the edit equivariant."""
    tie = getattr(batch, "edge_tie", None)
    if tie is None:
        return None
    from converters import batch_vector
    E = tie.shape[0]
    graph = batch_vector(batch)[batch.edge_index[0]]
    tied = tie >= 0
    pos = torch.arange(E, device=tie.device)
    key = torch.where(tied, graph * E + tie, (1 << 62) + pos)
    order = torch.argsort(key)                  # a tie's two edges sort next to each other,
    mate = torch.where(tied[order], pos ^ 1, pos)   # the tied edges first (pairs at 2k, 2k+1)
    partner = torch.empty_like(order)
    partner[order] = order[mate]
    return partner


def is_edit(out) -> bool:
    """Whether a metanetwork's output is an edit (``edit_output``) rather than a prediction."""
    return not isinstance(out, torch.Tensor) and hasattr(out, "delta_edge_attr")
