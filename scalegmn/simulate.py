"""Constructive check of the ScaleGMN simulation theorem (Kalogeropoulos et al., "Scale Equivariant
Graph Metanetworks", NeurIPS 2024, Thm 5.2; docs/simulation.md).

``check(module, inputs)`` sets the parameters of a ScaleGMN-B (our ``ScaleGMN`` class, our
engines, embeddings, messages and updates) so that, fed the network's graph, its node states hold
every neuron's pre-activation ``z`` and activation ``x`` for each input, and (over ``2L``
iterations) the inverse gradients ``pinv(dL/dz)``, ``pinv(dL/dx)``; its backward-edge states hold
``pinv(W)`` and the weight gradients ``dL/dW``. It then compares them with the network's own forward
pass and autograd. ``pinv(t) = 1/t`` for ``t != 0`` and ``0`` at 0 (the scalar pseudo-inverse):
gradients transform by ``1/q``, so their pseudo-inverses have the node's symmetry, and zero weights,
zero gradients and dead ReLUs stay finite.

Node state channels (``n`` inputs, ``P`` spatial positions; ``P = 1`` for MLPs):
``[b | Z (n P) | X (n P) | GX (n P) | GZ (n P) | IX (n P) | IG (n P)]``; ``IX`` and ``IG`` hold
the network input (input neurons) and ``pinv(dL/dy / P)`` (output neurons), injected through the
additive I/O positional embeddings, as in the theorem. Which maps are the ordinary trainable blocks
and which are closed-form oracles is listed in ``SimulationReport.exact_parts`` /
``oracle_parts`` and in ``docs/simulation.md``.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters
from converters.groups import GROUPS
from converters.interp import activation as apply_act
from converters.interp import run

from .config import ModelConfig
from .gmn import ScaleGMN
from .nn import MLP, ScaleInv


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
        src = ch.src.clamp_min(0)
        xu = x[:, :, src] * (ch.src >= 0).to(x.dtype)           # (E, n, P, K)
        dw = torch.einsum("esp,espk->ek", g, xu)
        out = eb.clone()
        out[..., ch.K:2 * ch.K] = dw
        return out


# -- building the simulator ----------------------------------------------------------------------
def _check_supported(arch):
    convs = [op for op in arch.ops if op["op"] == "conv"]
    allowed = {"input", "linear", "conv", "act", "scalar", "pool", "flatten", "mean", "output"}
    for op in arch.ops:
        if op["op"] not in allowed:
            raise ValueError(f"simulate supports feed-forward MLPs and CNNs; found a "
                             f"'{op['op']}' op")
        if op["op"] == "pool" and not (op["fn"].startswith("adaptive_avg")
                                       and op["kwargs"].get("output_size") in (1, (1,), (1, 1),
                                                                              (1, 1, 1))):
            raise ValueError(f"simulate supports global average pooling only, found {op['fn']}")
    kernels = {tuple(op["kernel_size"]) for op in convs}
    for op in convs:
        if (any(s != 1 for s in op["stride"]) or any(d != 1 for d in op["dilation"])
                or op["groups"] != 1 or op["padding_mode"] != "zeros"
                or any(k % 2 == 0 for k in op["kernel_size"])
                or (op["padding"] != "same" and list(op["padding"]) != [k // 2 for k in
                                                                         op["kernel_size"]])):
            raise ValueError(f"simulate supports stride-1, 'same'-padded, odd-kernel, ungrouped "
                             f"convolutions; '{op['module']}' is not")
    if len(kernels) > 1:
        raise ValueError("simulate needs one kernel size for all convolutions")
    linears = [op for op in arch.ops if op["op"] == "linear"]
    if convs and (len(linears) != 1 or linears[0]["spatial"] and
                  math.prod(linears[0]["spatial"]) != 1):
        raise ValueError("a simulated CNN ends with global average pooling and one Linear")
    acts = {}
    for ns in arch.nodesets:
        if ns["role"] == "hidden":
            key = (ns["act"], tuple(sorted(ns["act_params"].items())))
            prev = acts.setdefault(ns["group"], key)
            if prev != key:
                raise ValueError(f"simulate needs one activation per symmetry group; group "
                                 f"'{ns['group']}' has {prev[0]} and {key[0]}")
    return acts


@dataclass
class Simulator:
    """A constructed ScaleGMN-B with its graph, inputs and the network's references."""

    net: ScaleGMN
    batch: Batch
    graph: converters.ParameterGraph
    channels: Channels
    iterations: int
    backward: bool
    reference: dict
    exact_parts: list
    oracle_parts: list
    notes: list = field(default_factory=list)


def _reference(graph, inputs, dtype, seed):
    module = converters.to_module(graph).to(dtype)
    arch = graph.arch
    x0 = inputs.to(dtype).clone().requires_grad_(True)
    vals = {}
    y = run(arch, x0, lambda op, ins: module.get_submodule(op["module"])(ins[0]), trace=vals)
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(y.shape, generator=g, dtype=dtype)
    loss = 0.5 * ((y - target) ** 2).sum()
    out_vid = {op["ns"]: op["out"] for op in arch.ops if "ns" in op}
    z, x = {}, {}
    for k, ns in enumerate(arch.nodesets):
        if k == 0:
            continue
        z[k] = vals[out_vid[k]]
        x[k] = z[k]
        v = out_vid[k]
        for op in arch.ops:   # follow the chain to the activation
            if op["op"] in ("scalar", "act") and op.get("in") == (v,):
                if op["op"] == "scalar" and op["fn"] != "mul":
                    break
                v = op["out"]
                if op["op"] == "act":
                    x[k] = vals[v]
                    break
    params = dict(module.named_parameters())
    tensors = [x0] + [z[k] for k in z] + [x[k] for k in x] + list(params.values())
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    nk = len(z)
    gz = dict(zip(z, grads[1:1 + nk]))
    gx = dict(zip(x, grads[1 + nk:1 + 2 * nk]))
    gp = dict(zip(params, grads[1 + 2 * nk:]))
    return {"x0": x0.detach(), "y": y.detach(), "dy": (y - target).detach(),
            "z": {k: v.detach() for k, v in z.items()}, "x": {k: v.detach() for k, v in x.items()},
            "gx0": grads[0], "gz": gz, "gx": gx, "gparams": gp}


def _per_node(t, P):
    """(n, C, *spatial) or (n, C) -> (C, n, P) with zero padding of positions."""
    n, C = t.shape[:2]
    flat = t.reshape(n, C, -1).transpose(0, 1)
    if flat.shape[2] < P:
        flat = torch.cat([flat, flat.new_zeros(C, n, P - flat.shape[2])], dim=2)
    return flat


def construct(module: nn.Module, inputs: torch.Tensor, backward: bool = True,
              dtype: torch.dtype = torch.float64, fitted: bool = False, seed: int = 0
              ) -> Simulator:
    """Build the simulating ScaleGMN-B for ``module`` on ``inputs`` (n, *input_shape)."""
    module = module.to(dtype).eval()
    inputs = inputs.to(dtype)
    graph = converters.to_graph(module, inputs)
    arch = graph.arch
    acts = _check_supported(arch)
    ref = _reference(graph, inputs, dtype, seed)
    n = inputs.shape[0]
    spatial = tuple(inputs.shape[2:])
    ch = Channels(n, spatial, tuple(arch.kernel_shape))
    depth = len(arch.nodesets) - 1
    T = 2 * depth if backward else depth
    cfg = ModelConfig(backend="scalegmn-b", task="equivariant", hidden=ch.d, layers=T,
                      residual=False, layer_norm=False, dropout=0.0, io_embeddings=True,
                      layer_embeddings=False, edge_type_embeddings=False,
                      backward_edges="reciprocal", reciprocal_on_sign=True, data_scale=False)
    batch = Batch.from_data_list([graph])
    net = ScaleGMN(cfg, batch, bidirectional=True).to(dtype)
    d, K = ch.d, ch.K
    exact = ["embeddings: bias -> b channel, kernel -> edge channels, 1/W on backward edges "
             "(masked at zero weights), inputs and output gradients through the I/O positional "
             "embeddings",
             "forward messages: (A_e e) * (A_v h) products and a ScaleEq summing kernel entries "
             "(phi = 1); an identity MLP (ReLU(a) - ReLU(-a)) into the fixed output neurons",
             "forward edge updates: D = I, chi = 1 (edges keep W)",
             "Z = b + sum of messages: a bias-free linear map"]
    oracles = ["backward messages: pinv per product channel (W_k g = pinv(pinv(W_k) pinv(g))) "
               "transforms by 1/q, which no ScaleEq block can",
               "GX = pinv(sum of backward messages) and GZ = GX * pinv(sigma'(Z))",
               "weight gradients in backward-edge states: sum_{s,p} g_i x_j (ratio of endpoint "
               "states)"]
    with torch.no_grad():
        emb = net.embedding
        _selection(emb.embed_x, [(0, 0)])
        _selection(emb.embed_e, [(k, k) for k in range(K)])
        _selection(emb.embed_eb, [(k, k) for k in range(K)])
        emb.pe_in.zero_()
        emb.pe_out.zero_()
        x0 = _per_node(ref["x0"], ch.P)          # (C_in, n, P)
        for j in range(x0.shape[0]):
            for s in range(n):
                for p in range(ch.P):
                    emb.pe_in[j, ch.ch("IX", s, p)] = x0[j, s, p]
                    emb.pe_in[j, ch.ch("X", s, p)] = x0[j, s, p]     # readable at once
        if backward:
            dy = ref["dy"]                         # (n, O)
            for o in range(dy.shape[1]):
                for s in range(n):
                    for p in range(ch.P):
                        for blk in ("IG", "GX", "GZ"):
                            emb.pe_out[o, ch.ch(blk, s, p)] = pinv(dy[s, o] / ch.P)
    fwd_pairs_e = [(ch.prod(s, p, k), k) for s in range(n) for p in range(ch.P) for k in range(K)]
    fwd_pairs_v = [(ch.prod(s, p, k), ch.ch("X", s, int(ch.src[p, k])))
                   for s in range(n) for p in range(ch.P) for k in range(K) if ch.src[p, k] >= 0]
    bw_pairs_v = [(ch.prod(s, int(ch.src[p, k]), k), ch.ch("GZ", s, p))
                  for s in range(n) for p in range(ch.P) for k in range(K) if ch.src[p, k] >= 0]
    sum_pairs = [(ch.ch("Z", s, p), ch.prod(s, p, k))
                 for s in range(n) for p in range(ch.P) for k in range(K)]
    fit_err = None
    fitted_phi = {}
    if fitted:
        for g, (act, params) in acts.items():
            if act in ("tanh", "sin"):
                fitted_phi[g], fit_err = _fit_factor(act, dict(params), ch, dtype, ref)
    for layer in net.layers:
        _selection(layer.A_e, fwd_pairs_e)
        _selection(layer.A_v, fwd_pairs_v)
        for g in list(layer.msg.keys()):
            if g == "fixed":
                mlp = MLP(d, 2 * ch.nP, d, layer_norm=False, activation="relu").to(dtype)
                with torch.no_grad():
                    mlp.lin1.weight.zero_(), mlp.lin1.bias.zero_()
                    mlp.lin2.weight.zero_(), mlp.lin2.bias.zero_()
                    for r, (o, i) in enumerate(sum_pairs):
                        row = o - ch.ch("Z")
                        mlp.lin1.weight[row, i] = 1.0
                        mlp.lin1.weight[ch.nP + row, i] = -1.0
                    for row in range(ch.nP):
                        mlp.lin2.weight[ch.ch("Z") + row, row] = 1.0
                        mlp.lin2.weight[ch.ch("Z") + row, ch.nP + row] = -1.0
                layer.replace("msg", mlp, group=g)
            else:
                _selection(layer.msg[g].gamma, sum_pairs)
                _const_one(layer.msg[g].phi)
        for g in list(layer.upd.keys()):
            if g == "fixed":
                act, params = "identity", ()
            else:
                act, params = acts.get(g, ("identity", ()))
            update = SimUpdate(ch, g, act, dict(params), dtype, gap=(g == "fixed" and ch.P > 1),
                               fitted=fitted_phi.get(g)).to(dtype)
            layer.replace("upd", update, group=g)
        _selection(layer.edge.D, [(c, c) for c in range(d)])
        _const_one(layer.edge.chi)
        _selection(layer.B_e, fwd_pairs_e)
        _selection(layer.B_v, bw_pairs_v)
        for g in list(layer.msg_bw.keys()):
            layer.replace("msg_bw", _BackwardMessage(ch), group=g)
        layer.replace("edge_bw", _WeightGradient(ch))
    for g, (act, _) in acts.items():
        if act in ("relu", "leaky_relu"):
            exact.append(f"X for '{g}' ({act}): ScaleEq with a ReLU-MLP ramp on x/||x|| "
                         f"(slope 2^{_mantissa(dtype) - 2}: exact outside a band of "
                         f"relative width 2^-{_mantissa(dtype) - 2} around z = 0)")
        elif act in ("tanh", "sin"):
            oracles.append(f"X for '{g}' ({act}): phi = sigma(z)/z on the sign-canonicalised "
                           f"state" + (" (an MLP fitted to it)" if fitted else ""))
        elif act == "identity":
            exact.append(f"X for '{g}' (identity): ScaleEq with phi = 1")
        else:
            oracles.append(f"X for '{g}' ({act}): sigma(Z) (a 'perm' neuron has no symmetry)")
    notes = []
    if fit_err is not None:
        notes.append(f"fitted MLP for sigma(z)/z: max abs fit error {fit_err:.2e} on the range "
                     f"of z seen")
    return Simulator(net.eval(), batch, graph, ch, T, backward, ref, exact, oracles, notes)


def _fit_factor(act, params, ch, dtype, ref, hidden=64, steps=300):
    """An MLP phi (block-diagonal copies of a fitted 1-D SiLU net) replacing the oracle."""
    zmax = max(float(v.abs().max()) for v in ref["z"].values()) * 1.2 + 1e-6
    grid = torch.linspace(-zmax, zmax, 4001, dtype=dtype)[:, None]
    target = _factor(act, params, grid)
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 1)).to(dtype)
    opt = torch.optim.LBFGS(f.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((f(grid) - target) ** 2).mean()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        err = float((f(grid) - target).abs().max())
    nP = ch.nP
    mlp = MLP(nP + 1, nP * hidden, nP, layer_norm=False).to(dtype)
    with torch.no_grad():
        mlp.lin1.weight.zero_()
        mlp.lin2.weight.zero_()
        for c in range(nP):
            rows = slice(c * hidden, (c + 1) * hidden)
            mlp.lin1.weight[rows, 1 + c] = f[0].weight[:, 0]
            mlp.lin1.bias[rows] = f[0].bias
            mlp.lin2.weight[c, rows] = f[2].weight[0]
            mlp.lin2.bias[c] = f[2].bias[0]
    return mlp, err


# -- evaluation --------------------------------------------------------------------------------
@dataclass
class SimulationReport:
    """Errors of the simulation, relative to the largest magnitude of each compared quantity."""

    max_forward_error: float
    max_backward_error: float | None
    layers: list
    parameters: dict
    iterations: int
    dtype: str
    exact_parts: list
    oracle_parts: list
    notes: list
    equivariance: dict | None = None

    def passed(self, tol: float) -> bool:
        return self.max_forward_error <= tol and (self.max_backward_error is None
                                                  or self.max_backward_error <= tol)

    def __str__(self):
        lines = [f"ScaleGMN-B simulation: {self.iterations} iterations, {self.dtype}",
                 f"  max forward error  {self.max_forward_error:.2e}",
                 f"  max backward error "
                 f"{'-' if self.max_backward_error is None else f'{self.max_backward_error:.2e}'}",
                 f"  {'node set':<16s} {'z':>9s} {'x':>9s} {'dL/dz':>9s} {'dL/dx':>9s}"]
        fmt = lambda v: "-" if v is None else f"{v:.2e}"
        for row in self.layers:
            lines.append(f"  {row['name']:<16s} {fmt(row.get('z')):>9s} {fmt(row.get('x')):>9s} "
                         f"{fmt(row.get('gz')):>9s} {fmt(row.get('gx')):>9s}")
        if self.parameters:
            lines.append("  parameter gradients: " + ", ".join(
                f"{k} {v:.2e}" for k, v in self.parameters.items()))
        if self.equivariance is not None:
            lines.append("  constructed ScaleGMN-B equivariance errors: " + ", ".join(
                f"{k} {v:.1e}" for k, v in self.equivariance.items()))
        lines.append("  exact with the trainable blocks:")
        lines += [f"    - {p}" for p in self.exact_parts]
        lines.append("  closed-form oracles:")
        lines += [f"    - {p}" for p in self.oracle_parts]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _rel(a, b, mask=None):
    if mask is not None:
        a, b = a[mask], b[mask]
    if b.numel() == 0:
        return 0.0
    den = b.abs().max()
    den = den if den > 0 else torch.tensor(1.0, dtype=b.dtype)
    return float((a - b).abs().max() / den)


def evaluate(sim: Simulator, equivariance: bool = False,
             device: str | torch.device = "cpu") -> SimulationReport:
    """Run the constructed network (on ``device``) and compare its states with the references
    (on the host)."""
    ch, ref, arch = sim.channels, sim.reference, sim.graph.arch
    net, batch = sim.net.to(device), copy.copy(sim.batch).to(device)
    with torch.no_grad():
        _, states = net(batch, return_states=True)
    h, _, eb = (t.cpu() for t in states[-1])
    offsets = [0]
    for ns in arch.nodesets:
        offsets.append(offsets[-1] + ns["size"])

    def state(k, block):
        return h[offsets[k]:offsets[k + 1], ch.block(block)].reshape(-1, ch.n, ch.P)

    rows, fwd, bwd = [], [], []
    x0 = _per_node(ref["x0"], ch.P)
    row = {"name": "input", "x": _rel(state(0, "X"), x0)}
    fwd.append(row["x"])
    if sim.backward:
        row["gx"] = _rel(pinv(state(0, "GX")), _per_node(ref["gx0"], ch.P))
        bwd.append(row["gx"])
    rows.append(row)
    for k in range(1, len(arch.nodesets)):
        ns = arch.nodesets[k]
        zr = _per_node(ref["z"][k], ch.P)
        P_k = zr.shape[2] if ref["z"][k].dim() > 2 else 1
        row = {"name": ns["name"], "z": _rel(state(k, "Z")[..., :P_k], zr[..., :P_k]),
               "x": _rel(state(k, "X")[..., :P_k], _per_node(ref["x"][k], ch.P)[..., :P_k])}
        fwd += [row["z"], row["x"]]
        if sim.backward:
            defined = None
            if ns["act"] in ("relu", "leaky_relu"):
                defined = zr[..., :P_k] != 0
            # after global average pooling the output neurons hold pinv(g / P) at every position
            gap = ch.P if (ref["z"][k].dim() == 2 and ch.P > 1) else 1
            row["gz"] = _rel(gap * pinv(state(k, "GZ"))[..., :P_k],
                             _per_node(ref["gz"][k], ch.P)[..., :P_k], defined)
            row["gx"] = _rel(gap * pinv(state(k, "GX"))[..., :P_k],
                             _per_node(ref["gx"][k], ch.P)[..., :P_k], defined)
            bwd += [row["gz"], row["gx"]]
        rows.append(row)
    params = {}
    if sim.backward:
        gg = sim.graph.clone()
        gg.edge_attr = eb[:, ch.K:2 * ch.K].to(gg.edge_attr.dtype)
        gz_sum = pinv(h[:, ch.block("GZ")]).reshape(-1, ch.n, ch.P).sum((1, 2))
        gg.x = torch.zeros_like(gg.x)
        gg.x[:, 0] = gz_sum
        sd = converters.to_state_dict(gg, strict=False)
        for key, g in ref["gparams"].items():
            params[key] = _rel(sd[key].to(g.dtype), g)
            bwd.append(params[key])
    eq = None
    if equivariance:
        from .testing import equivariance_errors
        eq = equivariance_errors(net, batch, n_actions=2)
    return SimulationReport(max(fwd), max(bwd) if bwd else None, rows, params, sim.iterations,
                            str(h.dtype).replace("torch.", ""), sim.exact_parts,
                            sim.oracle_parts, sim.notes, eq)


def check(module: nn.Module, inputs: torch.Tensor, backward: bool = True,
          dtype: torch.dtype = torch.float64, fitted: bool = False,
          equivariance: bool = False, device: str | torch.device = "cpu") -> SimulationReport:
    """Construct the simulating ScaleGMN-B for ``module`` and compare with the network's own
    forward pass (and autograd, with ``backward``); see ``SimulationReport``. The constructed
    network runs on ``device``; the references are computed on the host."""
    return evaluate(construct(module, inputs, backward, dtype, fitted), equivariance, device)
