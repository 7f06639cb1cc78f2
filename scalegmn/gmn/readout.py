"""What ScaleGMN's final states become: an invariant prediction (``Readout``) or an edit of the
input networks (``EditHead``)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch_geometric.utils import scatter

from converters.graph import archs_of, batch_vector, pad_shape
from converters.groups import EDGE_TYPES, ROLES, STRUCTURAL_EDGE_TYPES
from converters.layout import kernel_slots

from ..config import ScaleGMNConfig
from ..edits import edit_output
from ..nn import MLP, GroupDispatch, ScaleEq, ScaleInv
from ..spec import SpecInfo, feature_mask
from .engine import Engine
from .layers import EdgeUpdate

#: edge types holding a structural constant 1 (residual, state): never edited
_STRUCTURAL = [EDGE_TYPES.index(t) for t in STRUCTURAL_EDGE_TYPES]


def io_states(batch, h: torch.Tensor, info: SpecInfo) -> tuple:
    """``(u_in, u_out)``: each network's input and output neuron states in I/O order,
    (B, n_in * d) and (B, n_out * d) (zeros where a network has fewer), invariant (q = 1)."""
    bv = batch_vector(batch)
    B, d = len(archs_of(batch)), h.shape[-1]
    u = []
    for role, n in (("input", info.n_in), ("output", info.n_out)):
        # row bv * n + io_index of a (B * n + 1, d) buffer; other nodes go to the last row
        sel = batch.role == ROLES.index(role)
        pos = torch.where(sel, bv * n + batch.io_index.clamp_min(0), B * n)
        buf = h.new_zeros(B * n + 1, d).index_add(0, pos, h)
        u.append(buf[:-1].reshape(B, n * d))
    return tuple(u)


class Readout(nn.Module):
    """Invariant readout: (B, out_dim).

    ``last_layer``: ``head([u_out; u_in])`` of the I/O neuron states (invariant: q = 1 there).
    ``full_graph``: also ``sum_i read_mlp(ScaleInv_g(i)(h_i))`` over hidden neurons."""

    def __init__(self, groups, cfg: ScaleGMNConfig, info: SpecInfo):
        super().__init__()
        self.kind, self.info = cfg.readout, info
        d = cfg.hidden
        io = (info.n_in + info.n_out) * d
        if cfg.readout == "full_graph":
            self.read_inv = GroupDispatch(groups, lambda gr: ScaleInv(
                gr, d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm))
            self.read_mlp = MLP(d, d, d, cfg.layer_norm, cfg.dropout)
            self.head = MLP(d + io, d, cfg.out_dim, cfg.layer_norm, cfg.dropout)
        else:
            self.head = MLP(io, d, cfg.out_dim, cfg.layer_norm, cfg.dropout)

    def extra_repr(self) -> str:
        return f"readout={self.kind}"

    @property
    def reads_io_only(self) -> bool:
        return self.kind == "last_layer"

    def forward(self, batch, eng: Engine, h: torch.Tensor) -> torch.Tensor:
        u_in, u_out = io_states(batch, h, self.info)
        if self.kind == "last_layer":
            return self.head(torch.cat([u_out, u_in], dim=-1))
        r = self.read_mlp(eng.node_map(self.read_inv, h))
        hidden = (batch.role == ROLES.index("hidden")).to(r.dtype)[:, None]
        s = scatter(r * hidden, batch_vector(batch), dim=0, dim_size=u_in.shape[0], reduce="sum")
        return self.head(torch.cat([s, u_in, u_out], dim=-1))


class EditHead(nn.Module):
    """Equivariant output: the input networks edited, ``x + beta_l u^x_l * delta_x`` and
    ``W + alpha_l u^W_l * delta_W`` per node set l (units ``u``: ``unit_from``), with
    ``delta_x = NODE_g(h)`` (by q_i) and ``delta_W = EDGE(h, e)`` (by q_i / q_j), zero on
    padding, inputs and residual edges."""

    def __init__(self, groups, cfg: ScaleGMNConfig, info: SpecInfo, n_x: int):
        super().__init__()
        self.info, d = info, cfg.hidden
        self.node_head = GroupDispatch(groups, lambda gr: ScaleEq(
            d, n_x, gr, d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm, fused=cfg.execution.fused))
        self.edge_head = EdgeUpdate(groups, d, info.fe, cfg)
        self.alpha = nn.Parameter(torch.full((info.n_layers,), float(cfg.edit_init)))
        self.beta = nn.Parameter(torch.full((info.n_layers,), float(cfg.edit_init)))
        # per node set units of the edits (``unit_from``): the step is ``alpha_l * w_unit_l *
        # delta_W``, so that alpha (trained by Adam, which moves it by about lr per step) acts on
        # the weights' own scale; 1 unless set from example data (``data_scale``)
        self.register_buffer("w_unit", torch.ones(info.n_layers))
        self.register_buffer("x_unit", torch.ones(info.n_layers))
        self._register_load_state_dict_pre_hook(self._units_of_old_checkpoints)

    @staticmethod
    def _units_of_old_checkpoints(state_dict, prefix, *args):
        """Checkpoints saved before the units existed had none (units of 1)."""
        alpha = state_dict.get(prefix + "alpha")
        for key in ("w_unit", "x_unit"):
            if alpha is not None and prefix + key not in state_dict:
                state_dict[prefix + key] = torch.ones_like(alpha)

    @torch.no_grad()
    def unit_from(self, batch, out) -> None:
        """Set ``w_unit_l = median |W| / median |delta_W|`` and ``x_unit_l`` likewise for the
        biases, per node set ``l``, from an example ``batch`` and the model's raw edit ``out`` of
        it at initialisation: the first steps then change each layer by about ``alpha`` of its
        own magnitude, whatever the scale of the head's raw output. A constant per node set:
        equivariant."""
        dst_layer = batch.layer[batch.edge_index[1]]
        mask = batch.edge_mask.bool() if batch.edge_mask.dtype != torch.bool else batch.edge_mask
        for k in range(self.info.n_layers):
            edges = dst_layer == k
            nodes = batch.layer == k
            for vals, delta, unit in (
                    (batch.edge_attr[edges][mask[edges]], out.delta_edge_attr[edges][mask[edges]],
                     self.w_unit),
                    (batch.x[nodes, 0], out.delta_x[nodes, 0], self.x_unit)):
                v, d = vals[vals != 0].abs(), delta[delta != 0].abs()
                if v.numel() and d.numel():
                    unit[k] = float(v.double().median() / d.double().median())

    def forward(self, batch, eng: Engine, h: torch.Tensor, e: torch.Tensor, neuron_cols):
        dtype = h.dtype
        dx = eng.node_map(self.node_head, h)
        dw = self.edge_head(eng, h, e)
        fm = torch.cat([feature_mask(a) for a in archs_of(batch)]).to(h.device, dtype)
        delta_x = h.new_zeros(batch.x.shape[0], batch.x.shape[1])
        cols = [c for c in neuron_cols if c < batch.x.shape[1]]
        delta_x[:, cols] = dx[:, :len(cols)] * fm[:, cols]
        fe = batch.edge_attr.shape[1]
        have, want = pad_shape(batch), tuple(self.info.kernel_shape)
        if have != want:
            slots = kernel_slots(have, want) if want else torch.zeros(1, dtype=torch.long)
            dw = dw[:, slots.to(dw.device)]
        fixed = torch.isin(batch.edge_type,
                           torch.tensor(_STRUCTURAL, device=batch.edge_type.device))
        editable = batch.edge_mask.to(dtype) * (~fixed).to(dtype)[:, None]
        delta_w = dw[:, :fe] * editable
        dst_layer = batch.layer[batch.edge_index[1]]
        return edit_output(batch, delta_x, delta_w, (self.beta * self.x_unit)[batch.layer],
                           (self.alpha * self.w_unit)[dst_layer])
