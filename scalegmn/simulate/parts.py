"""The simulating network's parts: the channel layout, the scalar pseudo-inverse, activations as
factors, and the dedicated modules put in place of trainable ones (``SimUpdate``, ``_Term``,
``_BackwardMessage``, ``_WeightGradient``; see the package doc)."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn

from converters.interp import activation as apply_act

from ..nn import MLP, ScaleInv


def _mantissa(dtype) -> int:
    return int(round(-math.log2(torch.finfo(dtype).eps)))


def pinv(t: torch.Tensor) -> torch.Tensor:
    """Elementwise pseudo-inverse: 1/t where t != 0, else 0 (no inf/NaN, finite gradients)."""
    nz = t != 0
    return torch.where(nz, 1.0 / torch.where(nz, t, torch.ones_like(t)), torch.zeros_like(t))


# -- channel layout ----------------------------------------------------------------------------
class Channels:
    """Indices of the node-state, product and edge channels (see module doc)."""

    BLOCKS = ("Z", "X", "GX", "GZ", "IX", "IG")

    def __init__(self, n: int, spatial: tuple, kshape: tuple):
        self.n, self.spatial, self.kshape = n, tuple(spatial), tuple(kshape)
        self.P = math.prod(self.spatial) if self.spatial else 1
        self.K = math.prod(self.kshape) if self.kshape else 1
        self.nP = n * self.P
        self.d_state = 1 + len(self.BLOCKS) * self.nP
        self.d = max(self.d_state, self.nP * self.K, 2 * self.K)
        # src[p, k]: the input position read by output position p through kernel entry k
        positions = list(itertools.product(*[range(s) for s in self.spatial])) or [()]
        offsets = list(itertools.product(*[range(k) for k in self.kshape])) or [()]
        index = {pos: i for i, pos in enumerate(positions)}
        self.src = torch.full((self.P, self.K), -1, dtype=torch.long)
        for p, pos in enumerate(positions):
            for k, off in enumerate(offsets):
                q = tuple(a + o - kk // 2 for a, o, kk in zip(pos, off, self.kshape))
                self.src[p, k] = index.get(q, -1)

    def ch(self, block: str, s=None, p=None) -> int:
        base = 1 + self.BLOCKS.index(block) * self.nP
        return base if s is None else base + s * self.P + p

    def block(self, block: str) -> slice:
        b = self.ch(block)
        return slice(b, b + self.nP)

    def prod(self, s, p, k) -> int:
        return (s * self.P + p) * self.K + k


def _selection(lin: nn.Linear, pairs, scale=1.0):
    with torch.no_grad():
        lin.weight.zero_()
        for o, i in pairs:
            lin.weight[o, i] += scale
    return lin


def _const_one(mlp: MLP):
    with torch.no_grad():
        mlp.lin2.weight.zero_()
        mlp.lin2.bias.fill_(1.0)
    return mlp


# -- activations as factors --------------------------------------------------------------------
def _factor(act, params, z):
    """``sigma(z) / z`` (its limit at 0); even for odd sigma, scale-invariant for ReLU."""
    if act == "tanh":
        safe = torch.where(z == 0, torch.ones_like(z), z)
        return torch.where(z == 0, torch.ones_like(z), torch.tanh(safe) / safe)
    if act == "sin":
        w0 = params.get("w0", 1.0)
        safe = torch.where(z == 0, torch.ones_like(z), z)
        return torch.where(z == 0, torch.full_like(z, w0), torch.sin(w0 * safe) / safe)
    raise ValueError(act)


def _derivative(act, params, z):
    if act == "relu":
        return (z > 0).to(z.dtype)
    if act == "leaky_relu":
        a = params.get("negative_slope", 0.01)
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, a))
    if act == "tanh":
        return 1 - torch.tanh(z) ** 2
    if act == "sin":
        w0 = params.get("w0", 1.0)
        return w0 * torch.cos(w0 * z)
    if act == "identity":
        return torch.ones_like(z)
    zz = z.detach().requires_grad_(True)
    with torch.enable_grad():
        y = apply_act(act, params, zz)
        return torch.autograd.grad(y.sum(), zz)[0]


class _Oracle(nn.Module):
    """A closed-form function standing where the trainable blocks cannot be exact."""

    def __init__(self, fn, name):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x):
        return self.fn(x)


# -- the constructed update ----------------------------------------------------------------------
class SimUpdate(nn.Module):
    """Node update for one group: input ``[h; m_fw; m_bw]`` (3d) -> new state (d).

    ``Z = b + m_fw`` (a bias-free linear map; for ``fixed`` output neurons also the global average
    over positions), ``X = sum of ScaleEq terms`` (exact ReLU ramp MLP for ReLU/LeakyReLU; the
    oracle ``sigma(z)/z`` or an MLP fitted to it for tanh/sine; ``sigma(Z)`` for ``perm``),
    ``GX = pinv(m_bw)`` and ``GZ = GX * pinv(sigma'(Z))`` (oracles)."""

    def __init__(self, ch: Channels, group, act, params, dtype, gap=False, fitted=None):
        super().__init__()
        d, nP, P = ch.d, ch.nP, ch.P
        self.ch, self.group, self.act, self.params = ch, group, act, dict(params)
        z_pairs = []
        for s in range(ch.n):
            for p in range(P):
                out = s * P + p
                if gap:   # output neurons after global average pooling: Z at p = 0
                    if p == 0:
                        z_pairs += [(out, 0)]
                    continue
                z_pairs += [(out, 0), (out, d + ch.ch("Z", s, p))]
        self.gamma_z = _selection(nn.Linear(2 * d, nP, bias=False, dtype=dtype), z_pairs)
        if gap:
            with torch.no_grad():
                for s in range(ch.n):
                    for p in range(P):
                        self.gamma_z.weight[s * P, d + ch.ch("Z", s, p)] = 1.0 / P
        # the invariant branch sees only the forward quantities [b, b + m] (a linear selection)
        self.select = nn.Linear(2 * d, nP + 1, bias=False, dtype=dtype)
        with torch.no_grad():
            self.select.weight.copy_(torch.cat([self.gamma_z.weight[:1] * 0, self.gamma_z.weight]))
            self.select.weight[0, 0] = 1.0
        self.terms = nn.ModuleList()
        self.oracle_x = None
        if act in ("relu", "leaky_relu"):
            slope = params.get("negative_slope", 0.01) if act == "leaky_relu" else 0.0
            k = 2.0 ** (_mantissa(dtype) - 2)
            ramp = MLP(nP + 1, 2 * nP, nP, layer_norm=False, activation="relu").to(dtype)
            with torch.no_grad():
                ramp.lin1.weight.zero_()
                ramp.lin1.bias.zero_()
                ramp.lin2.weight.zero_()
                ramp.lin2.bias.zero_()
                for c in range(nP):   # unit c: k u_c ; unit nP + c: k u_c - 1 ; out = diff
                    ramp.lin1.weight[c, 1 + c] = k
                    ramp.lin1.weight[nP + c, 1 + c] = k
                    ramp.lin1.bias[nP + c] = -1.0
                    ramp.lin2.weight[c, c] = 1.0
                    ramp.lin2.weight[c, nP + c] = -1.0
            self.terms.append(_Term(self.gamma_z, (1 - slope), ScaleInv("scale", nP + 1), ramp))
            if slope:
                self.terms.append(_Term(self.gamma_z, slope, None, None))
        elif act == "identity":
            self.terms.append(_Term(self.gamma_z, 1.0, None, None))
        elif act in ("tanh", "sin"):
            inv = ScaleInv("sign", nP + 1, sign_mode="canonicalize")
            phi = fitted if fitted is not None else _Oracle(
                lambda u: _factor(act, params, u[..., 1:]), f"{act}(z)/z")
            self.terms.append(_Term(self.gamma_z, 1.0, inv, phi))
        else:   # perm group: no symmetry to respect; sigma(Z) directly
            self.oracle_x = _Oracle(lambda z: apply_act(act, params, z), act)

    def forward(self, x):
        ch, d = self.ch, self.ch.d
        h, mf, mb = x[..., :d], x[..., d:2 * d], x[..., 2 * d:]
        hm = x[..., :2 * d]
        z = self.gamma_z(hm)
        if self.oracle_x is not None:
            xs = self.oracle_x(z)
        else:
            sel = self.select(hm)
            xs = sum(t(hm, sel) for t in self.terms)
        gx = pinv(mb[..., ch.block("Z")]) + h[..., ch.block("IG")]
        gz = gx * pinv(_derivative(self.act, self.params, z))
        out = x.new_zeros(*x.shape[:-1], d)
        out[..., 0] = h[..., 0]
        out[..., ch.block("Z")] = z
        out[..., ch.block("X")] = xs + h[..., ch.block("IX")]
        out[..., ch.block("GX")] = gx
        out[..., ch.block("GZ")] = gz
        out[..., ch.block("IX")] = h[..., ch.block("IX")]
        out[..., ch.block("IG")] = h[..., ch.block("IG")]
        return out


class _Term(nn.Module):
    """``scale * Gamma(x) * phi(inv(S x))``: one ScaleEq term (phi = 1 when absent)."""

    def __init__(self, gamma, scale, inv, phi):
        super().__init__()
        self.gamma, self.scale, self.inv, self.phi = gamma, float(scale), inv, phi

    def forward(self, hm, sel):
        g = self.gamma(hm)
        if self.scale != 1.0:
            g = g * self.scale
        if self.phi is None:
            return g
        return g * self.phi(self.inv(sel))


class _BackwardMessage(nn.Module):
    """Oracle: per product channel ``pinv(pinv(W_k) * pinv(g))`` = ``W_k g``, summed over k."""

    def __init__(self, ch: Channels):
        super().__init__()
        self.ch = ch

    def forward(self, zb):
        ch = self.ch
        prod = pinv(zb[..., :ch.nP * ch.K]).reshape(*zb.shape[:-1], ch.nP, ch.K).sum(-1)
        out = torch.zeros_like(zb)
        out[..., ch.block("Z")] = prod
        return out


class _WeightGradient(nn.Module):
    """Oracle edge update: keeps ``pinv(W)`` and writes ``dL/dW_k = sum_{s,p} g_i(s,p)
    x_j(s, src(p,k))`` in channels ``K..2K`` (transforms like 1/W)."""

    def __init__(self, ch: Channels):
        super().__init__()
        self.ch = ch

    def forward(self, eng, h, eb):
        ch = self.ch
        ones = torch.ones_like(eb)
        hs = eng.gather(ones, h, "src")
        hd = eng.gather(ones, h, "dst")
        x = hs[..., ch.block("X")].reshape(-1, ch.n, ch.P)
        g = pinv(hd[..., ch.block("GZ")]).reshape(-1, ch.n, ch.P)
        src = ch.src.to(x.device)                                # built on the host
        xu = x[:, :, src.clamp_min(0)] * (src >= 0).to(x.dtype)  # (E, n, P, K)
        dw = torch.einsum("esp,espk->ek", g, xu)
        out = eb.clone()
        out[..., ch.K:2 * ch.K] = dw
        return out
