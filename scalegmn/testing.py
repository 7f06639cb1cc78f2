"""An equivariance test harness for any metanetwork on parameter graphs (like e3nn's).

``assert_equivariant`` holds a model to the groups it claims (``net.claimed_groups()``);
``assert_sensitive`` is the negative control: it shows the model *does* react to what it must not
ignore, so a passing equivariance test is not the trivial one of a constant model.

Errors as in docs/design.md 6: per sample ``max|F(g x) - g F(x)| / max(max|F(x)|, tiny)``,
reported per group component, in float64, eval mode, on copies.
"""
from __future__ import annotations

import copy
import math

import torch
from torch_geometric.utils import scatter

import converters
from converters.graph import batch_vector
from converters.groups import GROUP_ID, GROUPS, ROLES

from .edits import is_edit


def _prepare(net, batch):
    net = copy.deepcopy(net).double().eval()
    batch = batch.clone()
    batch.x, batch.edge_attr = batch.x.double(), batch.edge_attr.double()
    return net, batch



def _per_graph_max(v, index, n):
    v = v.abs().reshape(v.shape[0], -1).amax(1) if v.numel() else v.new_zeros(v.shape[0])
    return scatter(v, index, dim=0, dim_size=n, reduce="max")


def output_error(out_g, out, action=None, batch=None) -> float:
    """Largest per-sample relative error between ``F(g x)`` and ``g F(x)``."""
    if not is_edit(out_g):
        num = (out_g - out).abs().reshape(out.shape[0], -1).amax(1)
        den = out.abs().reshape(out.shape[0], -1).amax(1).clamp_min(torch.finfo(out.dtype).tiny)
        return float((num / den).max())
    # equivariant: compare raw deltas, transformed by the action
    d = copy.copy(batch)
    d.x, d.edge_attr = out.delta_x, out.delta_edge_attr
    gd = action.apply(d)
    bv = batch_vector(batch)
    B = batch.num_graphs if hasattr(batch, "num_graphs") else 1
    be = bv[batch.edge_index[1]]
    num = torch.maximum(_per_graph_max(out_g.delta_x - gd.x, bv, B),
                        _per_graph_max(out_g.delta_edge_attr - gd.edge_attr, be, B))
    den = torch.maximum(_per_graph_max(gd.x, bv, B), _per_graph_max(gd.edge_attr, be, B))
    return float((num / den.clamp_min(torch.finfo(den.dtype).tiny)).max())


def _component(action, batch, keep: str):
    """Restrict ``action`` to one component: ``perm`` (permutation, q = 1), a group name (its
    factors only, no permutation), or ``all``."""
    if keep == "all":
        return action
    N = batch.num_nodes
    if keep == "perm":
        return converters.Action(action.perm, torch.ones(N, dtype=torch.float64))
    q = torch.where(batch.group == GROUP_ID[keep], action.q, torch.ones_like(action.q))
    return converters.Action(torch.arange(N), q)


def equivariance_errors(net, batch, n_actions: int = 5, scale_range=(1e-3, 1e3),
                        generator=None) -> dict:
    """``{component: max error}`` over ``n_actions`` coupled random actions per component.

    Components: ``perm`` and every claimed non-fixed group present in the batch, then ``all``
    (the full action) when every group in the batch is claimed. Actions are drawn on the host
    and applied on the batch's device."""
    net, batch = _prepare(net, batch)
    host = copy.copy(batch).cpu()     # PyG's .to/.cpu move in place: a copy
    claimed = set(net.claimed_groups())
    present = {GROUPS[int(g)] for g in torch.unique(batch.group)}
    comps = [g for g in ("perm", "sign", "scale", "linear") if g in claimed and
             (g == "perm" or g in present)]
    if present <= claimed:
        comps.append("all")
    gen = generator or torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = net(batch)
        errors = {}
        for comp in comps:
            worst = 0.0
            for _ in range(n_actions):
                a = _component(converters.sample_action(host, gen, scale_range), host, comp)
                if comp != "perm" and comp != "all":
                    a = _only_claimed(a, host, claimed)
                out_g = net(a.apply(batch))
                worst = max(worst, output_error(out_g, out, a, batch))
            errors[comp] = worst
    return errors


def _only_claimed(a, batch, claimed):
    ok = torch.tensor([GROUPS[int(g)] in claimed for g in batch.group])
    return converters.Action(a.perm, torch.where(ok, a.q, torch.ones_like(a.q)))


def assert_equivariant(net, batch, n_actions: int = 5, rtol: float = 1e-9,
                       scale_range=(1e-3, 1e3), generator=None) -> dict:
    """Raise ``AssertionError`` unless every component's error is below ``rtol``; return them."""
    errors = equivariance_errors(net, batch, n_actions, scale_range, generator)
    bad = {k: v for k, v in errors.items() if not v < rtol}
    if bad:
        raise AssertionError(f"not equivariant (rtol {rtol:g}): {bad}; all errors {errors}")
    return errors


# -- negative controls ---------------------------------------------------------------------------
def _uncoupled(batch, gen):
    """Scale each hidden scale/linear neuron's incoming weights and bias by q, *without*
    dividing its outgoing weights (not a symmetry); flip sign neurons the same way."""
    g = batch.group
    N = batch.num_nodes
    u = torch.rand(N, generator=gen, dtype=torch.float64)
    q = torch.ones(N, dtype=torch.float64)
    scal = (g == GROUP_ID["scale"]) | (g == GROUP_ID["linear"])
    q[scal] = torch.exp(math.log(0.2) + u[scal] * (math.log(5) - math.log(0.2)))
    q[g == GROUP_ID["sign"]] = -1.0
    out = batch.clone()
    out.x = batch.x * q[:, None]
    out.edge_attr = batch.edge_attr * q[batch.edge_index[1]][:, None]
    return out


def _io_permuted(batch):
    """Swap the first two output neurons of each graph (or inputs when there is one output)."""
    for role in ("output", "input"):
        nodes = (batch.role == ROLES.index(role)).nonzero().squeeze(1)
        bv = batch_vector(batch)[nodes]
        perm = torch.arange(batch.num_nodes)
        swapped = False
        for b in torch.unique(bv):
            mine = nodes[bv == b]
            if len(mine) >= 2:
                perm[mine[0]], perm[mine[1]] = mine[1], mine[0]
                swapped = True
        if swapped:
            return converters.Action(perm, torch.ones(batch.num_nodes,
                                                      dtype=torch.float64)).apply(batch)
    raise ValueError("no graph in the batch has two input or two output neurons")


def _unclaimed(batch, claimed, gen):
    """A coupled action with factors outside what the model claims for each node's group
    (random per neuron, so that no per-layer normalisation can undo it)."""
    N = batch.num_nodes
    mag = torch.exp(math.log(0.2) + torch.rand(N, generator=gen, dtype=torch.float64)
                    * (math.log(5.0) - math.log(0.2)))
    outside_claim = {"scale": -mag, "sign": 1.0 + mag, "perm": 1.0 + mag}
    inside_group = {"scale": mag, "sign": -torch.ones(N, dtype=torch.float64), "linear": -mag}
    q = torch.ones(N, dtype=torch.float64)
    for gid, name in enumerate(GROUPS):
        f = outside_claim.get(name) if name in claimed else inside_group.get(name)
        sel = batch.group == gid
        if f is not None and bool(sel.any()):
            q[sel] = f[sel] if isinstance(f, torch.Tensor) else f
    if bool((q == 1).all()):
        raise ValueError("no node of the batch admits an action outside the model's claim")
    return converters.Action(torch.arange(N), q).apply(batch)


def _pairs_alike(batch, gen):
    """A sampled action whose inverse pairs (an attention's query and key dimensions) take one
    factor each instead of reciprocal ones: ``Q s, K s``, which multiplies the attention scores
    by ``s^2`` (a change of the network's function)."""
    from converters.actions import _inverse_pairs
    pairs = _inverse_pairs(batch, batch_vector(batch))
    if not len(pairs):
        raise ValueError("the batch has no inverse pairs (attention queries and keys)")
    action = converters.sample_action(batch, generator=gen)
    q = action.q.clone()
    q[pairs[:, 1]] = q[pairs[:, 0]]
    return converters.Action(action.perm, q).apply(batch)


def _different(batch, gen):
    out = batch.clone()
    noise = torch.randn(batch.edge_attr.shape, generator=gen, dtype=torch.float64)
    out.edge_attr = batch.edge_attr + 0.5 * noise * batch.edge_mask
    return out


def sensitivity(net, batch, kind: str, generator=None) -> float:
    """Relative output change under a transformation the model must *not* ignore.

    ``kind``: ``uncoupled`` (rows scaled without compensating the next layer), ``io_permutation``
    (output/input neurons swapped), ``unclaimed`` (factors outside the claimed group), or
    ``pairs_alike`` (an attention's queries and keys scaled alike instead of reciprocally), or
    ``different`` (another network). The changed batch is made on the host and moved to the
    batch's device."""
    net, batch = _prepare(net, batch)
    gen = generator or torch.Generator().manual_seed(0)
    host = copy.copy(batch).cpu()     # PyG's .to/.cpu move in place: a copy
    if kind == "uncoupled":
        other = _uncoupled(host, gen)
    elif kind == "io_permutation":
        other = _io_permuted(host)
    elif kind == "unclaimed":
        other = _unclaimed(host, set(net.claimed_groups()), gen)
    elif kind == "pairs_alike":
        other = _pairs_alike(host, gen)
    elif kind == "different":
        other = _different(host, gen)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    other = other.to(batch.edge_index.device)
    with torch.no_grad():
        out, out_o = net(batch), net(other)
    if is_edit(out):
        out, out_o = (torch.cat([out.delta_x.reshape(-1), out.delta_edge_attr.reshape(-1)]),
                      torch.cat([out_o.delta_x.reshape(-1), out_o.delta_edge_attr.reshape(-1)]))
        return float((out_o - out).abs().max() / out.abs().max().clamp_min(
            torch.finfo(out.dtype).tiny))
    return output_error(out_o, out)


def assert_sensitive(net, batch, kind: str, threshold: float = 1e-6, generator=None) -> float:
    """Raise ``AssertionError`` unless the model's output changes by more than ``threshold``."""
    change = sensitivity(net, batch, kind, generator)
    if not change > threshold:
        raise AssertionError(f"model ignores a '{kind}' change (relative change {change:.2e})")
    return change


# -- devices ---------------------------------------------------------------------------------------
def run_on_device(net, batch, device="meta", backward: bool = True):
    """Run ``net`` on ``batch`` with both moved to ``device`` (forward, and backward of the
    summed outputs with ``backward``); return the output.

    On ``"meta"`` (no data, no GPU needed) this finds the two device defects a GPU would show:
    a tensor made inside ``forward`` without ``device=`` (PyTorch refuses to mix a host tensor
    with a meta one, as it refuses host and CUDA tensors) and a host synchronisation
    (``.item()``, ``.tolist()``, ``int(t)`` cannot read a meta tensor). Boolean-mask indexing,
    whose output size depends on the data, is allowed (its size is taken as the mask's)."""
    import torch.fx.experimental._config as fx_config
    net = copy.deepcopy(net).to(device)
    batch = copy.copy(batch).to(device)   # PyG's .to moves in place
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        out = net(batch)
        values = out if not is_edit(out) else torch.cat(
            [out.delta_x.reshape(-1), out.delta_edge_attr.reshape(-1)])
        if values.device.type != torch.device(device).type:
            raise AssertionError(f"output on {values.device}, expected {device}")
        if backward:
            values.sum().backward()
    return out
