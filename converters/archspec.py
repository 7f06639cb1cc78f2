"""``ArchSpec``: a frozen, JSON-serialisable description of a network's structure (no values).

An ``ArchSpec`` is a straight-line program over *values* (tensors), one op per step, plus the
*node sets* that ops create. A node set is one activation tensor's channels: the network input, the
output of a Linear/Conv, the output of a normalisation, the sum of a residual add. Every node of a
``ParameterGraph`` belongs to exactly one node set; every edge is produced by exactly one op.

Ops (``op`` key; ``in``/``out`` are value ids, ``ns`` the node set an op creates). Each kind's
rule, with everything the converter knows about it, is in ``converters.ops``; the kinds and the
keys an op of each kind holds are printed by ``print(converters.ops.describe())`` (one line per
registered rule, from its ``doc``), so the list cannot fall behind the table. The first ones:
``input`` (the network input: node set 0), ``linear``, ``conv``, ``batchnorm``, ``layernorm``,
``act``, ``pool``, ``flatten``, ``add`` (a residual sum: a new node set), ``cat``, ``output``.

The symmetry analysis (``converters.symmetry``) adds, per node set: ``role``, ``group``, ``act``
(and its ``act_params``), ``perm_cuts`` (boundaries permutations may not cross), ``align`` (node
sets that share one permutation) and ``tie`` (node sets that share permutation *and* factor); and,
only on the node sets that have them, ``inv_tie`` (reciprocal factors: an attention's queries and
keys) and ``blocks`` (``{"id", "size"}``: node sets of one id move their blocks of ``size``
channels by one permutation: an attention's heads, a GroupNorm's groups).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


class FrozenDict(dict):
    """A read-only, hashable ``dict`` (so specs can be dictionary keys and cache keys)."""

    def _ro(self, *a, **k):
        raise TypeError("ArchSpec contents are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _ro

    def __hash__(self):
        return hash(json.dumps(self, sort_keys=True))

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def freeze(obj: Any) -> Any:
    """Deep-convert dicts to ``FrozenDict`` and lists to tuples; check JSON-compatibility."""
    if isinstance(obj, Mapping):
        return FrozenDict({str(k): freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, float, str)):
        return obj
    raise TypeError(f"not JSON-serialisable in an ArchSpec: {obj!r} ({type(obj).__name__})")


def _thaw(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_thaw(v) for v in obj]
    return obj


@dataclass(frozen=True)
class ArchSpec:
    """The structure of one network: ops, node sets and their symmetry (see module doc).

    Two networks with equal ``ArchSpec`` (equal ``hash``) batch into one dense view; ``to_module``
    rebuilds the network from the spec and a graph's values. Equality ignores the spatial size
    of the example input (see ``identity_json``).
    """

    ops: tuple
    nodesets: tuple
    input: FrozenDict
    dtype: str = "float32"
    node_features: tuple = ("bias",)
    kernel_shape: tuple = ()
    meta: FrozenDict = field(default_factory=lambda: FrozenDict())

    def __post_init__(self):
        for name in ("ops", "nodesets", "input", "node_features", "kernel_shape", "meta"):
            object.__setattr__(self, name, freeze(getattr(self, name)))

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": "converters.ArchSpec/1",
            "ops": _thaw(self.ops),
            "nodesets": _thaw(self.nodesets),
            "input": _thaw(self.input),
            "dtype": self.dtype,
            "node_features": list(self.node_features),
            "kernel_shape": list(self.kernel_shape),
            "meta": _thaw(self.meta),
        }

    def to_json(self) -> str:
        """Canonical JSON of the whole spec (computed once: the spec is immutable)."""
        cached = self.__dict__.get("_json")
        if cached is None:
            cached = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_json", cached)
        return cached

    @classmethod
    def from_dict(cls, d: Mapping) -> "ArchSpec":
        d = dict(d)
        fmt = d.pop("format", "converters.ArchSpec/1")
        if fmt != "converters.ArchSpec/1":
            raise ValueError(f"unknown ArchSpec format {fmt!r}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "ArchSpec":
        return cls.from_dict(json.loads(s))

    def identity_json(self) -> str:
        """Canonical JSON of what identifies the architecture (``hash`` and ``==`` use it):
        everything in ``to_json`` except the spatial size (or token count) of the example input
        the spec was traced with (every axis of ``input["shape"]`` but the channels'; its rank
        stays). The ops already record every size the
        parameters depend on (a flatten's block shape is ``linear.spatial``), so a CNN traced on
        28x28 and on 32x32 images is one architecture."""
        cached = self.__dict__.get("_identity")
        if cached is None:
            d = self.to_dict()
            shape = d["input"].get("shape")
            if shape:
                keep = [None] * len(shape)
                op0 = d["ops"][0] if d["ops"] else {}
                # the channels' axis: the last for (time, features) and token-wise inputs
                c = len(shape) - 1 if op0.get("channels_last") else op0.get("chan_dim", 1) - 1
                keep[c] = shape[c]
                d["input"] = {**d["input"], "shape": keep}
            cached = json.dumps(d, sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_identity", cached)
        return cached

    @property
    def hash(self) -> str:
        """A short stable identifier of the architecture: the first 16 hex digits of the sha256
        of ``identity_json()`` (ops, node sets, input channels and rank, dtype, node features,
        kernel shape and ``meta``)."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hashlib.sha256(self.identity_json().encode()).hexdigest()[:16]
            object.__setattr__(self, "_hash", cached)
        return cached

    def __hash__(self):
        return hash(self.identity_json())

    def __eq__(self, other):
        return other is self or (isinstance(other, ArchSpec)
                                 and self.identity_json() == other.identity_json())

    def __repr__(self):
        return (f"ArchSpec({self.hash}: {len(self.nodesets)} node sets, {self.num_nodes} nodes, "
                f"{len(self.param_ops)} layers)")

    def with_meta(self, **meta) -> "ArchSpec":
        """A copy with extra ``meta`` entries (e.g. a SIREN convention)."""
        return ArchSpec(self.ops, self.nodesets, self.input, self.dtype, self.node_features,
                        self.kernel_shape, {**self.meta, **meta})

    # -- convenience ---------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return sum(ns["size"] for ns in self.nodesets)

    @property
    def param_ops(self) -> tuple:
        """The ops that create edges (linear, conv, batchnorm, layernorm, add), in edge order."""
        return tuple(op for op in self.ops if "ns" in op and op["op"] != "input")

    def summary(self) -> str:
        """A human-readable table: node sets with size, role, group, activation."""
        lines = [f"ArchSpec {self.hash}: {len(self.nodesets)} node sets, "
                 f"{self.num_nodes} nodes, kernel shape {tuple(self.kernel_shape) or '()'}"]
        for k, ns in enumerate(self.nodesets):
            act = ns["act"] + (f"{dict(ns['act_params'])}" if ns["act_params"] else "")
            lines.append(f"  [{k:3d}] {ns['name']:<28s} {ns['size']:6d}  {ns['role']:<6s} "
                         f"group={ns['group']:<6s} act={act}")
        return "\n".join(lines)
