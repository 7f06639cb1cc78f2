"""The dense per-layer view of a batch of same-architecture networks, and running it.

For a batch of B graphs of one ``ArchSpec``, ``to_dense`` returns, per op with edges, ``W[l]`` of
shape ``(B, out, in, Fe)`` (``in`` = sources per destination: input channels, or input channels per
group for grouped convs, 1 for normalisation, 2 for residual adds) and, per node set, ``b[k]`` of
shape ``(B, n_k, Fx)``. Both are *views* of ``edge_attr`` and ``x`` (the edge order makes this a
reshape), so ``from_dense(to_dense(batch))`` is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch_geometric.data import Batch

from .archspec import ArchSpec
from .graph import ParameterGraph, _structure, archs_of, pad_shape, single_arch
from .interp import run
from .layout import kernel_slots, layout
from .ops import rule_for
from .ops.recurrent import dense_batch_dim


@dataclass
class DenseWeights:
    """Per-layer weights ``W`` (list of (B, out, in, Fe)) and node values ``b`` (list of
    (B, n, Fx)) of B networks with one architecture; ``W_mask`` (list of (out, in, Fe)) marks real
    kernel entries."""

    arch: ArchSpec
    W: list
    b: list
    W_mask: list
    kernel_shape: tuple = ()
    _params: dict = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.b[0].shape[0]

    def params(self) -> dict:
        """``{state-dict key: (B, *shape) tensor}``, cropped from the padded views."""
        lay = layout(self.arch)
        out = {}
        for b, W in zip(lay.blocks, self.W):
            if b.weight_key is None:
                continue
            slots = kernel_slots(b.kshape, self.kernel_shape)
            out[b.weight_key] = b.param_from_edges(W[..., slots], lead=1)
        xb = torch.cat(self.b, dim=1)
        for f in lay.features:
            v = xb[:, f.start:f.start + f.size, f.column]
            out[f.key] = v[:, 0] if f.scalar else (v[:, :1] if f.shared else v)
        return out


def _archs(batch):
    return single_arch(batch, "the dense view"), len(archs_of(batch))


def to_dense(batch) -> DenseWeights:
    """The dense view of a ``ParameterGraph`` or a ``Batch`` of one architecture (see module doc)."""
    arch, B = _archs(batch)
    lay = layout(arch)
    kshape = pad_shape(batch)
    fe = batch.edge_attr.shape[1]
    ea = batch.edge_attr.view(B, lay.num_edges, fe)
    xv = batch.x.view(B, lay.num_nodes, batch.x.shape[1])
    em = batch.edge_mask[:lay.num_edges]
    W, masks = [], []
    for blk in lay.blocks:
        W.append(ea[:, blk.start:blk.stop].view(B, blk.out, blk.per_dest, fe))
        masks.append(em[blk.start:blk.stop].view(blk.out, blk.per_dest, fe))
    b = [xv[:, lay.offsets[k]:lay.offsets[k + 1]] for k in range(len(arch.nodesets))]
    return DenseWeights(arch, W, b, masks, kshape)


def from_dense(dense: DenseWeights) -> Batch:
    """The ``Batch`` of graphs whose dense view is ``dense`` (values copied, structure rebuilt)."""
    arch, B = dense.arch, dense.batch_size
    lay = layout(arch)
    x = torch.cat(dense.b, dim=1)
    fe = dense.W[0].shape[-1] if dense.W else 1
    ea = (torch.cat([w.reshape(B, -1, fe) for w in dense.W], dim=1) if dense.W
          else x.new_zeros(B, 0, fe))
    graphs = []
    kshape = tuple(dense.kernel_shape)
    for i in range(B):
        st = _structure(arch)
        if kshape != tuple(arch.kernel_shape):
            st["edge_mask"] = torch.cat([m.reshape(-1, fe) for m in dense.W_mask])
        g = ParameterGraph(x=x[i].clone(), edge_attr=ea[i].clone(), num_nodes=lay.num_nodes,
                           arch=arch, **st)
        if kshape != tuple(arch.kernel_shape):
            g.pad_shape = kshape
        graphs.append(g)
    return Batch.from_data_list(graphs)


# -- batched forward --------------------------------------------------------------------------
def _batched_param_op(P, B):
    """``param_op`` for ``interp.run``: each op with parameters runs batched by its rule."""
    def op_fn(op, ins):
        return rule_for(op["op"]).batched(op, ins, P, B)
    return op_fn


def functional_forward(dense: DenseWeights, x: torch.Tensor,
                       *extra: torch.Tensor) -> torch.Tensor:
    """Run B networks at once from their dense view; differentiable in weights and inputs.

    ``x``: ``(n, *input_shape)`` shared by every network, or ``(B, n, *input_shape)``; for a
    network whose input a sequence-first recurrent layer reads, the model's own layout
    ``(T, n, F)`` or ``(B, T, n, F)`` (its output sequence may then be read one time step at a
    time only: ``converters.ops.recurrent.dense_batch_dim``).
    ``extra``: further model inputs (attention masks), passed unchanged: an ``attention`` op
    sees the B networks' rows stacked, so its mask must broadcast over them (a (T, S) mask).
    Returns ``(B, n, *output_shape)``; equal (to rounding) to running each network's module.
    """
    B = dense.batch_size
    in_rank = len(dense.arch.input["shape"])
    bdim = dense_batch_dim(dense.arch.ops)    # 1: (T, n, F), the networks stacked on axis 1
    if x.dim() == in_rank + 1:
        x = x.unsqueeze(0).expand(B, *x.shape)
    elif x.dim() != in_rank + 2 or x.shape[0] != B:
        raise ValueError(f"x must be (n, *{tuple(dense.arch.input['shape'])}) or (B={B}, n, ...),"
                         f" got {tuple(x.shape)}")
    x = x.movedim(1 + bdim, 1)
    n = x.shape[1]
    xs = x.reshape(B * n, *x.shape[2:]).movedim(0, bdim)
    y = run(dense.arch, (xs, *extra) if extra else xs, _batched_param_op(dense.params(), B))
    return y.reshape(B, n, *y.shape[1:])
