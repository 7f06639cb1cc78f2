"""Drawing a parameter graph (networkx + matplotlib): one column per node set."""
from __future__ import annotations

import torch

from .groups import EDGE_TYPES, GROUPS

_COLOURS = {"fixed": "#555555", "perm": "#8c6bb1", "sign": "#e6550d", "scale": "#3182bd",
            "linear": "#31a354"}


class GraphTooLargeError(ValueError):
    pass


def draw_graph(graph, path, max_nodes: int = 400, max_edges: int = 20000, title=None) -> str:
    """Write a PNG of ``graph`` to ``path``: nodes coloured by symmetry group, edge width by
    weight norm, residual edges dashed. Raises ``GraphTooLargeError`` beyond the limits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    n, e = graph.num_nodes, graph.edge_index.shape[1]
    if n > max_nodes or e > max_edges:
        raise GraphTooLargeError(
            f"graph has {n} nodes and {e} edges; drawing is limited to {max_nodes} nodes and "
            f"{max_edges} edges (raise the limits or convert a smaller model)")
    arch = graph.arch
    pos, colours = {}, []
    offset = 0
    for k, ns in enumerate(arch.nodesets):
        size = ns["size"]
        for i in range(size):
            pos[offset + i] = (k, (size - 1) / 2 - i)
            colours.append(_COLOURS[ns["group"]])
        offset += size
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    norms = graph.edge_attr.double().norm(dim=1)
    norms = (norms / norms.max().clamp_min(1e-12)).tolist()
    src, dst = graph.edge_index.tolist()
    etype = graph.edge_type.tolist()
    width = max(4, len(arch.nodesets) * 1.2)
    height = max(3, max(ns["size"] for ns in arch.nodesets) * 0.25)
    fig, ax = plt.subplots(figsize=(min(width, 30), min(height, 30)))
    for t, name in enumerate(EDGE_TYPES):
        sel = [i for i in range(e) if etype[i] == t]
        if not sel:
            continue
        G_t = nx.DiGraph([(src[i], dst[i]) for i in sel])
        nx.draw_networkx_edges(G_t, pos, ax=ax, width=[0.2 + 1.5 * norms[i] for i in sel],
                               alpha=0.35, arrows=False,
                               style="dashed" if name == "residual" else "solid",
                               edge_color="#d62728" if name == "norm" else "#444444")
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=40, node_color=colours)
    for k, ns in enumerate(arch.nodesets):
        ax.text(k, (max(ns["size"] for ns in arch.nodesets)) / 2 + 0.6, ns["name"], ha="center",
                fontsize=7, rotation=30)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=g)
               for g, c in _COLOURS.items() if g in {ns["group"] for ns in arch.nodesets}]
    ax.legend(handles=handles, loc="lower right", fontsize=7, title="group")
    ax.set_title(title or f"{n} nodes, {e} edges", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


__all__ = ["draw_graph", "GraphTooLargeError", "GROUPS"]
