"""``scalegmn.build``: every backend from one config and the architecture it will read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from .config import ModelConfig, ScaleGMNConfig, WeightSpaceConfig

if TYPE_CHECKING:       # torch is imported by the factories, when a model is built
    import torch.nn as nn

_BACKENDS: dict = {}
_CONFIGS: dict = {}


def register(name: str, config: type = ModelConfig):
    """Decorator: register ``factory(cfg, spec) -> nn.Module`` as backend ``name``; ``config``
    is the ``ModelConfig`` class (or subclass, holding the backend's own options) it reads."""
    if not (isinstance(config, type) and issubclass(config, ModelConfig)):
        raise TypeError(f"register({name!r}): config must be a ModelConfig subclass, "
                        f"got {config!r}")

    def wrap(factory: Callable):
        _BACKENDS[name] = factory
        _CONFIGS[name] = config
        return factory
    return wrap


def backends() -> tuple:
    return tuple(sorted(_BACKENDS))


def config_class(backend: str) -> type:
    """The config class backend ``backend`` reads; ``ValueError`` for an unknown backend."""
    if backend not in _CONFIGS:
        raise ValueError(f"unknown backend {backend!r}; available: {list(backends())}")
    return _CONFIGS[backend]


def build(backend: Optional[str] = None, task: Optional[str] = None, spec=None,
          config: Optional[ModelConfig] = None, **overrides) -> nn.Module:
    """A metanetwork sized for ``spec`` (an example ``ParameterGraph``, a ``Batch`` or an
    ``ArchSpec``).

    ``config``: a ``ModelConfig`` of the backend's family, used as given; ``backend`` and ``task``
    default to its own (without a config: ``scalegmn``, ``invariant``) and may not contradict it.
    Keyword ``overrides`` change fields (flat keys, execution options included:
    ``build("scalegmn", spec=g, out_dim=10, hidden=64, engine="dense")``). An invariant model
    needs ``out_dim``."""
    if config is not None and not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    for key, given in (("backend", backend), ("task", task)):
        if config is not None and given is not None and given != getattr(config, key):
            raise ValueError(f"build({key}={given!r}) contradicts config.{key}="
                             f"{getattr(config, key)!r}: pass one of them")
    backend = backend or (config.backend if config is not None else "scalegmn")
    config_class(backend)
    if spec is None:
        raise ValueError("build needs spec= (an example graph, batch or ArchSpec)")
    if config is None:
        cfg = ModelConfig.from_dict({"backend": backend, "task": task or "invariant",
                                     **overrides})
    else:
        cfg = config.replace(**overrides) if overrides else config
        if not isinstance(cfg, config_class(backend)):
            raise ValueError(f"backend {backend!r} reads a {config_class(backend).__name__}, "
                             f"got a {type(cfg).__name__}")
    if cfg.task == "invariant" and cfg.out_dim is None:
        raise ValueError(f"an invariant {backend} model needs out_dim (the size of its output; "
                         f"scalegmn train sets it from the data)")
    return _BACKENDS[backend](cfg, spec)


def count_parameters(net: nn.Module) -> dict:
    """``{"trainable": n, "frozen": n, "buffers": n}`` element counts."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in net.buffers())
    return {"trainable": trainable, "frozen": frozen, "buffers": buffers}


@register("scalegmn", config=ScaleGMNConfig)
def _scalegmn(cfg, spec):
    from .gmn import ScaleGMN
    return ScaleGMN(cfg, spec, bidirectional=False)


@register("scalegmn-b", config=ScaleGMNConfig)
def _scalegmn_b(cfg, spec):
    from .gmn import ScaleGMN
    return ScaleGMN(cfg, spec, bidirectional=True)


@register("gmn", config=ScaleGMNConfig)
def _gmn(cfg, spec):
    from .gmn import ScaleGMN
    return ScaleGMN(cfg, spec, bidirectional=False, permutation_only=True)


@register("mlp")
def _mlp(cfg, spec):
    from .baselines import FlatMLP
    return FlatMLP(cfg, spec)


def _weight_space_backend(cls_name: str, **kwargs):
    def factory(cfg, spec):
        from . import nfn
        return getattr(nfn, cls_name)(cfg, spec, **kwargs)
    return factory


for _name, _cls, _kw in (("monomial-nfn", "MonomialNFN", {}), ("magep-nfn", "MagepNFN", {}),
                         ("np", "NeuronSetNFN", {"fixed_io": False}),
                         ("hnp", "NeuronSetNFN", {"fixed_io": True}), ("statnn", "StatNN", {})):
    register(_name, config=WeightSpaceConfig)(_weight_space_backend(_cls, **_kw))
