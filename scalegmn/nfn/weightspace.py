"""The weight-space container every parameter-sharing layer takes and returns.

A ``WeightSpace`` holds the per-layer tensors of B networks that are *chains* (linear and conv
layers, each followed by a pointwise activation; pooling/flatten allowed between them):

    weights[l]: (B, n_l, n_{l-1}, F_l)      biases[l]: (B, n_l, G_l)      for l = 1..L

where ``n_0..n_L`` are the neuron counts, and the feature axis holds ``C`` channels times the
``k_l`` kernel positions of layer l (channel-major: index ``c * k_l + s``); biases hold ``C``
channels. A network that enters has ``C = 1``. The symmetry group acts on the neuron axes:

    W_l -> D_l P_l W_l P_{l-1}^T D_{l-1}^{-1},     b_l -> D_l P_l b_l,

with ``P_0 = P_L = D_0 = D_L = I`` (inputs and outputs are fixed) and each ``D_l`` a diagonal of the
hidden layer's group (positive for ReLU, +-1 for tanh and sine). Every feature of one entry
(channels and kernel positions) shares the entry's factor.

``Chain.of(arch)`` checks an ``ArchSpec`` is such a chain (clear error otherwise); ``read`` builds
the container from a ``Batch`` through the lossless dense view; ``write`` turns an output container
with ``C = 1`` back into per-edge and per-node deltas in the batch's own layout.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from converters.archspec import ArchSpec
from converters.dense import to_dense
from converters.graph import pad_shape, single_arch
from converters.layout import kernel_slots, layout

_CHAIN_OPS = {"input", "output", "linear", "conv", "act", "scalar", "pool", "flatten", "mean"}


@dataclass(frozen=True)
class Chain:
    """Sizes and symmetry of a chain architecture: widths ``n`` (n_0..n_L), kernel sizes ``k``
    (k_1..k_L, 1 for dense layers), the groups of the hidden layers and which layers have a bias.

    ``mode`` is the largest group every hidden layer admits that these backends exploit:
    ``scale`` (every hidden neuron admits positive rescaling: ReLU-like or identity), ``sign``
    (every hidden neuron admits sign flips: tanh, sine, identity) or ``perm`` (permutations only)."""

    n: tuple
    k: tuple
    groups: tuple
    bias: tuple
    arch: ArchSpec

    @property
    def L(self) -> int:
        return len(self.n) - 1

    @property
    def mode(self) -> str:
        g = set(self.groups)
        if g <= {"scale", "linear"}:
            return "scale"
        if g <= {"sign", "linear"}:
            return "sign"
        return "perm"

    def claimed(self) -> tuple:
        """The groups (docs/design.md 3.1) a backend built for this chain respects."""
        return ("fixed", "perm") if self.mode == "perm" else ("fixed", "perm", self.mode)

    def signature(self) -> tuple:
        """What a parameter-sharing model's parameters depend on (hidden widths may differ)."""
        return (self.L, self.n[0], self.n[-1], self.k, self.mode)

    @classmethod
    def of(cls, arch: ArchSpec) -> "Chain":
        return _chain(arch)


@functools.lru_cache(maxsize=64)
def _chain(arch: ArchSpec) -> Chain:
    name = arch.meta.get("name") or arch.hash[:12]
    bad = sorted({op["op"] for op in arch.ops} - _CHAIN_OPS)
    if bad:
        raise ValueError(f"architecture {name}: the parameter-sharing backends read chains of "
                         f"linear/conv layers only; it has {bad} ops (use scalegmn or gmn)")
    lay = layout(arch)
    sets = arch.nodesets
    L = len(lay.blocks)
    if len(sets) != L + 1 or L < 2:
        raise ValueError(f"architecture {name}: needs a chain of at least 2 layers with one node "
                         f"set per layer (has {L} weight layers, {len(sets)} node sets)")
    if tuple(arch.node_features) != ("bias",):
        raise ValueError(f"architecture {name}: node features {arch.node_features} are not read "
                         f"by the parameter-sharing backends (biases only)")
    n, k, bias = [sets[0]["size"]], [], []
    for l, blk in enumerate(lay.blocks, start=1):
        op = blk.op
        if op["op"] not in ("linear", "conv") or op["ns"] != l or op.get("groups", 1) != 1:
            raise ValueError(f"architecture {name}: layer {op.get('module')} is not a plain "
                             f"linear/conv layer of the chain")
        if blk.per_dest != n[-1]:
            raise ValueError(f"architecture {name}: layer {op['module']} reads {blk.per_dest} "
                             f"inputs per neuron but the previous layer has {n[-1]} neurons "
                             f"(flatten of a spatial map is not supported; use global pooling)")
        n.append(blk.out)
        k.append(len(blk.slots))
        bias.append(bool(op["bias"]))
    roles = [s["role"] for s in sets]
    if roles[0] != "input" or roles[-1] != "output" or any(r != "hidden" for r in roles[1:-1]):
        raise ValueError(f"architecture {name}: node-set roles {roles} are not a chain")
    groups = tuple(s["group"] for s in sets[1:-1])
    return Chain(tuple(n), tuple(k), groups, tuple(bias), arch)


@dataclass
class WeightSpace:
    """Per-layer tensors (see module doc); layers are 1-based in the maths, 0-based here."""

    weights: tuple
    biases: tuple

    @property
    def L(self) -> int:
        return len(self.weights)

    def map(self, f) -> "WeightSpace":
        """Apply ``f`` to every tensor (a pointwise nonlinearity keeps the group it commutes
        with: ReLU keeps positive scales, odd functions keep sign flips)."""
        return WeightSpace(tuple(f(w) for w in self.weights), tuple(f(b) for b in self.biases))

    def __add__(self, other: "WeightSpace") -> "WeightSpace":
        return WeightSpace(tuple(a + b for a, b in zip(self.weights, other.weights)),
                           tuple(a + b for a, b in zip(self.biases, other.biases)))


def batch_chain(batch) -> Chain:
    return Chain.of(single_arch(batch, "a parameter-sharing backend"))


def read(batch, dtype=None) -> tuple:
    """``(WeightSpace with C = 1, Chain)`` of a ``Batch`` (or graph) of one chain architecture."""
    chain = batch_chain(batch)
    dense = to_dense(batch)
    lay = layout(chain.arch)
    kshape = pad_shape(batch)
    weights, biases = [], []
    for l, blk in enumerate(lay.blocks):
        W = dense.W[l][..., kernel_slots(blk.kshape, kshape)] if blk.kshape else dense.W[l]
        weights.append(W if dtype is None else W.to(dtype))
        b = dense.b[l + 1][..., :1]
        biases.append(b if dtype is None else b.to(dtype))
    return WeightSpace(tuple(weights), tuple(biases)), chain


def write(batch, delta: WeightSpace, chain: Chain) -> tuple:
    """``(delta_x (N, Fx), delta_edge_attr (E, Fe))`` in the batch layout from ``delta``
    (weights ``(B, n_l, n_{l-1}, k_l)``, biases ``(B, n_l, 1)``); zero on padding, on inputs and
    on layers without a bias."""
    lay = layout(chain.arch)
    kshape = pad_shape(batch)
    B = delta.weights[0].shape[0]
    ref = delta.weights[0]
    fe, fx = batch.edge_attr.shape[1], batch.x.shape[1]
    blocks = []
    for l, blk in enumerate(lay.blocks):
        W = delta.weights[l]
        if blk.kshape:
            full = W.new_zeros(*W.shape[:3], fe)
            full[..., kernel_slots(blk.kshape, kshape)] = W
            W = full
        blocks.append(W.reshape(B, -1, fe))
    d_ea = torch.cat(blocks, dim=1).reshape(-1, fe) * batch.edge_mask.to(ref.dtype)
    xs = [ref.new_zeros(B, chain.n[0], fx)]
    for l, b in enumerate(delta.biases):
        col = b if chain.bias[l] else torch.zeros_like(b)
        xs.append(torch.cat([col, b.new_zeros(*b.shape[:2], fx - 1)], dim=2) if fx > 1 else col)
    d_x = torch.cat(xs, dim=1).reshape(-1, fx)
    return d_x, d_ea
