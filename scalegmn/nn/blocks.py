"""ScaleInv, ScaleEq and the per-group dispatch that lets one batch mix ReLU, tanh, GELU... nodes.

Conventions: a node state ``x`` of a neuron in group ``g`` transforms as ``x -> q x`` with
``q > 0`` (``scale``), ``q = +-1`` (``sign``), any ``q != 0`` (``linear``) or ``q = 1`` (``perm``,
``fixed``). ``ScaleInv`` maps such states to invariants; ``ScaleEq`` maps them equivariantly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from converters.groups import GROUPS



def safe_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` over the last dim, exactly 0 where ``x == 0``, with a finite gradient.

    Invariant to ``x -> q x`` for ``q > 0`` at any scale (no additive epsilon)."""
    sq = x.square().sum(-1, keepdim=True)
    pos = sq > 0
    return torch.where(pos, x / torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))),
                       torch.zeros_like(x))


def _inv_norm(x: torch.Tensor) -> torch.Tensor:
    """``1 / ||x||`` over the last dim (keepdim), exactly 0 where ``x == 0``, finite gradient:
    ``safe_normalize(x) == x * _inv_norm(x)``."""
    sq = x.square().sum(-1, keepdim=True)
    pos = sq > 0
    return torch.where(pos, torch.rsqrt(torch.where(pos, sq, torch.ones_like(sq))),
                       torch.zeros_like(sq))


class MLP(nn.Module):
    """``Linear -> [LayerNorm] -> SiLU (or ReLU) -> Dropout -> Linear``: (..., d_in) -> (..., d_out)

    No symmetry: used only on invariant inputs or on ``fixed`` nodes."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, layer_norm: bool = True,
                 dropout: float = 0.0, activation: str = "silu"):
        super().__init__()
        self.lin1 = nn.Linear(d_in, d_hidden)
        self.norm = nn.LayerNorm(d_hidden) if layer_norm else nn.Identity()
        self.act = {"silu": nn.SiLU, "relu": nn.ReLU}[activation]()
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.lin2(self.drop(self.act(self.norm(self.lin1(x)))))

    def from_hidden(self, pre: torch.Tensor) -> torch.Tensor:
        """The MLP after its first linear layer (so callers can split that layer)."""
        return self.lin2(self.drop(self.act(self.norm(pre))))


@torch.no_grad()
def gate_near_one(mlp: "MLP", spread: float = 0.1):
    """Initialise an MLP used as a multiplicative gate to output about 1."""
    mlp.lin2.weight.mul_(spread)
    mlp.lin2.bias.fill_(1.0)


@torch.no_grad()
def norm_preserving(lin: nn.Linear):
    """``N(0, 1/fan_in)`` weights: the map keeps the typical norm of its input."""
    nn.init.normal_(lin.weight, std=lin.weight.shape[1] ** -0.5)


class ScaleInv(nn.Module):
    """An invariant of a node state under its group: (..., d) -> (..., d).

    - ``scale``: ``x / ||x||`` (``safe_normalize``); mode ``"none"`` skips it (a deliberately
      broken variant, for negative controls only);
    - ``sign``: ``"symmetrize"``: rho(x) + rho(-x) (rho an MLP); ``"canonicalize"``:
      x * sign(x_r) with r = argmax |x| (a reference coordinate); ``"abs"``: |x| (invariant to more
      than the group);
    - ``linear``: the sign invariant of ``x / ||x||``;
    - ``perm`` / ``fixed``: identity.
    """

    def __init__(self, group: str, d: int, sign_mode: str = "symmetrize", scale_mode: str =
                 "normalize", layer_norm: bool = True):
        super().__init__()
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}")
        if sign_mode not in ("symmetrize", "canonicalize", "abs"):
            raise ValueError(f"sign_inv must be symmetrize, canonicalize or abs, got {sign_mode!r}")
        if scale_mode not in ("normalize", "none"):
            raise ValueError(f"scale_inv must be normalize or none, got {scale_mode!r}")
        self.group, self.sign_mode, self.scale_mode = group, sign_mode, scale_mode
        self.rho = (MLP(d, d, d, layer_norm) if group in ("sign", "linear")
                    and sign_mode == "symmetrize" else None)

    def extra_repr(self) -> str:
        return f"group={self.group}, sign={self.sign_mode}, scale={self.scale_mode}"

    def _sign(self, x):
        if self.sign_mode == "symmetrize":
            # rho(x) + rho(-x), sharing rho's linear maps between the two branches:
            # lin1(+-x) = +-W1 x + b1, and lin2(a) + lin2(c) = W2 (a + c) + 2 b2
            rho = self.rho
            pre = F.linear(x, rho.lin1.weight)
            a = rho.drop(rho.act(rho.norm(pre + rho.lin1.bias)))
            c = rho.drop(rho.act(rho.norm(rho.lin1.bias - pre)))
            return F.linear(a + c, rho.lin2.weight) + 2 * rho.lin2.bias
        if self.sign_mode == "abs":
            return x.abs()
        ref = x.gather(-1, x.abs().argmax(-1, keepdim=True))
        return x * torch.where(ref < 0, -1.0, 1.0).to(x.dtype)

    def forward(self, x):
        if self.group in ("scale", "linear") and self.scale_mode == "normalize":
            x = safe_normalize(x)
        if self.group in ("sign", "linear"):
            x = self._sign(x)
        return x


class ScaleEq(nn.Module):
    """``f(x) = Gamma(x) * phi(ScaleInv(x))``: (..., d_in) -> (..., d_out), equivariant.

    ``Gamma`` is linear without bias, so ``f(q x) = q f(x)`` for every factor the group allows.
    For ``fixed`` nodes (q = 1 always) ``f`` is a plain MLP."""

    def __init__(self, d_in: int, d_out: int, group: str, d_hidden: int, sign_mode="symmetrize",
                 scale_mode="normalize", layer_norm=True, dropout=0.0, fused: bool = True):
        super().__init__()
        self.group = group
        self.fused = fused   # False: the textbook evaluation (reference runs; same function)
        if group == "fixed":
            self.mlp = MLP(d_in, d_hidden, d_out, layer_norm, dropout)
        else:
            self.gamma = nn.Linear(d_in, d_out, bias=False)
            self.inv = ScaleInv(group, d_in, sign_mode, scale_mode, layer_norm)
            self.phi = MLP(d_in, d_hidden, d_out, layer_norm, dropout)

        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"group={self.group}, fused={self.fused}"

    def reset_parameters(self):
        """Start close to the linear map ``Gamma`` (``phi`` near 1, ``Gamma`` norm-preserving),
        so that states keep their magnitude through the layers."""
        if self.group == "fixed":
            return
        gate_near_one(self.phi)
        norm_preserving(self.gamma)

    def forward(self, x):
        if self.group == "fixed":
            return self.mlp(x)
        if self._fusable():
            return self._fused(x)
        return self.gamma(x) * self.phi(self.inv(x))

    def _fusable(self):
        if not self.fused:
            return False
        inv = self.inv
        sym = self.group in ("sign", "linear")
        return not sym or inv.sign_mode == "symmetrize"

    def _fused(self, x):
        """The same function with fewer passes over ``x`` (equal to rounding):

        - ``Gamma`` and the first linear map after the invariant share one matmul on ``x``
          (normalising commutes with a linear map without bias: ``W (x / |x|) = (W x) / |x|``);
        - ``rho.lin2`` and ``phi.lin1`` have no non-linearity between them: one matmul with the
          product weight ``W_phi1 W_rho2`` (and bias ``W_phi1 (2 b_rho2) + b_phi1``)."""
        inv, phi = self.inv, self.phi
        sym = self.group in ("sign", "linear")
        first = inv.rho.lin1.weight if sym else phi.lin1.weight
        d = self.gamma.out_features
        g, p = F.linear(x, torch.cat([self.gamma.weight, first])).split(
            [d, first.shape[0]], dim=-1)
        if self.group in ("scale", "linear") and inv.scale_mode == "normalize":
            p = p * _inv_norm(x)
        if sym:
            rho = inv.rho
            a = rho.drop(rho.act(rho.norm(p + rho.lin1.bias)))
            c = rho.drop(rho.act(rho.norm(rho.lin1.bias - p)))
            w = phi.lin1.weight @ rho.lin2.weight
            b = torch.addmv(phi.lin1.bias, phi.lin1.weight, 2 * rho.lin2.bias)
            pre = F.linear(a + c, w, b)
        else:
            pre = p + phi.lin1.bias
        return g * phi.from_hidden(pre)


class GroupDispatch(nn.ModuleDict):
    """One module per symmetry group; ``self[group](x)`` applies the group's function.

    Built for the groups a model claims; a node of another group raises a clear error."""

    def __init__(self, groups, factory: Callable[[str], nn.Module]):
        super().__init__({g: factory(g) for g in groups})

    def fn(self, group: str) -> nn.Module:
        if group not in self:
            raise ValueError(f"this model was built for groups {sorted(self.keys())}; the batch "
                             f"has '{group}' nodes (build it with a spec that includes them)")
        return self[group]
