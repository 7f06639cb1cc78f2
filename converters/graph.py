"""``ParameterGraph``: one network as a PyG ``Data`` object, and the maps to and from state dicts.

Fields (docs/design.md 2.2): ``x`` (N, Fx), ``edge_index`` (2, E) as ``j -> i``, ``edge_attr``
(E, Fe), ``edge_mask`` (E, Fe), ``edge_type`` (E,), ``layer``, ``role``, ``io_index``, ``group``,
``perm_class``, ``tie``, ``act`` (all (N,) long) and ``arch`` (an ``ArchSpec``).

``edge_attr`` is padded to the graph's own largest kernel (``arch.kernel_shape``, kernels
centred); ``batch_graphs`` re-pads to the batch's largest kernel when graphs differ. ``perm_class``
and ``tie`` ids are local to each graph and stay so in a ``Batch`` (combine them with ``batch``).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Mapping, Sequence

import torch
from torch_geometric.data import Batch, Data

from .archspec import ArchSpec
from .layout import kernel_slots, layout

NODE_FIELDS = ("layer", "role", "io_index", "group", "perm_class", "tie", "act")
_LOCAL_IDS = set(NODE_FIELDS)


class ParameterGraph(Data):
    """A neural network as a graph: neurons are nodes, weights are edges (see module doc)."""

    def __inc__(self, key, value, *args, **kwargs):
        if key in _LOCAL_IDS:
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def kernel_shape(self) -> tuple:
        """The spatial shape ``edge_attr``'s feature axis is padded to."""
        return pad_shape(self)


def archs_of(g) -> tuple:
    """The ``ArchSpec`` of every network of ``g`` (a graph, or a ``Batch``), in batch order."""
    return tuple(g.arch) if isinstance(g.arch, list) else (g.arch,)


def single_arch(g, who: str = "this operation") -> ArchSpec:
    """The one architecture of ``g`` (a graph, or a ``Batch`` of networks of one architecture);
    ``ValueError`` naming ``who`` and two of the architectures otherwise."""
    archs = archs_of(g)
    first = archs[0]
    for a in archs[1:]:
        if a is not first and a != first:
            raise ValueError(f"{who} needs networks of one architecture; the batch mixes "
                             f"{first.hash} and {a.hash}")
    return first


def batch_vector(g) -> torch.Tensor:
    """(N,) the network each node belongs to (zeros for a single graph), on ``g``'s device."""
    b = getattr(g, "batch", None)
    return b if b is not None else torch.zeros(g.num_nodes, dtype=torch.long,
                                               device=g.edge_index.device)


def pad_shape(g) -> tuple:
    """Kernel grid of ``g.edge_attr`` (a graph, or a ``Batch`` of graphs padded alike)."""
    ps = getattr(g, "pad_shape", None)
    if ps is not None:   # a Batch collects one tuple per graph (batch_graphs pads them alike)
        return tuple(ps[0] if isinstance(ps, list) else ps)
    return tuple(archs_of(g)[0].kernel_shape)


def _key_shapes(arch: ArchSpec) -> dict:
    """The state-dict keys ``arch`` reads, with their shapes."""
    lay, shapes = layout(arch), {}
    for b in lay.blocks:
        if b.weight_key is not None:
            shapes[b.weight_key] = b.param_shape
    for f in lay.features:
        shapes[f.key] = f.param_shape
    return shapes


def _structure(arch: ArchSpec) -> dict:
    lay = layout(arch)
    out = {k: getattr(lay, k).clone() for k in NODE_FIELDS}
    out.update(edge_index=lay.edge_index.clone(), edge_type=lay.edge_type.clone(),
               edge_mask=lay.edge_mask.clone(), edge_tie=lay.edge_tie.clone())
    return out


def from_state_dict(state_dict: Mapping[str, torch.Tensor], arch: ArchSpec, *,
                    allow_nonfinite: bool = False) -> ParameterGraph:
    """The ``ParameterGraph`` of the network with structure ``arch`` and values ``state_dict``.

    Raises ``KeyError`` for a missing or unexpected key, ``ValueError`` for a wrong shape or (unless
    ``allow_nonfinite``) a NaN/inf value, each naming the key.
    """
    if not isinstance(arch, ArchSpec):
        raise TypeError(f"arch must be an ArchSpec, got {type(arch).__name__}")
    lay = layout(arch)
    dtype = getattr(torch, arch.dtype)
    expected = _key_shapes(arch)
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        raise KeyError(f"state_dict does not match arch {arch.hash}: missing keys {missing[:5]}, "
                       f"unexpected keys {extra[:5]}")
    sd = {}
    for k, shape in expected.items():
        t = state_dict[k]
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"state_dict key '{k}' has shape {tuple(t.shape)}, arch expects "
                             f"{tuple(shape)}")
        if t.is_floating_point() and not allow_nonfinite and not torch.isfinite(t).all():
            raise ValueError(f"state_dict key '{k}' contains NaN or inf values "
                             f"(pass allow_nonfinite=True to convert anyway)")
        sd[k] = t.detach()
    edge_attr = torch.zeros(lay.num_edges, lay.fe, dtype=dtype)
    for b in lay.blocks:
        vals = (b.edges_from_param(sd[b.weight_key].to(dtype)) if b.weight_key
                else torch.ones(b.stop - b.start, 1, dtype=dtype))
        edge_attr[b.start:b.stop, b.slots] = vals
    x = torch.zeros(lay.num_nodes, lay.fx, dtype=dtype)
    for f in lay.features:
        v = sd[f.key]
        if f.scalar:
            xv = v.to(dtype)
            if int(xv.item()) != int(v.item()):
                raise ValueError(f"'{f.key}' = {int(v.item())} is not exact in {dtype}")
            x[f.start:f.start + f.size, f.column] = xv
        elif f.shared:   # one value stored on every node of the range
            x[f.start:f.start + f.size, f.column] = v.to(dtype).expand(f.size)
        else:
            x[f.start:f.start + f.size, f.column] = v.to(dtype)
    return ParameterGraph(x=x, edge_attr=edge_attr, num_nodes=lay.num_nodes, arch=arch,
                          **_structure(arch))


def to_state_dict(graph: ParameterGraph, *, strict: bool = True) -> dict:
    """The state dict of the network ``graph`` describes (the inverse of ``from_state_dict``).

    With ``strict``, structural values must be intact: residual edges equal 1, padding is 0 and
    bias-free layers have zero bias; otherwise ``ValueError`` names the layer.
    """
    arch = graph.arch
    if isinstance(arch, list):
        raise TypeError("to_state_dict takes one graph; use batch.to_data_list() first")
    lay = layout(arch)
    kshape = pad_shape(graph)
    dtype = getattr(torch, arch.dtype)
    sd = {}
    for b in lay.blocks:
        slots = kernel_slots(b.kshape, kshape) if kshape != tuple(arch.kernel_shape) else b.slots
        vals = graph.edge_attr[b.start:b.stop][:, slots]
        if b.weight_key is None:
            if strict and not bool((vals == 1).all()):
                raise ValueError(f"residual edges of '{arch.nodesets[b.op['ns']]['name']}' were "
                                 f"edited (must stay 1)")
            continue
        # contiguous: a transposed layout (an embedding's (V, d) weight) would otherwise give a
        # strided tensor, and a matmul reading it may round differently from the original
        sd[b.weight_key] = b.param_from_edges(vals).to(dtype).clone(
            memory_format=torch.contiguous_format)
    for f in lay.features:
        v = graph.x[f.start:f.start + f.size, f.column]
        if f.shared:
            if strict and not bool((v == v[0]).all()):
                raise ValueError(f"'{f.key}' is one value stored on every node of "
                                 f"'{arch.nodesets[int(graph.layer[f.start])]['name']}', but "
                                 f"the nodes hold different values (edited unequally)")
            sd[f.key] = v[:1].to(dtype).clone()
            continue
        sd[f.key] = (v[0].round().long().clone() if f.scalar else v.to(dtype).clone())
    if strict:
        _check_structural_zeros(graph, lay, kshape)
        for key, same_as, a, b in lay.ties:   # equal up to 1 / (1 / q) rounding (8 ulp)
            va, vb = graph.edge_attr[a], graph.edge_attr[b]
            if not torch.allclose(va, vb, rtol=8 * torch.finfo(va.dtype).eps, atol=0):
                raise ValueError(f"'{key}' is the weight '{same_as}' (tied), but their edges "
                                 f"hold different values (edited unequally)")
    return sd


def _check_structural_zeros(graph, lay, kshape):
    if graph.edge_attr.shape[0]:
        mask = lay.edge_mask if kshape == tuple(lay.arch.kernel_shape) else graph.edge_mask
        if bool(torch.logical_and(graph.edge_attr != 0, ~mask).any()):
            raise ValueError("padding entries of edge_attr are nonzero (edited kernel padding)")
    claimed = torch.zeros_like(graph.x, dtype=torch.bool)
    for f in lay.features:
        claimed[f.start:f.start + f.size, f.column] = True
    bad = (graph.x != 0) & ~claimed
    if bool(bad.any()):
        n = int(bad.nonzero()[0, 0])
        name = lay.arch.nodesets[int(graph.layer[n])]["name"]
        raise ValueError(f"node feature set on '{name}' where the network has no parameter "
                         f"(e.g. a bias of a bias-free layer)")


def repad(graph: ParameterGraph, kshape: Sequence[int], fx: int) -> ParameterGraph:
    """A copy of ``graph`` with kernels centred in ``kshape`` and ``fx`` node-feature columns."""
    kshape = tuple(kshape)
    arch = graph.arch
    lay = layout(arch)
    cur = pad_shape(graph)
    g = graph.clone() if (kshape != cur or graph.x.shape[1] != fx) else graph
    if kshape != cur:
        fe = math.prod(kshape) if kshape else 1
        attr = torch.zeros(graph.edge_attr.shape[0], fe, dtype=graph.edge_attr.dtype)
        mask = torch.zeros(graph.edge_attr.shape[0], fe, dtype=torch.bool)
        for b in lay.blocks:
            old = kernel_slots(b.kshape, cur)
            new = kernel_slots(b.kshape, kshape)
            attr[b.start:b.stop, new] = graph.edge_attr[b.start:b.stop][:, old]
            mask[b.start:b.stop, new] = True
        g.edge_attr, g.edge_mask = attr, mask
        g.pad_shape = kshape
    if graph.x.shape[1] != fx:
        x = torch.zeros(graph.x.shape[0], fx, dtype=graph.x.dtype)
        x[:, :graph.x.shape[1]] = graph.x
        g.x = x
    return g


def batch_graphs(graphs: Iterable[ParameterGraph]) -> Batch:
    """Collate graphs (of any architectures) into one PyG ``Batch``.

    Kernels are re-padded (centred) to the batch's largest kernel and node features to the widest
    feature set, so graphs of different architectures batch together.
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    shapes = [pad_shape(g) for g in graphs]
    ranks = {len(s) for s in shapes if s}
    if len(ranks) > 1:
        raise ValueError(f"cannot batch graphs with {sorted(ranks)}-d kernels together")
    rank = ranks.pop() if ranks else 0
    kshape = tuple(max((s[d] for s in shapes if s), default=1) for d in range(rank))
    fx = max(g.x.shape[1] for g in graphs)
    padded = []
    for orig in graphs:
        g = repad(orig, kshape, fx)
        g = copy.copy(g) if g is orig else g  # never mutate the caller's graphs
        g.pad_shape = kshape
        padded.append(g)
    return Batch.from_data_list(padded)


class GraphLoader(torch.utils.data.DataLoader):
    """A ``DataLoader`` over ``ParameterGraph``s that collates with ``batch_graphs``."""

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, **kwargs):
        kwargs.pop("collate_fn", None)
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle,
                         collate_fn=batch_graphs, **kwargs)
