"""Running the constructed network and comparing it with the real one: ``evaluate``, ``check``."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

import converters

from .construct import Simulator, _per_node, construct
from .parts import pinv


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
        from ..testing import equivariance_errors
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
