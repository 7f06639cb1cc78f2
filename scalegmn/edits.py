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
    out.edge_attr = batch.edge_attr.to(delta_w.dtype) + _per_row(edge_scale) * delta_w
    out.delta_x, out.delta_edge_attr = delta_x, delta_w
    return out


def is_edit(out) -> bool:
    """Whether a metanetwork's output is an edit (``edit_output``) rather than a prediction."""
    return not isinstance(out, torch.Tensor) and hasattr(out, "delta_edge_attr")
