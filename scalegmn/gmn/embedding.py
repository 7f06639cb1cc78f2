"""ScaleGMN's input embedding: a batch of parameter graphs -> initial states ``h``, ``e``,
``eb`` that transform like neurons and (backward) edges.

- ``h_i = embed_x(s_l x_i) * (1 + embed_inv(invariant features)) * pe_layer[l] + pe_io``: bias
  (and BatchNorm mean) columns enter linearly, so ``h_i -> q_i h_i``; the positional embeddings
  of I/O neurons (q = 1) are added, hidden ones multiply per node set.
- ``e_ij = embed_e(s_l W_ij) * pe_edge[type]``: ``e_ij -> (q_i / q_j) e_ij``.
- ``eb_ij = embed_eb(s^b_l B_ij) * pe_edge[type]`` with ``B = backward_values(W)`` (ScaleGMN-B):
  ``eb_ij -> (q_j / q_i) eb_ij``.

``s_l``: per node set scales from the example data's typical magnitudes (``data_scale``), so that
every layer enters the network at O(1). See docs/methods.md section 2.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.utils import scatter

from converters.graph import archs_of, batch_vector, pad_shape
from converters.groups import EDGE_TYPES, GROUP_ID, NODE_FEATURES, ROLES
from converters.layout import kernel_slots

from ..config import ScaleGMNConfig
from ..nn import MLP
from ..spec import SpecInfo
from .plan import node_groups


def reciprocal_bound(dtype: torch.dtype) -> float:
    """The largest ``|1/W|`` a backward edge takes before it counts as an exact zero:
    ``finfo(dtype).max ** (1/4)`` (1.4e9 in float32/bfloat16, 1.2e77 in float64), so that
    products of a few such values in the backward messages stay finite."""
    return float(torch.finfo(dtype).max) ** 0.25


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a table of a few rows (T, d) and many indices (M,) -> (M, d), as a
    one-hot product: the same values, and a backward pass that is one (T x M) @ (M x d) matmul
    instead of an accumulating ``index_put`` of M rows into T (serial on the CPU: 5 % of a
    training step at the MNIST-INR workload)."""
    return F.one_hot(index, table.shape[0]).to(table.dtype) @ table


def to_kernel_grid(t: torch.Tensor, batch, info: SpecInfo) -> torch.Tensor:
    """(E, Fe_batch) -> (E, Fe_model): kernels re-centred in the model's kernel grid."""
    have, want = pad_shape(batch), tuple(info.kernel_shape)
    if have == want:
        return t
    if len(have) and len(want) and (len(have) != len(want) or
                                    any(h > w for h, w in zip(have, want))):
        raise ValueError(f"batch kernels {have} do not fit the model's {want}; build the "
                         f"model with a spec that includes the largest kernel")
    slots = kernel_slots(have, want) if want else torch.zeros(1, dtype=torch.long)
    out = t.new_zeros(t.shape[0], info.fe)
    out[:, slots.to(t.device)] = t
    return out


def standardise_per_layer(batch, x, ea, mask, n_layers: int):
    """GMN's input normalisation: standardise each node set of each network (permutation
    invariant, not scale equivariant). (N, Fx), (E, Fe) -> the same shapes."""
    bv = batch_vector(batch)
    L = n_layers
    n = len(archs_of(batch)) * L
    key_e = bv[batch.edge_index[1]] * L + batch.layer[batch.edge_index[1]]
    m = mask.to(ea.dtype)
    cnt = scatter(m.sum(1), key_e, dim=0, dim_size=n, reduce="sum").clamp_min(1)
    mean = scatter((ea * m).sum(1), key_e, dim=0, dim_size=n, reduce="sum") / cnt
    var = scatter((((ea - mean[key_e, None]) * m) ** 2).sum(1), key_e, dim=0, dim_size=n,
                  reduce="sum") / cnt
    ea = (ea - mean[key_e, None]) / torch.sqrt(var[key_e, None] + 1e-8) * m
    key_n = bv * L + batch.layer
    mean_x = scatter(x, key_n, dim=0, dim_size=n, reduce="mean")
    var_x = scatter((x - mean_x[key_n]) ** 2, key_n, dim=0, dim_size=n, reduce="mean")
    x = (x - mean_x[key_n]) / torch.sqrt(var_x[key_n] + 1e-8)
    return x, ea


class InputEmbedding(nn.Module):
    """Batch -> ``(h, e, eb)`` (see the module doc); ``eb`` is ``None`` unless ScaleGMN-B with
    backward edges that carry values."""

    def __init__(self, cfg: ScaleGMNConfig, info: SpecInfo, bidirectional: bool,
                 perm_only: bool, spec=None):
        super().__init__()
        self.cfg, self.info, self.perm_only = cfg, info, perm_only
        self.input_norm = perm_only if cfg.input_norm is None else cfg.input_norm
        d = cfg.hidden
        kinds = [NODE_FEATURES[n] for n in info.feature_names]
        self.neuron_cols = [i for i, k in enumerate(kinds) if k == "neuron"]
        self.inv_cols = [i for i, k in enumerate(kinds) if k == "invariant"]
        if any(k == "inverse" for k in kinds):
            raise NotImplementedError("node features of type 'inverse' are not embedded yet")
        self.embed_x = nn.Linear(len(self.neuron_cols), d, bias=False)
        self.embed_inv = MLP(len(self.inv_cols), d, d, cfg.layer_norm) if self.inv_cols else None
        self.embed_e = nn.Linear(info.fe, d, bias=False)
        self.embed_eb = (nn.Linear(info.fe, d, bias=False)
                         if bidirectional and cfg.backward_edges != "division_free" else None)
        g = torch.Generator().manual_seed(0)
        self.pe_in = nn.Parameter(torch.randn(info.n_in, d, generator=g) * 0.5)
        self.pe_out = nn.Parameter(torch.randn(info.n_out, d, generator=g) * 0.5)
        self.pe_layer = nn.Parameter(1 + 0.1 * torch.randn(info.n_layers, d, generator=g))
        # one row per edge type up to the last one the architectures use (the recurrent types
        # only when a recurrent layer is present: other models keep their parameter counts)
        self.pe_edge = nn.Parameter(1 + 0.1 * torch.randn(info.n_edge_types, d, generator=g))
        # per-layer input scales (a constant factor per node set: equivariant); set from the
        # example data's typical magnitudes when ``spec`` holds values (``data_scale``)
        self.x_scale = nn.Parameter(torch.ones(info.n_layers))
        self.e_scale = nn.Parameter(torch.ones(info.n_layers))
        self.eb_scale = nn.Parameter(torch.ones(info.n_layers))
        if cfg.data_scale and hasattr(spec, "edge_attr"):
            self.scale_from(spec)
        if not cfg.io_embeddings:
            self.pe_in.requires_grad_(False).zero_()
            self.pe_out.requires_grad_(False).zero_()
        if not cfg.layer_embeddings:
            self.pe_layer.requires_grad_(False).fill_(1.0)
        if not cfg.edge_type_embeddings:
            self.pe_edge.requires_grad_(False).fill_(1.0)

    def extra_repr(self) -> str:
        i = self.info
        return (f"n_in={i.n_in}, n_out={i.n_out}, node_sets={i.n_layers}, kernel={i.kernel_shape}, "
                f"input_norm={self.input_norm}")

    @torch.no_grad()
    def scale_from(self, batch) -> None:
        """Set ``x_scale``, ``e_scale``, ``eb_scale`` to 1 / median |value| per node set over
        ``batch`` (weights by the node set they enter, biases by their own; backward-edge values,
        from ``backward_values``, likewise)."""
        dst = batch.edge_index[1]
        ea, mask = batch.edge_attr.double(), batch.edge_mask
        bw = self.backward_values(batch, ea, mask)
        for k in range(self.info.n_layers):
            edges = batch.layer[dst] == k
            for vals, scale in ((ea[edges][mask[edges]], self.e_scale),
                                (bw[edges][mask[edges]], self.eb_scale),
                                (batch.x[batch.layer == k, 0].double(), self.x_scale)):
                nz = vals[vals != 0].abs()
                if nz.numel():
                    scale[k] = 1.0 / float(nz.median())

    def backward_values(self, batch, ea: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(E, Fe) values that ScaleGMN-B's backward edges ``i -> j`` are embedded from: the one
        rule for the embedding and for the data scaling (``eb_scale``).

        ``backward_edges="reciprocal"``: ``1/W`` on edges with a ``scale`` or ``linear``
        endpoint (on every edge with ``reciprocal_on_sign``), ``W`` on the others (sign and
        permutation endpoints: ``W`` already transforms as a backward edge there, since
        ``1/s = s`` for a sign). ``"forward"``: ``W`` everywhere. Both transform by
        ``q_j / q_i``. Reciprocals of padding, of exact zeros and of weights with
        ``|1/W| > reciprocal_bound(dtype)`` are 0: without that bound a float32 weight below
        about 1e-21 made the backward messages overflow (NaN/inf). The bound is far outside
        the range of trained weights, and equivariance is exact for every action that keeps
        each weight on its side of it."""
        if self.cfg.backward_edges != "reciprocal":
            return ea
        src, dst = batch.edge_index
        if self.cfg.reciprocal_on_sign:
            scaling = torch.ones(src.shape[0], dtype=torch.bool, device=ea.device)
        else:
            g = node_groups(archs_of(batch), self.perm_only).to(ea.device)
            rescaled = (g == GROUP_ID["scale"]) | (g == GROUP_ID["linear"])
            scaling = rescaled[src] | rescaled[dst]
        real = mask & (ea.abs() >= 1.0 / reciprocal_bound(ea.dtype)) & scaling[:, None]
        recip = torch.where(real, 1.0 / torch.where(real, ea, torch.ones_like(ea)),
                            torch.zeros_like(ea))
        return torch.where(scaling[:, None], recip, ea)

    def forward(self, batch):
        """``h`` (N, d) transforms by q; ``e`` (E, d) by q_i/q_j; ``eb`` (E, d) by q_j/q_i."""
        dtype = self.embed_e.weight.dtype
        x = batch.x.to(dtype)
        if x.shape[1] < self.info.n_features:
            x = F.pad(x, (0, self.info.n_features - x.shape[1]))
        ea = to_kernel_grid(batch.edge_attr.to(dtype), batch, self.info)
        emask = to_kernel_grid(batch.edge_mask, batch, self.info)
        if self.input_norm:
            x, ea = standardise_per_layer(batch, x, ea, emask, self.info.n_layers)
        x = x * self.x_scale[batch.layer][:, None]
        h = self.embed_x(x[:, self.neuron_cols])
        if self.embed_inv is not None:
            h = h * (1 + self.embed_inv(x[:, self.inv_cols]))
        inp = batch.role == ROLES.index("input")
        out = batch.role == ROLES.index("output")
        io = batch.io_index.clamp_min(0)
        pe_add = (torch.where(inp[:, None], self.pe_in[io.clamp_max(self.info.n_in - 1)], 0.0)
                  + torch.where(out[:, None], self.pe_out[io.clamp_max(self.info.n_out - 1)],
                                0.0))
        pe_mul = torch.where((inp | out)[:, None], torch.ones_like(h), self.pe_layer[batch.layer])
        h = h * pe_mul + pe_add
        dst_layer = batch.layer[batch.edge_index[1]]
        pe_edge = _rows(self.pe_edge, batch.edge_type)
        e = self.embed_e(ea * self.e_scale[dst_layer][:, None]) * pe_edge
        eb = None
        if self.embed_eb is not None:
            bw = self.backward_values(batch, ea, emask)
            eb = self.embed_eb(bw * self.eb_scale[dst_layer][:, None]) * pe_edge
        return h, e, eb
