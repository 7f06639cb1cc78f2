"""Saving and loading graphs safely (``torch.load(..., weights_only=True)``) and to networkx."""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Union

import networkx as nx
import torch

from .archspec import ArchSpec
from .graph import NODE_FIELDS, ParameterGraph, pad_shape

_TENSORS = ("x", "edge_index", "edge_attr", "edge_mask", "edge_type") + NODE_FIELDS
_FORMAT = "converters.ParameterGraph/1"


def save_graph(graph: ParameterGraph, path: Union[str, os.PathLike]) -> None:
    """Write ``graph`` to ``path`` atomically (plain tensors and the arch as JSON), in
    ``torch.save(obj, path)``'s order. The old order ``save_graph(path, graph)`` still works, with
    a ``DeprecationWarning``."""
    if isinstance(graph, (str, os.PathLike)) and isinstance(path, ParameterGraph):
        warnings.warn("save_graph(path, graph) is deprecated: call save_graph(graph, path), the "
                      "order of torch.save(obj, path)", DeprecationWarning, stacklevel=2)
        graph, path = path, graph
    if not isinstance(graph, ParameterGraph) or isinstance(getattr(graph, "arch", None), list):
        raise TypeError(f"save_graph(graph, path) takes one ParameterGraph, got "
                        f"{type(graph).__name__} (a Batch: save batch.to_data_list() one by one)")
    payload = {"format": _FORMAT, "arch": graph.arch.to_json(),
               "pad_shape": list(pad_shape(graph))}
    payload.update({k: graph[k] for k in _TENSORS})
    extra = {k: graph[k] for k in graph.keys() if k not in _TENSORS and k not in
             ("arch", "pad_shape", "num_nodes") and isinstance(graph[k], torch.Tensor)}
    payload["extra"] = extra
    atomic_save(payload, path)


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)      # no reader elsewhere: set and restore
    os.umask(mask)
    return mask


def atomic_write(path, write, mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file in the same folder, flush it to disk, then rename
    it to ``path``: a reader never sees a half-written file, and an interrupted write leaves the
    old file intact. The file gets the mode of the file it replaces, else the one ``open`` would
    give (0666 less the umask), not the temporary file's 0600."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        perm = os.stat(path).st_mode & 0o7777
    except OSError:
        perm = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, perm)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_graph(path) -> ParameterGraph:
    """Read a graph written by ``save_graph`` (``weights_only=True``: runs no code)."""
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise ValueError(f"cannot read graph file '{path}': {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"'{path}' is not a graph written by converters.save_graph")
    missing = [k for k in _TENSORS if k not in payload]
    if missing:
        raise ValueError(f"graph file '{path}' lacks {missing}")
    arch = ArchSpec.from_json(payload["arch"])
    extra = dict(payload.get("extra", {}))
    extra.setdefault("edge_tie", _edge_tie(arch))   # files written before the field existed
    g = ParameterGraph(arch=arch, num_nodes=payload["x"].shape[0],
                       **{k: payload[k] for k in _TENSORS}, **extra)
    if tuple(payload["pad_shape"]) != tuple(arch.kernel_shape):
        g.pad_shape = tuple(payload["pad_shape"])
    return g


def _edge_tie(arch: ArchSpec) -> torch.Tensor:
    """The ``edge_tie`` field of ``arch`` (structural: which edges hold one tied weight)."""
    from .layout import layout
    return layout(arch).edge_tie.clone()


def to_networkx(graph: ParameterGraph) -> nx.DiGraph:
    """A ``networkx.DiGraph`` with every attribute: nodes 0..N-1 carry ``x`` (list) and the
    per-node fields; edges carry ``edge_attr``, ``edge_mask`` (lists), ``edge_type`` and their
    ``order`` in ``edge_index``; ``G.graph`` holds the arch JSON and padding."""
    G = nx.DiGraph(arch=graph.arch.to_json(), pad_shape=list(pad_shape(graph)),
                   x_dtype=str(graph.x.dtype).replace("torch.", ""))
    x = graph.x.tolist()
    fields = {k: graph[k].tolist() for k in NODE_FIELDS}
    for n in range(graph.num_nodes):
        G.add_node(n, x=x[n], **{k: fields[k][n] for k in NODE_FIELDS})
    src, dst = graph.edge_index.tolist()
    attr, mask, etype = graph.edge_attr.tolist(), graph.edge_mask.tolist(), graph.edge_type.tolist()
    for e, (j, i) in enumerate(zip(src, dst)):
        G.add_edge(j, i, order=e, edge_attr=attr[e], edge_mask=mask[e], edge_type=etype[e])
    return G


def from_networkx(G: nx.DiGraph) -> ParameterGraph:
    """The inverse of ``to_networkx`` (exact: values are stored as Python floats)."""
    arch = ArchSpec.from_json(G.graph["arch"])
    dtype = getattr(torch, G.graph.get("x_dtype", arch.dtype))
    nodes = sorted(G.nodes)
    if nodes != list(range(len(nodes))):
        raise ValueError("nodes must be labelled 0..N-1 (as to_networkx writes them)")
    data = G.nodes
    x = torch.tensor([data[n]["x"] for n in nodes], dtype=dtype)
    fields = {k: torch.tensor([data[n][k] for n in nodes], dtype=torch.long) for k in NODE_FIELDS}
    edges = sorted(G.edges(data=True), key=lambda e: e[2]["order"])
    edge_index = torch.tensor([[e[0] for e in edges], [e[1] for e in edges]], dtype=torch.long)
    g = ParameterGraph(
        x=x, edge_index=edge_index.reshape(2, -1),
        edge_attr=torch.tensor([e[2]["edge_attr"] for e in edges], dtype=dtype),
        edge_mask=torch.tensor([e[2]["edge_mask"] for e in edges], dtype=torch.bool),
        edge_type=torch.tensor([e[2]["edge_type"] for e in edges], dtype=torch.long),
        edge_tie=_edge_tie(arch), num_nodes=len(nodes), arch=arch, **fields)
    if tuple(G.graph.get("pad_shape", arch.kernel_shape)) != tuple(arch.kernel_shape):
        g.pad_shape = tuple(G.graph["pad_shape"])
    return g
