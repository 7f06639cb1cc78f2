"""Transforms applied to graphs of any backend alike: augmentation by random group actions, and
canonicalisers (SIREN sign and phase; ReLU scale). Each canonicaliser keeps the network function,
is idempotent, and maps equivalent networks to the same parameters."""
from __future__ import annotations

import math
from typing import Optional

import torch

import converters


class RandomAction:
    """Augmentation: ``graph -> sample_action(graph).apply(graph)`` (a new draw each call)."""

    def __init__(self, scale_range=(0.1, 10.0), generator: Optional[torch.Generator] = None):
        self.scale_range, self.generator = scale_range, generator

    def __call__(self, graph):
        return converters.sample_action(graph, self.generator, self.scale_range).apply(graph)


def _layers(graph):
    """(node-set index, node slice) of every hidden node set, in order."""
    arch, out, off = graph.arch, [], 0
    for k, ns in enumerate(arch.nodesets):
        if ns["role"] == "hidden":
            out.append((k, slice(off, off + ns["size"])))
        off += ns["size"]
    return out


def _incoming(graph, nodes: slice):
    """For each node of ``nodes``: the concatenated incoming weights (E_in, Fe) as a padded
    (n, max_in * Fe) matrix, in edge order."""
    dst = graph.edge_index[1]
    n = nodes.stop - nodes.start
    rows = []
    for i in range(n):
        sel = dst == nodes.start + i
        rows.append(graph.edge_attr[sel].reshape(-1))
    return rows


class SirenCanonical:
    """Canonical form of SIRENs ``sin(w0 (W x + b))``: per sine neuron the phase symmetries
    ``b -> b + 2 pi m / w0`` and ``(w, b) -> (-w, pi / w0 - b)`` (no next-layer change), then the
    sign flip (with the next layer's column) so that ``b`` lies in ``[0, pi / (2 w0)]`` (ties at
    ``b = 0`` broken by the sign of the first nonzero incoming weight). Correct for the
    ``sin(w0 (W x + b))`` parameterisation, unlike the published script (docs/methods.md 8.4)."""

    def __call__(self, graph):
        g = graph.clone()
        src, dst = g.edge_index
        for k, nodes in _layers(g):
            ns = g.arch.nodesets[k]
            if ns["act"] != "sin" or ns["group"] != "sign":
                continue
            w0 = float(ns["act_params"].get("w0", 1.0))
            T = 2 * math.pi / w0
            idx = torch.arange(nodes.start, nodes.stop)
            b = g.x[idx, 0].double()
            b = torch.remainder(b + T / 2, T) - T / 2              # b in [-T/2, T/2)
            reflect = b.abs() > T / 4                              # (w, b) -> (-w, T/2 - b)
            b = torch.where(reflect, torch.remainder(T / 2 - b + T / 2, T) - T / 2, b)
            incoming = torch.isin(dst, idx)
            flip_in = torch.zeros(g.num_nodes, dtype=torch.bool)
            flip_in[idx[reflect]] = True
            g.edge_attr[incoming & flip_in[dst]] *= -1
            # the sign flip (coupled with the next layer) makes b >= 0
            first = torch.zeros(len(idx), dtype=g.edge_attr.dtype)
            for i, node in enumerate(idx.tolist()):
                w = g.edge_attr[dst == node].reshape(-1)
                nz = w[w != 0]
                first[i] = nz[0] if len(nz) else 0
            neg = (b < 0) | ((b == 0) & (first < 0))
            q = torch.ones(g.num_nodes, dtype=torch.float64)
            q[idx[neg]] = -1.0
            g.x[idx, 0] = b.to(g.x.dtype)
            g = converters.Action(torch.arange(g.num_nodes), q).apply(g)
        return g


class ReluScaleCanonical:
    """Canonical form of positive rescalings: layer by layer, each ``scale`` neuron's incoming
    weights and bias are scaled to unit norm (the next layer absorbs the inverse factor).
    Neurons with zero incoming parameters are left alone."""

    def __call__(self, graph):
        g = graph.clone()
        dst = g.edge_index[1]
        for k, nodes in _layers(g):
            if g.arch.nodesets[k]["group"] not in ("scale", "linear"):
                continue
            if g.arch.nodesets[k]["group"] == "linear":
                continue    # a sign is free there too; only positive scales are removed
            idx = torch.arange(nodes.start, nodes.stop)
            norms = torch.zeros(len(idx), dtype=torch.float64)
            sq = g.edge_attr.double().square().sum(1)
            norms.index_add_(0, dst[torch.isin(dst, idx)] - nodes.start,
                             sq[torch.isin(dst, idx)])
            norms += g.x[idx].double().square()[:, 0]
            norms = norms.sqrt()
            q = torch.ones(g.num_nodes, dtype=torch.float64)
            q[idx] = torch.where(norms > 0, 1.0 / norms, torch.ones_like(norms))
            g = converters.Action(torch.arange(g.num_nodes), q).apply(g)
        return g
