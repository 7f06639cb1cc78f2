"""The equations of one ScaleGMN / ScaleGMN-B iteration, written against the ``Engine``
interface (``engine.py``); how they are executed (sparse or dense, eager, chunked or restricted)
is the engine's business.

States: ``h`` (N, d) per node, ``e`` (E, d) per edge ``j -> i``, ``eb`` (E, d) per backward edge
(same order, the edge seen from ``i``). Under an action with factors q (one per neuron, 1 on
I/O neurons): ``h_i -> q_i h_i``, ``e_ij -> (q_i / q_j) e_ij``, ``eb_ij -> (q_j / q_i) eb_ij``.
``MSG``, ``UPD`` and the edge gates are ``ScaleEq``/``ScaleInv`` blocks chosen by the group of
the node they act for, so every equation below transforms as its left-hand side says
(docs/methods.md section 2).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ScaleGMNConfig
from ..nn import MLP, GroupDispatch, ScaleEq, ScaleInv, gate_near_one, norm_preserving
from .engine import EdgeValues, Engine


class EdgeUpdate(nn.Module):
    """``e_ij' = (D e_ij) * chi([inv(h_j); inv(h_i)])``: transforms like ``e_ij``.

    ``inv`` is each endpoint's own ``ScaleInv``; ``chi``'s first linear layer is applied per node
    and summed per edge (the map of the concatenation, without materialising it)."""

    def __init__(self, groups, d: int, d_out: int, cfg: ScaleGMNConfig):
        super().__init__()
        self.inv = GroupDispatch(groups, lambda g: ScaleInv(g, d, cfg.sign_inv, cfg.scale_inv,
                                                            cfg.layer_norm))
        self.D = nn.Linear(d, d_out, bias=False)
        self.chi = MLP(2 * d, d, d_out, cfg.layer_norm, cfg.dropout)
        gate_near_one(self.chi)
        norm_preserving(self.D)

    def forward(self, eng: Engine, h: torch.Tensor, e: torch.Tensor, reverse: bool = False,
                De: EdgeValues | None = None) -> torch.Tensor:
        """(E, d_out). ``De``: ``D e`` when the caller has it (``eng.edge_linear``);
        ``reverse``: the gate reads ``[inv(h_i); inv(h_j)]`` (for backward edges)."""
        if De is None:
            (De,) = eng.edge_linear(e, self.D)
        k = eng.node_map(self.inv, h)
        W, b = self.chi.lin1.weight, self.chi.lin1.bias
        d = k.shape[-1]
        a, c = F.linear(k, torch.cat([W[:, :d], W[:, d:]])).split(W.shape[0], dim=-1)
        a = a + b
        return (eng.edge_gate(self.chi.from_hidden, De, c, a) if reverse else
                eng.edge_gate(self.chi.from_hidden, De, a, c))


class PairMessage(nn.Module):
    """The messages of attention heads, whose query and key neurons take reciprocal factors
    (``Q s, K / s``; an embedding and its tied head likewise): for a query or key neuron ``i``
    with partner ``k(i)``, and for a value neuron ``v`` of head ``a``,

        m_i^pair = (C h_i) * psi(h_i * h_k(i)),      m_v^head = (E h_v) * phi(sum_{d in a} h_qd * h_kd).

    ``h_i * h_k(i)`` transforms by ``s * (1/s) = 1`` (sign included): an invariant of the pair,
    which changes by ``s^2`` when both are scaled alike, so the model sees what the per-neuron
    functions cannot (``Q s, K s`` multiplies the scores by ``s^2``). The head sum is invariant
    too (permutations inside a head move queries and keys together), and it brings the heads'
    queries and keys to their values: query and key neurons have no outgoing edges, so without it
    a forward model reading only the output neurons never sees them. Both terms transform by the
    receiving neuron's factor; 0 on other nodes. (N, d)."""

    def __init__(self, d: int, cfg: ScaleGMNConfig):
        super().__init__()
        self.C, self.E = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.psi = MLP(d, d, d, cfg.layer_norm, cfg.dropout)
        self.phi = MLP(d, d, d, cfg.layer_norm, cfg.dropout)
        for lin in (self.C, self.E):
            norm_preserving(lin)
        with torch.no_grad():   # small terms at first: the model starts near the pair-blind one
            for mlp in (self.psi, self.phi):
                mlp.lin2.weight.mul_(0.1)
                mlp.lin2.bias.zero_()

    def forward(self, eng: Engine, h: torch.Tensor) -> torch.Tensor:
        h_k, paired = eng.partner(h)
        scores, is_value = eng.head_scores(h)
        return (self.C(h) * self.psi(h * h_k) * paired.to(h.dtype)
                + self.E(h) * self.phi(scores) * is_value.to(h.dtype))


class ScaleGMNLayer(nn.Module):
    """One message-passing iteration (``bidir``: ScaleGMN-B's, with backward messages).

    Its parts, by the names the equations use (a documented interface: ``replace`` swaps one,
    e.g. for the simulation check):

    - ``A_e``, ``A_v``: linear maps of edge and node states entering the forward message;
    - ``msg``: ``MSG_g``, one ``ScaleEq`` per group (``message``);
    - ``upd``: ``UPD_g``, one ``ScaleEq`` per group (``update``);
    - ``edge``: the ``EdgeUpdate`` of forward edges (``None`` where no later step reads them);
    - ScaleGMN-B, reciprocal backward edges: ``B_e``, ``B_v``, ``msg_bw`` (``MSG^bw_g``),
      ``edge_bw`` (the ``EdgeUpdate`` of backward edges);
    - ScaleGMN-B, division-free: ``B_e``, ``B_v``, ``B_h``, ``phi_bw``;
    - ``pair``: the ``PairMessage`` of inverse pairs (``None`` unless the architectures have them).
    """

    def __init__(self, groups, cfg: ScaleGMNConfig, bidir: bool, update_edges: bool,
                 pairs: bool = False):
        super().__init__()
        d = cfg.hidden
        eq = lambda d_in, d_out: (lambda g: ScaleEq(d_in, d_out, g, d, cfg.sign_inv,
                                                     cfg.scale_inv, cfg.layer_norm, cfg.dropout,
                                                     fused=cfg.execution.fused))
        self.bidir, self.mode = bidir, cfg.backward_edges
        self.A_v, self.A_e = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.msg = GroupDispatch(groups, eq(d, d))
        self.upd = GroupDispatch(groups, eq((3 if bidir else 2) * d, d))
        self.edge = EdgeUpdate(groups, d, d, cfg) if update_edges else None
        if bidir:
            self.B_v, self.B_e = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            if self.mode == "division_free":
                self.B_h = nn.Linear(d, d, bias=False)
                self.phi_bw = GroupDispatch(groups, lambda g: nn.Sequential(
                    ScaleInv(g, 2 * d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm),
                    MLP(2 * d, d, d, cfg.layer_norm, cfg.dropout)))
            else:
                self.msg_bw = GroupDispatch(groups, eq(d, d))
                self.edge_bw = EdgeUpdate(groups, d, d, cfg) if update_edges else None
        self.pair = PairMessage(d, cfg) if pairs else None
        self.skip = nn.Linear(d, d, bias=False) if cfg.residual else None
        self.drop = nn.Dropout(cfg.dropout)
        for lin in (self.A_v, self.A_e) + ((self.B_v, self.B_e) if bidir else ()):
            norm_preserving(lin)

    def extra_repr(self) -> str:
        kind = f"bidirectional, backward_edges={self.mode}" if self.bidir else "forward"
        return (f"{kind}, groups={list(self.msg.keys())}, update_edges={self.edge is not None}"
                + (", pair messages" if self.pair is not None else ""))

    # -- the equations --------------------------------------------------------------------------
    def message(self, eng: Engine, Ae: EdgeValues, h: torch.Tensor) -> torch.Tensor:
        """The ScaleGMN message function, summed: ``m_i = sum_j MSG_g(i)((A_e e_ij) *
        (A_v h_j))`` over the edges ``j -> i`` (``+ m_i^pair``, ``PairMessage``, on graphs with
        inverse pairs). Transforms by ``q_i``. (N, d)."""
        m = eng.message(self.msg, Ae, self.A_v(h), "src", "dst", "dst")
        return m if self.pair is None else m + self.pair(eng, h)

    def backward_message(self, eng: Engine, h: torch.Tensor, e: torch.Tensor,
                         eb: torch.Tensor | None) -> torch.Tensor:
        """ScaleGMN-B's message from the nodes a neuron feeds, by ``q_i``. (N, d).

        Reciprocal backward edges: ``m_i^bw = sum_k MSG^bw_g(i)((B_e eb_ik) * (B_v h_k))`` over
        the edges ``i -> k``. Division-free: ``m_i^bw = (B_h h_i) * sum_k phi_g(k)([(B_e e_ki)
        * (B_v h_i); h_k])``, whose terms transform by ``q_k`` inside an invariant of ``k``."""
        if self.mode == "division_free":
            z = eng.gather(self.B_e(e), self.B_v(h), "src")
            u = eng.gather_cat(z, h, "dst")
            return self.B_h(h) * eng.aggregate(eng.edge_map(self.phi_bw, u, "dst"), "src")
        (Beb,) = eng.edge_linear(eb, self.B_e)
        return eng.message(self.msg_bw, Beb, self.B_v(h), "dst", "src", "src")

    def update(self, eng: Engine, h: torch.Tensor, messages: list) -> torch.Tensor:
        """``h_i' = UPD_g(i)([h_i; m_i; (m_i^bw)])`` (+ ``skip(h_i)``), by ``q_i``. (N, d)."""
        h_new = eng.node_map(self.upd, torch.cat([h] + messages, dim=-1))
        if self.skip is not None:
            h_new = h_new + self.skip(h)
        return self.drop(h_new)

    def forward(self, eng: Engine, h: torch.Tensor, e: torch.Tensor, eb: torch.Tensor | None):
        """``(h', e', eb')``; edge states stay as they are where no later step reads them."""
        Ae, *De = eng.edge_linear(e, self.A_e, *([self.edge.D] if self.edge else []))
        messages = [self.message(eng, Ae, h)]
        if self.bidir:
            messages.append(self.backward_message(eng, h, e, eb))
        h_new = self.update(eng, h, messages)
        if self.edge is not None:
            e = self.edge(eng, h, e, De=De[0])
            if self.bidir and self.mode != "division_free" and self.edge_bw is not None:
                eb = self.edge_bw(eng, h, eb)
        return h_new, e, eb

    # -- the documented way to swap a part ---------------------------------------------------
    PARTS = ("A_e", "A_v", "msg", "upd", "edge", "B_e", "B_v", "B_h", "msg_bw", "edge_bw",
             "phi_bw", "pair")

    def replace(self, part: str, module: nn.Module, group: str | None = None) -> None:
        """Set ``part`` (one of ``PARTS``), or its function for ``group`` when the part is
        per group (``msg``, ``upd``, ``msg_bw``, ``phi_bw``), to ``module``. The replacement
        must keep the part's signature (shapes); it is not checked for symmetry."""
        if part not in self.PARTS or not hasattr(self, part):
            have = [p for p in self.PARTS if getattr(self, p, None) is not None]
            raise ValueError(f"this layer has no part {part!r}; its parts: {have}")
        target = getattr(self, part)
        if isinstance(target, GroupDispatch):
            if group not in target:
                raise ValueError(f"part {part!r} has functions for groups {sorted(target)}, "
                                 f"not {group!r}")
            target[group] = module
        elif group is not None:
            raise ValueError(f"part {part!r} is not per group")
        else:
            setattr(self, part, module)
