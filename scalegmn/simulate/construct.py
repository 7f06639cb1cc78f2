"""Building the simulating ScaleGMN-B for a network: ``construct``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch_geometric.data import Batch

import converters
from converters.interp import run

from ..config import ScaleGMNConfig
from ..gmn import ScaleGMN
from ..nn import MLP
from .parts import (Channels, SimUpdate, _BackwardMessage, _const_one, _factor, _mantissa,
                    _selection, _WeightGradient, pinv)


def _check_supported(arch):
    convs = [op for op in arch.ops if op["op"] == "conv"]
    allowed = {"input", "linear", "conv", "act", "scalar", "pool", "flatten", "mean", "output"}
    if arch.ops and arch.ops[0].get("chan_dim", 1) != 1:
        raise ValueError(f"simulate supports (batch, features) and (batch, channels, *spatial) "
                         f"inputs; this network reads token-wise input of shape "
                         f"(batch, {', '.join(map(str, arch.input['shape']))}) with the features "
                         f"on the last axis")
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
    cfg = ScaleGMNConfig(backend="scalegmn-b", task="equivariant", hidden=ch.d, layers=T,
                      residual=False, layer_norm=False, dropout=0.0, io_embeddings=True,
                      layer_embeddings=False, edge_type_embeddings=False,
                      backward_edges="reciprocal", reciprocal_on_sign=True, data_scale=False,
                      out_dim=None)
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
