"""The one configuration dataclass shared by every backend and by the YAML files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import yaml


@dataclass
class ModelConfig:
    """Hyper-parameters of a metanetwork (defaults: the paper's common settings).

    backend: ``scalegmn``, ``scalegmn-b``, ``gmn``, ``monomial-nfn``, ``magep-nfn``, ``np``,
    ``hnp``, ``statnn`` or ``mlp`` (``scalegmn.registry.backends()``).
    task: ``invariant`` (``(B, out_dim)``) or ``equivariant`` (an edited ``Batch``).
    readout: ``full_graph`` (pooled ScaleInv of hidden nodes + I/O states) or ``last_layer``
    (output and input neuron states only).
    sign_inv: ``symmetrize``, ``canonicalize`` or ``abs``; scale_inv: ``normalize`` (``none`` is a
    deliberately broken variant for negative controls).
    backward_edges (ScaleGMN-B): ``reciprocal`` (1/W, exact zeros and padding masked),
    ``division_free``, or ``forward`` (the published code's bug, for negative controls only).
    By default 1/W is used only on edges with a ``scale``/``linear`` endpoint (W is exact for sign
    endpoints); ``reciprocal_on_sign`` uses 1/W on every edge (the simulation check needs it).
    engine: ``auto`` (dense when the batch has one architecture), ``sparse`` or ``dense``.
    Parameter-sharing backends: ``channels`` lists the channels of each equivariant layer
    (default ``[hidden] * layers``; MAGEP-NFN uses ``hidden`` channels in ``layers`` polynomial
    layers), ``head_hidden`` the width of the invariant head (default ``hidden``), ``io_embed``
    the NP input/output embeddings.
    """

    backend: str = "scalegmn"
    task: str = "invariant"
    out_dim: int = 1
    hidden: int = 128
    layers: int = 4
    dropout: float = 0.0
    residual: bool = True
    layer_norm: bool = True
    readout: str = "full_graph"
    sign_inv: str = "symmetrize"
    scale_inv: str = "normalize"
    backward_edges: str = "reciprocal"
    reciprocal_on_sign: bool = False     # also 1/W on edges whose endpoints only flip signs
    io_embeddings: bool = True
    layer_embeddings: bool = True
    edge_type_embeddings: bool = True
    input_norm: Optional[bool] = None    # default: on for gmn, off otherwise
    edit_init: float = 0.01
    data_scale: bool = True      # per-layer input scales from the example batch's magnitudes
    # the published ScaleGMN's choices where ours differ (scalegmn/published_style.py; all three
    # with data_scale: false in the train config mnist_inr_scalegmn_published_style)
    layer_scales: bool = True    # learned per-node-set input scales (false: none, as published)
    init: str = "near_identity"  # or torch_default: PyTorch's init of every Linear/LayerNorm
    backward_edge_updates: str = "every_group"   # or scale_only (ScaleGMN-B, as published)
    engine: str = "auto"
    channels: Optional[list] = None      # parameter-sharing backends: channels per layer
    head_hidden: Optional[int] = None    # parameter-sharing backends: invariant head width
    io_embed: bool = True                # NP: learned input/output embeddings
    # speed and memory (ScaleGMN; results equal to rounding either way; docs/performance.md)
    checkpoint: bool = False     # memory-lean: recompute each layer (and, with the dense engine,
    checkpoint_chunk: int = 16   # its edge functions in chunks of this many networks) in backward
    compile: bool = False        # torch.compile the message-passing layers (eager if that fails)
    prune_last_layer: bool = True    # readout last_layer: skip last-layer messages it never reads
    fused: bool = True           # ScaleEq's fused evaluation (False: textbook, same function)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        choices = {"task": ("invariant", "equivariant"), "readout": ("full_graph", "last_layer"),
                   "sign_inv": ("symmetrize", "canonicalize", "abs"),
                   "scale_inv": ("normalize", "none"),
                   "backward_edges": ("reciprocal", "division_free", "forward"),
                   "engine": ("auto", "sparse", "dense"),
                   "init": ("near_identity", "torch_default"),
                   "backward_edge_updates": ("every_group", "scale_only")}
        for k, allowed in choices.items():
            if getattr(self, k) not in allowed:
                raise ValueError(f"config {k}={getattr(self, k)!r}; choose from {allowed}")
        if self.checkpoint_chunk < 1:
            raise ValueError("checkpoint_chunk must be positive")
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path) -> "ModelConfig":
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        return cls.from_dict(data.get("model", data))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
