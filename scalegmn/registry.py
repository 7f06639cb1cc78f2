"""``scalegmn.build``: every backend from one config and the architecture it will read."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .config import ModelConfig

_BACKENDS: dict = {}


def register(name: str):
    """Decorator: register ``factory(cfg, spec) -> nn.Module`` as backend ``name``."""
    def wrap(factory: Callable):
        _BACKENDS[name] = factory
        return factory
    return wrap


def backends() -> tuple:
    return tuple(sorted(_BACKENDS))


def build(backend: str = "scalegmn", task: str = "invariant", spec=None,
          config: ModelConfig | None = None, **overrides) -> nn.Module:
    """A metanetwork ``backend`` for ``task``, sized for ``spec`` (an example ``ParameterGraph``,
    a ``Batch`` or an ``ArchSpec``). Keyword overrides set ``ModelConfig`` fields."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {list(backends())}")
    if spec is None:
        raise ValueError("build needs spec= (an example graph, batch or ArchSpec)")
    base = config.to_dict() if config is not None else {}
    cfg = ModelConfig.from_dict({**base, **overrides, "backend": backend, "task": task})
    return _BACKENDS[backend](cfg, spec)


def count_parameters(net: nn.Module) -> dict:
    """``{"trainable": n, "frozen": n, "buffers": n}`` element counts."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in net.buffers())
    return {"trainable": trainable, "frozen": frozen, "buffers": buffers}


@register("scalegmn")
def _scalegmn(cfg, spec):
    from .gmn import ScaleGMN
    return ScaleGMN(cfg, spec, bidirectional=False)


@register("scalegmn-b")
def _scalegmn_b(cfg, spec):
    from .gmn import ScaleGMN
    return ScaleGMN(cfg, spec, bidirectional=True)


@register("gmn")
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
    register(_name)(_weight_space_backend(_cls, **_kw))
