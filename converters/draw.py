"""Drawing a parameter graph (networkx + matplotlib): one column per node set."""
from __future__ import annotations

from .groups import EDGE_TYPES, GROUPS

_COLOURS = {"fixed": "#555555", "perm": "#8c6bb1", "sign": "#e6550d", "scale": "#3182bd",
            "linear": "#31a354"}


class GraphTooLargeError(ValueError):
    pass


_EDGE_STYLE = {   # edge type -> (colour, line style, curvature); residual edges are curved so
    # that an edge skipping columns does not run through the nodes it skips; recurrent edges
    # (hidden unit -> gates, backwards, and a plain RNN's self-loops) are curved the other way
    # so that they do not lie on the forward edges, and drawn as arrows (a self-loop shows)
    "weight": ("#444444", "solid", 0.0),
    "residual": ("#e7298a", "dashed", 0.3),
    "norm": ("#d62728", "solid", 0.0),
    "recurrent": ("#1b9e77", "dashdot", -0.4),
    "state": ("#7570b3", "dotted", 0.0),
}


def graph_figure(graph, max_nodes: int = 400, max_edges: int = 20000, title=None):
    """A matplotlib figure of ``graph``: one column per node set (its name below it), nodes
    coloured by symmetry group, edge width by weight norm, edge types told apart by colour and
    style (residual edges curved and dashed, recurrent edges curved the other way and
    dash-dotted, self-loops included, recurrent state edges dotted), two legends (node groups, edge types) beside the
    plot and the title above it. Raises ``GraphTooLargeError`` beyond the limits."""
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
    tallest = max(ns["size"] for ns in arch.nodesets)
    width = max(4, len(arch.nodesets) * 1.2) + 2.0       # + room for the legends
    height = max(3, tallest * 0.25) + 1.0
    fig, ax = plt.subplots(figsize=(min(width, 32), min(height, 31)))
    present = []
    for t, name in enumerate(EDGE_TYPES):
        sel = [i for i in range(e) if etype[i] == t]
        if not sel:
            continue
        present.append(name)
        colour, style, rad = _EDGE_STYLE.get(name, ("#444444", "solid", 0.0))
        G_t = nx.DiGraph([(src[i], dst[i]) for i in sel])
        widths = [0.2 + 1.5 * norms[i] for i in sel]
        if rad:
            nx.draw_networkx_edges(G_t, pos, ax=ax, edgelist=[(src[i], dst[i]) for i in sel],
                                   width=[max(w, 0.8) for w in widths], alpha=0.8, arrows=True,
                                   arrowstyle="-", style=style, edge_color=colour,
                                   connectionstyle=f"arc3,rad={rad}", node_size=40)
        else:
            nx.draw_networkx_edges(G_t, pos, ax=ax, edgelist=[(src[i], dst[i]) for i in sel],
                                   width=widths, alpha=0.35, arrows=False, style=style,
                                   edge_color=colour)
    nx.draw_networkx_nodes(G, pos, ax=ax, node_size=40, node_color=colours)
    bottom = -(tallest - 1) / 2 - 0.7
    for k, ns in enumerate(arch.nodesets):     # names below the columns, clear of the title
        ax.text(k, bottom, ns["name"], ha="right", va="top", fontsize=7, rotation=30,
                rotation_mode="anchor")
    groups = {ns["group"] for ns in arch.nodesets}
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=g)
               for g, c in _COLOURS.items() if g in groups]
    node_legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                            fontsize=7, title="node group", title_fontsize=7, frameon=False)
    ax.add_artist(node_legend)
    edge_handles = [plt.Line2D([], [], color=_EDGE_STYLE[t][0], ls=_EDGE_STYLE[t][1],
                               lw=1.5, label=t + (" (curved)" if _EDGE_STYLE[t][2] else ""))
                    for t in present if t in _EDGE_STYLE]
    ax.legend(handles=edge_handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7,
              title="edge type", title_fontsize=7, frameon=False)
    ax.set_title(title or f"{n} nodes, {e} edges", fontsize=9, pad=10)
    ax.axis("off")
    fig.tight_layout()
    return fig


def draw_graph(graph, path, max_nodes: int = 400, max_edges: int = 20000, title=None) -> str:
    """Write a PNG of ``graph`` to ``path`` (``graph_figure``: nodes coloured by symmetry
    group, edge width by weight norm, residual edges curved and dashed, legends for node groups
    and edge types). Raises ``GraphTooLargeError`` beyond the limits."""
    import matplotlib.pyplot as plt
    fig = graph_figure(graph, max_nodes, max_edges, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


__all__ = ["draw_graph", "graph_figure", "GraphTooLargeError", "GROUPS"]
