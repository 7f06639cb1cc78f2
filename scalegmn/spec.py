"""What a metanetwork must know at construction, read from an example graph, batch or ArchSpec."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from converters import ArchSpec
from converters import ops as _rules
from converters.graph import archs_of
from converters.groups import NODE_FEATURES
from converters.layout import layout


@dataclass(frozen=True)
class SpecInfo:
    """Sizes a backend is built for: the largest input/output neuron counts, node-set count,
    kernel grid and node-feature count over the architectures it will read, and their groups."""

    n_in: int
    n_out: int
    n_layers: int
    kernel_shape: tuple
    n_features: int
    groups: frozenset
    archs: tuple = ()
    #: rows of the edge-type embedding: the three original types (weight, residual, norm), or
    #: every type up to the last one the architectures use (recurrent, state)
    n_edge_types: int = 3
    #: whether some architecture has inverse pairs (``Layout.inverse_pairs``: an attention's query
    #: and key neurons, an embedding and its tied head)
    inverse_pairs: bool = False
    #: whether some architecture has attention heads (``OpRule.attention_heads``)
    attention_heads: bool = False

    @property
    def fe(self) -> int:
        n = 1
        for k in self.kernel_shape:
            n *= k
        return n

    @property
    def feature_names(self) -> tuple:
        return tuple(NODE_FEATURES)[:self.n_features]

    @classmethod
    def of(cls, spec) -> "SpecInfo":
        if isinstance(spec, SpecInfo):
            return spec
        if isinstance(spec, ArchSpec):
            archs = [spec]
        elif isinstance(spec, (list, tuple)) and all(isinstance(a, ArchSpec) for a in spec):
            archs = list(spec)
        elif hasattr(spec, "arch"):
            archs = list(archs_of(spec))
        else:
            raise TypeError(f"spec must be a ParameterGraph, a Batch or an ArchSpec, got "
                            f"{type(spec).__name__}")
        uniq = list({a.hash: a for a in archs}.values())
        n_in = max(a.nodesets[0]["size"] for a in uniq)
        n_out = max(sum(ns["size"] for ns in a.nodesets if ns["role"] == "output") for a in uniq)
        shapes = [tuple(a.kernel_shape) for a in uniq if a.kernel_shape]
        ranks = {len(s) for s in shapes}
        if len(ranks) > 1:
            raise ValueError("architectures mix 1d/2d/3d kernels")
        kshape = tuple(max(s[d] for s in shapes) for d in range(ranks.pop())) if shapes else ()
        return cls(n_in=n_in, n_out=n_out, n_layers=max(len(a.nodesets) for a in uniq),
                   kernel_shape=kshape, n_features=max(len(a.node_features) for a in uniq),
                   groups=frozenset(ns["group"] for a in uniq for ns in a.nodesets),
                   archs=tuple(uniq), n_edge_types=max(
                       [3] + [int(layout(a).edge_type.max()) + 1 for a in uniq
                              if layout(a).num_edges]),
                   inverse_pairs=any(len(layout(a).inverse_pairs) for a in uniq),
                   attention_heads=any(has_attention_heads(a) for a in uniq))


@functools.lru_cache(maxsize=64)
def has_attention_heads(arch: ArchSpec) -> bool:
    """Whether an op of ``arch`` computes attention heads (``OpRule.attention_heads``); cached,
    since every forward pass checks its batch against the model's ``SpecInfo``."""
    return any(_rules.rule_for(op["op"]).attention_heads(op, layout(arch).parts)
               for op in arch.ops)


@functools.lru_cache(maxsize=64)
def feature_mask(arch: ArchSpec) -> torch.Tensor:
    """(N, Fx) bool: which node-feature slots of ``arch`` hold a parameter or buffer."""
    lay = layout(arch)
    mask = torch.zeros(lay.num_nodes, lay.fx, dtype=torch.bool)
    for f in lay.features:
        mask[f.start:f.start + f.size, f.column] = True
    return mask
