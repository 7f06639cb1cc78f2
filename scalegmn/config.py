"""Model configurations: one dataclass per backend family, one validator.

=========================== ================================================================
class                       read by
=========================== ================================================================
``ModelConfig``             every backend: ``backend``, ``task``, ``out_dim``, ``hidden``,
                            ``layers``, ``dropout``, ``layer_norm``, ``edit_init`` (the flat
                            MLP reads only these)
``ScaleGMNConfig``          ``scalegmn``, ``scalegmn-b``, ``gmn``: the equations' options, and
                            ``execution`` (an ``ExecutionConfig``)
``ExecutionConfig``         how a ScaleGMN runs (engine, memory-lean mode, compile, fused
                            evaluation): results equal to rounding whatever they are
``WeightSpaceConfig``       ``monomial-nfn``, ``magep-nfn``, ``np``, ``hnp``, ``statnn``
=========================== ================================================================

Each backend names its config class when it is registered (``scalegmn.register(name,
config=...)``); a backend you register takes a ``ModelConfig`` subclass of your own with its
options (there is no free-form field).

``ModelConfig.from_dict`` is the one validator of a config given as a mapping (a YAML file's
``model`` section, ``--set model.key=value``): it picks the class of the mapping's ``backend``,
refuses keys that class does not read (naming the family that does), checks every value's type
and then constructs the dataclass, whose ``__post_init__`` checks the allowed values. The mapping
is flat: the execution options sit beside the others (``engine: dense``) and ``to_dict`` writes
them back the same way, so YAML files and saved runs keep one format. Configs are frozen: change
one with ``dataclasses.replace`` (or ``cfg.replace(key=value)``, which also takes the flat
execution keys).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Mapping, Optional

import yaml

TASKS = ("invariant", "equivariant")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def check_type(key: str, value, tp):
    """``value`` checked against the annotation ``tp`` (``int``, ``float``, ``str``, ``bool``,
    ``dict``, ``list``, ``Optional[...]``) and returned (an int or a numeric string for a float
    becomes a float: YAML 1.1 reads ``1e-3`` as a string). ``ValueError`` names ``key``."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return value
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and
                                              not (tp is int and isinstance(value, bool))):
        raise ValueError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    if tp is dict and not isinstance(value, dict):
        raise ValueError(f"config key '{key}' must be a mapping, got {value!r}")
    if (tp is list or origin is list) and not isinstance(value, list):
        raise ValueError(f"config key '{key}' must be a list, got {value!r}")
    return value


def _choose(cfg, key: str, allowed: tuple) -> None:
    value = getattr(cfg, key)
    if value not in allowed:
        raise ValueError(f"config {key}={value!r}; choose from {allowed}")


@dataclass(frozen=True)
class ExecutionConfig:
    """How a ScaleGMN executes; the function computed is the same to rounding.

    engine: ``auto`` (dense when the batch has one architecture), ``sparse`` or ``dense``.
    checkpoint: memory-lean mode (recompute each layer, and with the dense engine its edge
    functions in chunks of ``checkpoint_chunk`` networks, in the backward pass).
    compile: ``torch.compile`` the message-passing layers (eager if that fails).
    prune_last_layer: readout ``last_layer`` skips last-layer messages it never reads.
    fused: ScaleEq's fused evaluation (False: the textbook one)."""

    engine: str = "auto"
    checkpoint: bool = False
    checkpoint_chunk: int = 16
    compile: bool = False
    prune_last_layer: bool = True
    fused: bool = True

    def __post_init__(self):
        _choose(self, "engine", ("auto", "sparse", "dense"))
        if self.checkpoint_chunk < 1:
            raise ValueError("checkpoint_chunk must be positive")


@dataclass(frozen=True)
class ModelConfig:
    """What every backend reads (defaults: the papers' common settings).

    backend: a registered backend (``scalegmn.backends()``).
    task: ``invariant`` (``(B, out_dim)``) or ``equivariant`` (an edit of the input networks).
    out_dim: size of the invariant output; ``None``: not known yet (``scalegmn train`` sets it
    from the data; ``build`` refuses an invariant model without it).
    hidden, layers: width and depth; dropout: rate in the MLPs; layer_norm: LayerNorm in the
    MLPs; edit_init: equivariant task, the initial scale of the predicted edit."""

    backend: str = "scalegmn"
    task: str = "invariant"
    out_dim: Optional[int] = None
    hidden: int = 128
    layers: int = 4
    dropout: float = 0.0
    layer_norm: bool = True
    edit_init: float = 0.01

    def __post_init__(self):
        _choose(self, "task", TASKS)
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be positive")
        if self.out_dim is not None and self.out_dim < 1:
            raise ValueError(f"out_dim must be positive (or null: from the data), "
                             f"got {self.out_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    # -- the one validator -------------------------------------------------------------------
    @classmethod
    def keys(cls) -> tuple:
        """The flat keys of this class (execution options included)."""
        out = []
        for f in dataclasses.fields(cls):
            if f.name == "execution":
                out += [g.name for g in dataclasses.fields(ExecutionConfig)]
            else:
                out.append(f.name)
        return tuple(out)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "model") -> "ModelConfig":
        """The config of ``d["backend"]``'s family from a flat mapping (see module doc);
        ``ValueError`` naming the key (``where.key``) for an unknown key, a key of another
        family, a value of the wrong type or an unknown backend."""
        if not isinstance(d, Mapping):
            raise ValueError(f"config section '{where}' must be a mapping, got {d!r}")
        from .registry import config_class
        backend = d.get("backend", "scalegmn")
        target = config_class(backend)
        if cls is not ModelConfig and not issubclass(target, cls):
            raise ValueError(f"backend {backend!r} takes a {target.__name__}, not a "
                             f"{cls.__name__}")
        known = target.keys()
        for k in d:
            if k not in known:
                owners = [c.__name__ for c in MODEL_FAMILIES if k in c.keys()]
                hint = (f"it is a {' / '.join(owners)} option, not read by backend {backend!r}"
                        if owners else f"known: {sorted(known)}")
                raise ValueError(f"unknown config key '{where}.{k}' for backend {backend!r} "
                                 f"({hint})")
        hints = typing.get_type_hints(target)
        ex_hints = typing.get_type_hints(ExecutionConfig)
        ex_names = {g.name for g in dataclasses.fields(ExecutionConfig)}
        kwargs, ex = {}, {}
        for k, v in d.items():
            if k in ex_names and "execution" in hints:
                ex[k] = check_type(f"{where}.{k}", v, ex_hints[k])
            else:
                kwargs[k] = check_type(f"{where}.{k}", v, hints[k])
        try:
            if "execution" in hints:
                kwargs["execution"] = ExecutionConfig(**ex)
            return target(**kwargs)
        except ValueError as e:
            raise ValueError(f"config section '{where}': {e}") from e

    @classmethod
    def from_yaml(cls, path) -> "ModelConfig":
        """The config in a YAML file (its ``model`` section, or the whole file)."""
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        return cls.from_dict(data.get("model", data))

    def to_dict(self) -> dict:
        """The flat mapping ``from_dict`` reads back (execution options beside the others)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, ExecutionConfig):
                out.update(dataclasses.asdict(v))
            else:
                out[f.name] = v.copy() if isinstance(v, (list, dict)) else v
        return out

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` (flat keys: execution options included), validated."""
        return type(self).from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class ScaleGMNConfig(ModelConfig):
    """ScaleGMN, ScaleGMN-B and GMN (the permutation-only ablation).

    residual: residual connections around each layer.
    readout: ``full_graph`` (pooled ScaleInv of hidden nodes + I/O states) or ``last_layer``
    (output and input neuron states only).
    sign_inv: ``symmetrize``, ``canonicalize`` or ``abs``; scale_inv: ``normalize`` (``none`` is a
    deliberately broken variant for negative controls).
    backward_edges (ScaleGMN-B): ``reciprocal`` (1/W, exact zeros and padding masked),
    ``division_free``, or ``forward`` (the published code's bug, for negative controls only). By
    default 1/W is used only on edges with a ``scale``/``linear`` endpoint (W is exact for sign
    endpoints); ``reciprocal_on_sign`` uses 1/W on every edge (the simulation check needs it).
    pair_messages: a message between the two neurons of each inverse pair (an attention's query
    and key dimension: factors ``s`` and ``1/s``), on architectures that have them; without it
    the model cannot tell ``Q s, K / s`` (same function) from ``Q s, K s`` (``PairMessage``).
    io_embeddings, layer_embeddings, edge_type_embeddings: learned embeddings.
    input_norm: normalise the inputs (``None``: on for gmn, off otherwise).
    data_scale: per-layer input scales from the example batch's magnitudes (editing: also the
    edit head's per-layer units, so the first edits are ``edit_init`` of each layer's size).
    layer_scales, init, backward_edge_updates: ours by default; the published model's choices
    with ``False`` (the per-node-set input scales frozen at their initial value),
    ``torch_default``, ``scale_only`` (``scalegmn.published_style``).
    execution: how it runs (``ExecutionConfig``)."""

    residual: bool = True
    readout: str = "full_graph"
    sign_inv: str = "symmetrize"
    scale_inv: str = "normalize"
    backward_edges: str = "reciprocal"
    reciprocal_on_sign: bool = False
    pair_messages: bool = True
    io_embeddings: bool = True
    layer_embeddings: bool = True
    edge_type_embeddings: bool = True
    input_norm: Optional[bool] = None
    data_scale: bool = True
    layer_scales: bool = True
    init: str = "near_identity"
    backward_edge_updates: str = "every_group"
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self):
        super().__post_init__()
        for key, allowed in (("readout", ("full_graph", "last_layer")),
                             ("sign_inv", ("symmetrize", "canonicalize", "abs")),
                             ("scale_inv", ("normalize", "none")),
                             ("backward_edges", ("reciprocal", "division_free", "forward")),
                             ("init", ("near_identity", "torch_default")),
                             ("backward_edge_updates", ("every_group", "scale_only"))):
            _choose(self, key, allowed)
        if not isinstance(self.execution, ExecutionConfig):
            raise ValueError(f"execution must be an ExecutionConfig, got {self.execution!r}")


@dataclass(frozen=True)
class WeightSpaceConfig(ModelConfig):
    """The parameter-sharing backends (Monomial-NFN, MAGEP-NFN, NP, HNP, StatNN).

    channels: channels of each equivariant layer (``None``: ``[hidden] * layers``; MAGEP-NFN uses
    ``hidden`` channels in ``layers`` polynomial layers); head_hidden: width of the invariant
    head (``None``: ``hidden``); io_embed: NP's learned input/output embeddings.
    input_features: how NP and HNP read each weight/bias entry: ``raw`` (the value, one
    channel) or ``fourier`` (a fixed Gaussian Fourier feature map ``[sin(2 pi x B), cos(2 pi x
    B)]``, ``B`` of ``fourier_features`` entries drawn with standard deviation
    ``fourier_scale``: ``2 * fourier_features`` channels; docs/methods.md 5). Refused for
    Monomial-NFN and MAGEP-NFN (it would break their scale/sign equivariance) and STATNN (its
    statistics are of the raw entries)."""

    channels: Optional[list] = None
    head_hidden: Optional[int] = None
    io_embed: bool = True
    input_features: str = "raw"
    fourier_features: int = 128
    fourier_scale: float = 3.0

    #: backends that take ``input_features: fourier`` is refused for, and why
    FOURIER_REFUSED = {
        "monomial-nfn": "a Fourier map of the entries would break its scale/sign equivariance",
        "magep-nfn": "a Fourier map of the entries would break its scale/sign equivariance",
        "statnn": "its statistics are of the raw weights (there is no channel axis to widen)",
    }

    def __post_init__(self):
        super().__post_init__()
        _choose(self, "input_features", ("raw", "fourier"))
        if self.fourier_features < 1:
            raise ValueError(f"fourier_features must be positive, got {self.fourier_features}")
        if not (self.fourier_scale > 0 and math.isfinite(self.fourier_scale)):
            raise ValueError(f"fourier_scale must be a finite positive number, got "
                             f"{self.fourier_scale}")
        why = self.FOURIER_REFUSED.get(self.backend)
        if self.input_features == "fourier" and why:
            raise ValueError(f"input_features='fourier' is not available for backend "
                             f"{self.backend!r}: {why}; use np or hnp, or input_features='raw'")
        if self.channels is not None and (not self.channels or
                                          any(not isinstance(c, int) or c < 1
                                              for c in self.channels)):
            raise ValueError(f"channels must be a non-empty list of positive integers, "
                             f"got {self.channels!r}")


#: the config families shipped (a registered backend may bring its own subclass)
MODEL_FAMILIES = (ModelConfig, ScaleGMNConfig, WeightSpaceConfig)


def execution_of(cfg: ModelConfig) -> ExecutionConfig:
    """``cfg``'s execution options (the defaults for a backend without any)."""
    return getattr(cfg, "execution", None) or ExecutionConfig()


#: the keys of the pre-family config beyond the common ones (saved runs and files written before
#: the split hold every key for every backend, and ``out_dim: 1`` meant "from the data")
_LEGACY_KEYS = frozenset({
    "residual", "readout", "sign_inv", "scale_inv", "backward_edges", "reciprocal_on_sign",
    "io_embeddings", "layer_embeddings", "edge_type_embeddings", "input_norm", "data_scale",
    "layer_scales", "init", "backward_edge_updates", "engine", "channels", "head_hidden",
    "io_embed", "checkpoint", "checkpoint_chunk", "compile", "prune_last_layer", "fused"})


def upgrade_legacy(d: Mapping, infer_out_dim: bool) -> dict:
    """A model mapping saved before the per-family split (it has the key ``extra``) in today's
    form: keys the backend's family does not read are dropped (the old single config carried
    them unread, so the model built is the same), an empty ``extra`` is dropped, and
    ``out_dim: 1`` becomes ``None`` when ``infer_out_dim`` (a classification run, where the old
    config meant "from the data"). Any other mapping is returned unchanged."""
    d = dict(d)
    if "extra" not in d:
        return d
    if d.get("extra") in ({}, None):
        d.pop("extra")
    from .registry import config_class
    try:
        known = config_class(d.get("backend", "scalegmn")).keys()
    except ValueError:
        return d
    for k in list(d):
        if k in _LEGACY_KEYS and k not in known:
            d.pop(k)
    if infer_out_dim and d.get("out_dim") == 1:
        d["out_dim"] = None
    return d
