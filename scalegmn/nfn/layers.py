"""Parameter-sharing layers on ``WeightSpace`` (shapes in ``weightspace``'s module doc).

Every layer maps a ``WeightSpace`` with ``f_in[l]`` weight features and ``g_in`` bias channels per
layer to one with ``f_out[l]`` and ``g_out``. Input and output neurons are fixed by the group, so a
layer may mix freely along their index: we *fold* that index into the feature axis,

    W_1: (B, n_1, n_0, F) -> (B, n_1, n_0 * F)          (a row feature of hidden neuron j)
    W_L: (B, n_L, n_{L-1}, F) -> (B, n_{L-1}, n_L * F)  (a column feature of hidden neuron k)

and a linear map on the folded features is then equivariant to whatever acts on the hidden index.

- ``MonomialLinear``: Monomial-NFN (docs/methods.md 3.2): equivariant to permutations times
  any non-zero diagonal (``sign=False``), or to permutations times sign flips (``sign=True``, which
  adds the b_{L-1} <-> W_L couplings the sign group allows).
- ``NeuronSetLinear``: NP (all neurons permutable), HNP (inputs/outputs fixed); docs/methods.md 5,
  written with per-neuron features: permutation-equivariant only (additive constants and means).
- ``PolyLinear`` / ``PolyInvariant``: MAGEP-NFN polynomial layers (docs/methods.md 4): equivariant /
  invariant to permutations times any non-zero diagonal; path products through prefix and suffix
  products, so the cost is linear in depth.
- ``EntryNormPool``: Monomial-NFN's invariant layer (degree-0 normalisation per entry, then means).
- ``mean_pool`` (NP/HNP pooling) and ``weight_statistics`` (STATNN).
- ``FourierFeatures``: NP/HNP's optional entrywise input map (docs/methods.md 5): every scalar
  entry x becomes ``[sin(2 pi x B), cos(2 pi x B)]`` for a fixed random ``B``; entrywise, so it
  commutes with permutations (and with no rescaling or sign flip).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..nn.blocks import safe_normalize
from .weightspace import WeightSpace


def fold_cols(W):
    """(B, r, c, F) -> (B, r, 1, c * F)."""
    return W.reshape(W.shape[0], W.shape[1], 1, -1)


def fold_rows(W):
    """(B, r, c, F) -> (B, 1, c, r * F)."""
    return W.transpose(1, 2).reshape(W.shape[0], W.shape[2], -1).unsqueeze(1)


def unfold_cols(W, c):
    return W.reshape(W.shape[0], W.shape[1], c, -1)


def unfold_rows(W, r):
    return W.squeeze(1).reshape(W.shape[0], W.shape[2], r, -1).transpose(1, 2)


def _lin(i, o, bias=False):
    return nn.Linear(i, o, bias=bias)


# -- Monomial-NFN ------------------------------------------------------------------------------
class MonomialLinear(nn.Module):
    """W'_1[j] = A_1 W_1[j,:] + Q b_1[j];  W'_l = A_l W_l (1<l<L);  W'_L[:,k] = A_L W_L[:,k]
    b'_1[j] = R W_1[j,:] + S_1 b_1[j];  b'_l = S_l b_l;  b'_L = S_L b_L + t.
    With ``sign``: W'_L[:,k] += T b_{L-1}[k] and b'_{L-1}[j] += U W_L[:,j] (valid for +-1 only).

    Maps never mix two hidden entries, so the layer is also equivariant to *uncoupled* actions
    (docs/methods.md 3.3) apart from the ``sign`` couplings."""

    def __init__(self, n0, nL, L, f_in, g_in, f_out, g_out, sign=False):
        super().__init__()
        self.n0, self.nL, self.L, self.sign = n0, nL, L, sign
        self.A = nn.ModuleList()
        for l in range(L):
            fold = n0 if l == 0 else nL if l == L - 1 else 1
            self.A.append(_lin(fold * f_in[l], fold * f_out[l]))
        self.Q = _lin(g_in, n0 * f_out[0])
        self.R = _lin(n0 * f_in[0], g_out)
        self.S = nn.ModuleList(_lin(g_in, g_out) for _ in range(L - 1))
        self.S_last = _lin(nL * g_in, nL * g_out, bias=True)
        if sign:
            self.T = _lin(g_in, nL * f_out[-1])
            self.U = _lin(nL * f_in[-1], g_out)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        L, W, b = self.L, ws.weights, ws.biases
        x1 = W[0].reshape(*W[0].shape[:2], -1)                          # (B, n_1, n_0 F)
        xL = W[-1].transpose(1, 2).reshape(W[-1].shape[0], W[-1].shape[2], -1)  # (B, n_{L-1}, n_L F)
        out_w = [unfold_cols((self.A[0](x1) + self.Q(b[0])).unsqueeze(2), self.n0)]
        out_w += [self.A[l](W[l]) for l in range(1, L - 1)]
        wL = self.A[-1](xL)
        if self.sign:
            wL = wL + self.T(b[L - 2])
        out_w.append(unfold_rows(wL.unsqueeze(1), self.nL))
        out_b = [self.S[l](b[l]) for l in range(L - 1)]
        out_b[0] = out_b[0] + self.R(x1)
        if self.sign:
            out_b[L - 2] = out_b[L - 2] + self.U(xL)
        B = b[-1].shape[0]
        out_b.append(self.S_last(b[-1].reshape(B, -1)).reshape(B, self.nL, -1))
        return WeightSpace(tuple(out_w), tuple(out_b))


class EntryNormPool(nn.Module):
    """Monomial-NFN's invariant layer: per entry (folded rows of W_1, folded columns of W_L,
    hidden entries of W_l, hidden biases) nu(v) = gamma * v / ||v|| + beta (with |v| first when
    ``sign``), then the mean over hidden indices; b_L (already invariant) is passed raw.

    Output ``(B, n_0 f_1 + sum_{1<l<L} f_l + n_L f_L + (L-1) g + n_L g)``. Invariant to
    permutations times positive diagonals (times sign flips with ``sign``), coupled or not."""

    def __init__(self, n0, nL, L, f, g, sign=False):
        super().__init__()
        self.sign, self.L = sign, L
        sizes = [n0 * f[0]] + [f[l] for l in range(1, L - 1)] + [nL * f[-1]] + [g] * (L - 1)
        self.gamma = nn.ParameterList(nn.Parameter(torch.ones(s)) for s in sizes)
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in sizes)
        self.out_dim = sum(sizes) + nL * g

    def forward(self, ws: WeightSpace) -> torch.Tensor:
        W, b = ws.weights, ws.biases
        entries = [fold_cols(W[0])] + list(W[1:-1]) + [fold_rows(W[-1])] + list(b[:-1])
        feats = []
        for v, gamma, beta in zip(entries, self.gamma, self.beta):
            v = v.abs() if self.sign else v
            nu = gamma * safe_normalize(v) + beta
            feats.append(nu.reshape(nu.shape[0], -1, nu.shape[-1]).mean(1))
        feats.append(b[-1].reshape(b[-1].shape[0], -1))
        return torch.cat(feats, dim=1)


# -- NP / HNP -----------------------------------------------------------------------------------
class NeuronSetLinear(nn.Module):
    """NP (``fixed_io=False``) or HNP (``fixed_io=True``) linear layer.

    Node set h (neurons of layer h) that is permuted gets neuron features
    N_h[j] = [b_h[j]; mean_k W_h[j,k]; mean_i W_{h+1}[i,j]]; the global vector s holds the mean of
    every tensor. With fixed inputs/outputs their index is folded into the features (so "means"
    over it become full rows/columns). Then

        W'_l[j,k] = A W_l[j,k] + R N_l[j] + Q N_{l-1}[k] + G s + c,   b'_l[j] = E N_l[j] + F s + c.

    Equivariant to permutations of the permuted node sets only (means and constants do not
    scale). ``io_embed`` (NP): learned per-input/per-output embeddings added to W_1, W_L, b_L
    (breaks the input/output permutations that are not symmetries of a network)."""

    def __init__(self, n, L, f_in, g_in, f_out, g_out, fixed_io=False, io_embed=False):
        super().__init__()
        n0, nL = n
        self.n0, self.nL, self.L, self.fixed = n0, nL, L, fixed_io
        col_fold = [n0 if fixed_io and l == 0 else 1 for l in range(L)]
        row_fold = [nL if fixed_io and l == L - 1 else 1 for l in range(L)]
        fw_in = [f_in[l] * col_fold[l] * row_fold[l] for l in range(L)]
        fw_out = [f_out[l] * col_fold[l] * row_fold[l] for l in range(L)]
        fb_in = [g_in * row_fold[l] for l in range(L)]
        fb_out = [g_out * row_fold[l] for l in range(L)]
        self.free = [not (fixed_io and h in (0, L)) for h in range(L + 1)]
        dN = [0] * (L + 1)
        for h in range(L + 1):
            if self.free[h]:
                dN[h] = (fb_in[h - 1] + fw_in[h - 1] if h >= 1 else 0) + (fw_in[h] if h < L else 0)
        s_dim = sum(fw_in) + sum(fb_in)
        self.A = nn.ModuleList(_lin(fw_in[l], fw_out[l]) for l in range(L))
        self.R = nn.ModuleList(_lin(dN[l + 1], fw_out[l]) if self.free[l + 1] else None
                               for l in range(L))
        self.Q = nn.ModuleList(_lin(dN[l], fw_out[l]) if self.free[l] else None
                               for l in range(L))
        self.G = nn.ModuleList(_lin(s_dim, fw_out[l], bias=True) for l in range(L))
        self.E = nn.ModuleList(_lin(dN[l + 1], fb_out[l]) if self.free[l + 1]
                               else _lin(fb_in[l], fb_out[l]) for l in range(L))
        self.F = nn.ModuleList(_lin(s_dim, fb_out[l], bias=True) for l in range(L))
        self.io_embed = io_embed and not fixed_io
        if self.io_embed:
            self.e_in = nn.Parameter(torch.zeros(n0, f_in[0]))
            self.e_out = nn.Parameter(torch.zeros(nL, f_in[-1]))
            self.e_b = nn.Parameter(torch.zeros(nL, g_in))
            for e in (self.e_in, self.e_out, self.e_b):
                nn.init.normal_(e, std=0.1)

    def fold(self, ws: WeightSpace):
        W, b = list(ws.weights), list(ws.biases)
        if self.io_embed:
            W[0] = W[0] + self.e_in
            W[-1] = W[-1] + self.e_out[:, None, :]
            b[-1] = b[-1] + self.e_b
        if self.fixed:
            W[0], W[-1] = fold_cols(W[0]), fold_rows(W[-1])
            b[-1] = b[-1].reshape(b[-1].shape[0], 1, -1)
        return W, b

    def features(self, W, b):
        """Neuron features N_h (B, n_h, d) of the permuted node sets, and the global s (B, d)."""
        N = []
        for h in range(self.L + 1):
            if not self.free[h]:
                N.append(None)
                continue
            parts = []
            if h >= 1:
                parts += [b[h - 1], W[h - 1].mean(2)]
            if h < self.L:
                parts.append(W[h].mean(1))
            N.append(torch.cat(parts, dim=-1))
        s = torch.cat([w.mean((1, 2)) for w in W] + [v.mean(1) for v in b], dim=-1)
        return N, s

    def forward(self, ws: WeightSpace) -> WeightSpace:
        W, b = self.fold(ws)
        N, s = self.features(W, b)
        out_w, out_b = [], []
        for l in range(self.L):
            w = self.A[l](W[l]) + self.G[l](s)[:, None, None]
            if self.R[l] is not None:
                w = w + self.R[l](N[l + 1])[:, :, None]
            if self.Q[l] is not None:
                w = w + self.Q[l](N[l])[:, None]
            out_w.append(w)
            src = N[l + 1] if self.free[l + 1] else b[l]
            out_b.append(self.E[l](src) + self.F[l](s)[:, None])
        if self.fixed:
            out_w[0] = unfold_cols(out_w[0], self.n0)
            out_w[-1] = unfold_rows(out_w[-1], self.nL)
            out_b[-1] = out_b[-1].reshape(out_b[-1].shape[0], self.nL, -1)
        return WeightSpace(tuple(out_w), tuple(out_b))


class FourierFeatures(nn.Module):
    """A fixed Gaussian Fourier feature map applied to every entry of a ``WeightSpace`` with one
    channel: ``x -> [sin(2 pi x B_1..m), cos(2 pi x B_1..m)]``, ``B ~ N(0, scale^2)`` of shape
    ``(m,)`` drawn once from a generator seeded with ``seed`` (on the host, in float64, so every
    device and every run gets the same projection) and kept as the buffer ``B`` (saved in state
    dicts; not trained).

    Shapes: weights ``(batch, n_l, n_{l-1}, k_l)`` -> ``(batch, n_l, n_{l-1}, 2m * k_l)`` in the
    channel-major layout (feature ``c * k_l + s``: channel c of kernel position s); biases
    ``(batch, n_l, 1)`` -> ``(batch, n_l, 2m)``. Entrywise, so it commutes with every
    permutation of the neuron axes; it commutes with no rescaling or sign flip (sin and cos are
    not homogeneous), so only permutation-only backends may use it."""

    def __init__(self, m: int, scale: float, seed: int = 0):
        super().__init__()
        if m < 1 or not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"FourierFeatures needs m >= 1 and a finite scale > 0, got m={m}, "
                             f"scale={scale}")
        g = torch.Generator().manual_seed(seed)
        B = torch.randn(m, generator=g, dtype=torch.float64) * scale
        self.register_buffer("B", B.to(torch.get_default_dtype()))
        self.m = m

    @property
    def channels(self) -> int:
        return 2 * self.m

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., k) with one channel -> (..., 2m * k), channel-major
        z = 2 * math.pi * x.unsqueeze(-2) * self.B.to(x.dtype)[:, None]     # (..., m, k)
        return torch.cat([torch.sin(z), torch.cos(z)], dim=-2).flatten(-2)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        return ws.map(self._map)


def mean_pool(ws: WeightSpace, fixed_io: bool) -> torch.Tensor:
    """NP pooling (every tensor's mean) or HNP pooling (means over hidden indices only: the rows
    of W_1, the columns of W_L and b_L are kept whole). ``(B, D)``; permutation-invariant."""
    W, b = list(ws.weights), list(ws.biases)
    if fixed_io:
        W[0], W[-1] = fold_cols(W[0]), fold_rows(W[-1])
        b[-1] = b[-1].reshape(b[-1].shape[0], 1, -1)
    return torch.cat([w.mean((1, 2)) for w in W] + [v.mean(1) for v in b], dim=-1)


# -- MAGEP-NFN ----------------------------------------------------------------------------------
def path_products(ws: WeightSpace):
    """Per-channel path products of a ``WeightSpace`` with ``k = 1`` (features = channels C).

    Returns matrices M_s (B, C, n_s, n_{s-1}), biases b_s (B, C, n_s), prefix products
    P_s = W_(s,0) = M_s ... M_1 (B, C, n_s, n_0), suffix products S_t = W_(L,t) = M_L ... M_{t+1}
    (B, C, n_L, n_t) and propagated biases beta_s = sum_{t<s} W_(s,t) b_t (B, C, n_s), all for
    1-based s in lists indexed s (index 0 unused for M, b, P, beta) and t = 0..L-1 for S.
    2L matrix products in all: linear in depth (the published code forms all L^2 pairs)."""
    L = ws.L
    M = [None] + [w.permute(0, 3, 1, 2) for w in ws.weights]
    b = [None] + [v.transpose(1, 2) for v in ws.biases]
    P = [None, M[1]]
    beta = [None, torch.zeros_like(b[1])]
    for s in range(2, L + 1):
        P.append(M[s] @ P[s - 1])
        beta.append((M[s] @ (beta[s - 1] + b[s - 1]).unsqueeze(-1)).squeeze(-1))
    S = [None] * L
    S[L - 1] = M[L]
    for t in range(L - 2, 0, -1):
        S[t] = S[t + 1] @ M[t + 1]
    S[0] = P[L]
    return M, b, P, S, beta


def _last(x):
    """(B, C, r, c) -> (B, r, c, C)."""
    return x.permute(0, 2, 3, 1)


class PolyLinear(nn.Module):
    """MAGEP-NFN's polynomial equivariant layer on a ``k = 1`` weight space with C -> C' channels.

    Terms per channel (docs/methods.md 4.2): path products P_s = W_(s,0), S_t = W_(L,t);
    [WW]_s = P_s Psi_s S_{s-1} and [bW]_s = b_s (psi_s^T S_{s-1}) (both transform like W_s);
    for biases [WW0]_s = P_s Psi'_s S_0, [bW0]_s = b_s (psi'_s^T S_0), the propagated bias beta_s,
    and for the invariant b'_L also every W_(L,s) b_s. Then

        W'_s = mix([W_s, [WW]_s, [bW]_s])   (along the fixed index for s = 1 and s = L),
        b'_s = mix([P_s, [WW0]_s, [bW0]_s (folded over inputs), beta_s, b_s]),
        b'_L = mix(all invariant terms) + c.

    Every hidden index appears once as a row and once as a column inside a product, so the layer
    is equivariant to permutations times *any* non-zero diagonal; it mixes layers (it is not
    equivariant to uncoupled actions). Psi and psi are learned here (frozen random in the
    published code)."""

    def __init__(self, n0, nL, L, c_in, c_out):
        super().__init__()
        self.n0, self.nL, self.L = n0, nL, L
        scale = 1.0 / math.sqrt(n0 * nL)
        self.Psi = nn.Parameter(torch.randn(L, c_in, n0, nL) * scale)
        self.psi = nn.Parameter(torch.randn(L, c_in, nL) / math.sqrt(nL))
        self.Psi0 = nn.Parameter(torch.randn(L, c_in, n0, nL) * scale)
        self.psi0 = nn.Parameter(torch.randn(L, c_in, nL) / math.sqrt(nL))
        C = c_in
        self.Aw = nn.ModuleList()
        for s in range(1, L + 1):
            fold = n0 if s == 1 else nL if s == L else 1
            self.Aw.append(_lin(fold * 3 * C, fold * c_out))
        self.Q1 = _lin(C, n0 * c_out)
        self.Ab = nn.ModuleList(_lin(3 * n0 * C + (2 if s >= 2 else 1) * C, c_out)
                                for s in range(1, L))
        self.Ab_last = _lin(3 * nL * n0 * C + 2 * nL * C + (L - 1) * nL * C, nL * c_out,
                            bias=True)

    def forward(self, ws: WeightSpace) -> WeightSpace:
        L, n0, nL = self.L, self.n0, self.nL
        M, b, P, S, beta = path_products(ws)
        Bsz = M[1].shape[0]
        out_w, out_b = [], []
        for s in range(1, L + 1):
            WW = (P[s] @ self.Psi[s - 1]) @ S[s - 1]
            bW = b[s].unsqueeze(-1) * torch.einsum("cp,bcpk->bck", self.psi[s - 1],
                                                   S[s - 1]).unsqueeze(-2)
            x = _last(torch.cat([M[s], WW, bW], dim=1))                 # (B, n_s, n_{s-1}, 3C)
            if s == 1:
                y = self.Aw[0](x.reshape(Bsz, x.shape[1], -1)) + self.Q1(ws.biases[0])
                out_w.append(unfold_cols(y.unsqueeze(2), n0))
            elif s == L:
                y = self.Aw[-1](x.transpose(1, 2).reshape(Bsz, x.shape[2], -1))
                out_w.append(unfold_rows(y.unsqueeze(1), nL))
            else:
                out_w.append(self.Aw[s - 1](x))
            WW0 = (P[s] @ self.Psi0[s - 1]) @ S[0]
            bW0 = b[s].unsqueeze(-1) * torch.einsum("cp,bcpq->bcq", self.psi0[s - 1],
                                                    S[0]).unsqueeze(-2)
            folded = _last(torch.cat([P[s], WW0, bW0], dim=1)).reshape(Bsz, P[s].shape[2], -1)
            parts = [folded, ws.biases[s - 1]] + ([beta[s].transpose(1, 2)] if s >= 2 else [])
            if s < L:
                out_b.append(self.Ab[s - 1](torch.cat(parts, dim=-1)))
            else:
                Sb = [(S[t] @ b[t].unsqueeze(-1)).squeeze(-1).transpose(1, 2)
                      for t in range(1, L)]
                v = torch.cat([p.reshape(Bsz, -1) for p in parts + Sb], dim=-1)
                out_b.append(self.Ab_last(v).reshape(Bsz, nL, -1))
        return WeightSpace(tuple(out_w), tuple(out_b))


class PolyInvariant(nn.Module):
    """MAGEP-NFN's invariant layer (docs/methods.md 4.3) on a ``k = 1`` weight space: a linear
    map of W_(L,0), W_(L,0) Psi W_(L,0), b_L (psi^T W_(L,0)), beta_L, b_L and every W_(L,s) b_s
    (which subsume the published trace features), plus a constant. ``(B, d_out)``; invariant to
    permutations times any non-zero diagonal, with no pooling.

    The terms are polynomials of degree up to 2L + 1 in the weights, so their magnitudes differ by
    orders; each term is rescaled to unit RMS per network before the linear map (a function of
    invariants, so invariance is kept; the published code has no such control)."""

    def __init__(self, n0, nL, L, c_in, d_out):
        super().__init__()
        self.Psi = nn.Parameter(torch.randn(c_in, n0, nL) / math.sqrt(n0 * nL))
        self.psi = nn.Parameter(torch.randn(c_in, nL) / math.sqrt(nL))
        d = 3 * nL * n0 * c_in + (L + 1) * nL * c_in
        self.lin = _lin(d, d_out, bias=True)

    def forward(self, ws: WeightSpace) -> torch.Tensor:
        M, b, P, S, beta = path_products(ws)
        L = ws.L
        PL = P[L]
        WW = (PL @ self.Psi) @ PL
        bW = b[L].unsqueeze(-1) * torch.einsum("cp,bcpq->bcq", self.psi, PL).unsqueeze(-2)
        Sb = [(S[t] @ b[t].unsqueeze(-1)).squeeze(-1) for t in range(1, L)]
        parts = [PL, WW, bW, beta[L], b[L]] + Sb
        parts = [p.reshape(PL.shape[0], -1) for p in parts]
        return self.lin(torch.cat([safe_normalize(p) * p.shape[1] ** 0.5 for p in parts], dim=-1))


# -- STATNN ---------------------------------------------------------------------------------------
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def weight_statistics(ws: WeightSpace) -> torch.Tensor:
    """STATNN features: per weight and bias tensor, the mean, variance and the 0/25/50/75/100 %
    quantiles of its entries: ``(B, 14 L)``; invariant to permutations (not to scalings)."""
    feats = []
    q = None
    for t in list(ws.weights) + list(ws.biases):
        v = t.reshape(t.shape[0], -1)
        if q is None or q.dtype != v.dtype:
            q = torch.tensor(_QUANTILES, dtype=v.dtype, device=v.device)
        feats += [v.mean(1, keepdim=True), v.var(1, keepdim=True, unbiased=False),
                  torch.quantile(v, q, dim=1).T]
    return torch.cat(feats, dim=1)
