"""The op table: one ``OpRule`` per op kind (see ``converters.ops.base``).

``RULES`` maps ``op["op"]`` to its rule; ``FORMS`` lists every rule the tracer consults, in order
(the tracing-only ``Alias`` included). Adding a layer kind is one new module here with an
``OpRule`` subclass, registered below (docs/design.md, "Adding a layer kind").
"""
from __future__ import annotations

from typing import Callable, Optional

from ..errors import UnsupportedLayerError
from .activation import Act
from .alias import Alias
from .attention import Attention, ExtraInput
from .axes import Permute, Shape, View
from .base import (Block, Edges, FeatureSlot, OpRule, ParamAction, SymmetryState, UnionFind,
                   kernel_slots)
from .cat import Cat
from .conv import Conv
from .conv_transpose import ConvTranspose
from .embedding import Embedding, Position, Tie
from .endpoints import Input, Output
from .linear import Linear
from .mha import MultiheadAttention
from .norm import BatchNorm, LayerNorm
from .pool import Mean, Pool
from .prelu import PReLU
from .product import GLU, Half, Mul
from .recurrent import Recurrent, Select
from .reshape import Flatten
from .residual import Add
from .sample_norm import GroupNorm, InstanceNorm, RMSNorm
from .transformer import TransformerEncoder
from .scalar import Scalar
from .softmax import Softmax
from .tokens import Amax, Arange, Index

#: op kind -> rule
RULES: dict = {}
#: every rule the tracer asks, in order
FORMS: list = []


def register(rule: OpRule) -> OpRule:
    """Add ``rule`` to the table (its ``kind`` must be new; ``kind`` None: tracing only)."""
    if rule.kind is not None:
        if rule.kind in RULES:
            raise ValueError(f"op kind {rule.kind!r} is already registered")
        RULES[rule.kind] = rule
    FORMS.append(rule)
    _MODULE_RULE.clear()
    return rule


_MODULE_RULE: dict = {}


def rule_for(kind: str) -> OpRule:
    """The rule of op kind ``kind``; ``UnsupportedLayerError`` for an unknown kind (an
    ``ArchSpec`` written by another version)."""
    try:
        return RULES[kind]
    except KeyError:
        raise UnsupportedLayerError("<ArchSpec>", str(kind),
                                    f"unknown op kind; known: {sorted(RULES)}") from None


def module_rule(cls: type) -> Optional[OpRule]:
    """The rule reading ``nn.Module`` type ``cls`` as a leaf (exact type), or None."""
    if not _MODULE_RULE:
        for r in FORMS:
            for t in r.modules:
                _MODULE_RULE.setdefault(t, r)
    return _MODULE_RULE.get(cls)


def function_rule(fn: Callable, name: str) -> Optional[OpRule]:
    """The rule reading the traced function ``fn`` (named ``name``), or None."""
    return next((r for r in FORMS if r.matches_function(fn, name)), None)


def method_rule(name: str) -> Optional[OpRule]:
    """The rule reading the ``Tensor`` method ``name``, or None."""
    return next((r for r in FORMS if r.matches_method(name)), None)


def describe() -> str:
    """The op table as text: one entry per registered op kind with its rule's ``doc`` (the keys
    an op of that kind holds in an ``ArchSpec``)."""
    width = max(len(k) for k in RULES)
    return "\n".join(f"{kind:<{width}}  {rule.doc}" for kind, rule in RULES.items())


def supported_modules() -> set:
    """Every ``nn.Module`` type the tracer reads as a leaf."""
    module_rule(object)
    return set(_MODULE_RULE)


for _rule in (Input(), Output(), Linear(), Conv(), BatchNorm(), LayerNorm(), Act(), PReLU(),
              Pool(), Flatten(), Mean(), Scalar(), Add(), Cat(), Alias(), ConvTranspose(),
              GroupNorm(), InstanceNorm(), RMSNorm()):
    register(_rule)
for _rule in (View(), Permute(), Shape()):   # token-wise data: axes moved, split, merged
    register(_rule)
register(Softmax())
for _rule in (Embedding(), Position(), Tie()):   # token ids, learned positions, tied weights
    register(_rule)
for _rule in (Mul(), GLU(), Half()):   # products of two branches, a Linear's halves
    register(_rule)
for _rule in (Attention(), MultiheadAttention(), TransformerEncoder(), ExtraInput()):
    register(_rule)
for _rule in (Index(), Amax(), Arange()):   # token axes indexed, max over them, positions
    register(_rule)
for _rule in (Recurrent(), Select()):   # recurrent layers and indexing their results
    register(_rule)

__all__ = ["RULES", "FORMS", "register", "rule_for", "describe", "module_rule", "function_rule",
           "method_rule", "supported_modules", "OpRule", "Block", "Edges", "FeatureSlot",
           "ParamAction", "SymmetryState", "UnionFind", "kernel_slots"]
