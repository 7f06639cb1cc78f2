"""``OpRule``: everything the converter knows about one op kind, in one class.

An ``ArchSpec`` is a straight-line program of ops (``op["op"]`` is the kind). Each kind has one
``OpRule`` subclass (one file under ``converters/ops/``), registered in ``converters.ops.RULES``.
The rest of the converter is a set of driver loops over the ops that ask the op's rule:

=========================== ======================================================= ===========
question                    hook                                                     driver
=========================== ======================================================= ===========
which fx forms it reads     ``modules``, ``functions``, ``methods``, ``matches_*``   trace.py
how it is read              ``trace_module``, ``trace_function``, ``trace_method``   trace.py
example input it implies    ``example_input``                                        trace.py
channels of its output      ``out_parts``                                            symmetry.py
symmetry constraint         ``constrain`` (backward: factors allowed on its inputs)  symmetry.py
coupling of node sets       ``couple`` (align, tie, permutation cuts)                symmetry.py
parameter layout            ``edges`` (into the node set it writes), ``features``    layout.py
node features, kernel grid  ``feature_columns``, ``kernel``                          trace.py
how it is rebuilt           ``to_module`` and ``forward``                            module.py
how it runs without modules ``apply`` (parameter-free ops)                           interp.py
how it runs batched         ``batched`` (B networks' parameters at once)             dense.py
its action rule             ``act`` (the group action on its state-dict entries)     actions.py
=========================== ======================================================= ===========

A rule whose op has a ``"module"`` key owns parameters: it must implement ``to_module``,
``batched`` and ``act``; a parameter-free rule implements ``apply``. The default ``constrain`` is
the safe one: the op's inputs admit no factor (``perm`` at most), so a rule that forgets to say
what it lets through claims too small a group, never too large; a layer with weights overrides it
to absorb every factor, a channel-wise op to pass its output's factors on
(``SymmetryState.pass_through``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..groups import ANY, ONE


# -- parameter layout records (re-exported by converters.layout) ------------------------------
@dataclass
class Block:
    """The edges one op creates. ``values`` of the op reshape to ``(out, per_dest, K)``."""
    op: dict
    start: int
    stop: int
    out: int          # destinations (= size of the node set written)
    per_dest: int     # sources per destination
    kshape: tuple     # spatial shape of one edge's values (() for a scalar weight)
    slots: torch.Tensor  # (K,) positions of those values in the padded feature axis
    weight_key: str | None  # state-dict key of the values (None: structural constant 1)
    param_shape: tuple = ()   # shape of the state-dict tensor (weight_key)
    #: when the state-dict tensor is not a plain reshape of the ``(out, per_dest, *kshape)``
    #: edge values: that tensor viewed as ``edge_view`` and permuted by ``param_perm`` is it
    #: (``ConvTranspose``'s ``(in, out / groups, *k)`` weight); empty: a reshape
    edge_view: tuple = ()
    param_perm: tuple = ()

    def param_from_edges(self, vals: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """``(*L, out * per_dest, K)`` edge values (``L``: ``lead`` leading dims, e.g. the batch)
        -> ``(*L, *param_shape)``, the state-dict layout."""
        L = tuple(vals.shape[:lead])
        if self.param_perm:
            dims = tuple(range(lead)) + tuple(lead + p for p in self.param_perm)
            vals = vals.reshape(*L, *self.edge_view).permute(dims)
        return vals.reshape(*L, *self.param_shape)

    def edges_from_param(self, t: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """The inverse of ``param_from_edges``: ``(*L, *param_shape)`` -> ``(*L, E, K)``."""
        L = tuple(t.shape[:lead])
        if self.param_perm:
            inv = sorted(range(len(self.param_perm)), key=lambda i: self.param_perm[i])
            t = t.reshape(*L, *(self.edge_view[p] for p in self.param_perm))
            t = t.permute(tuple(range(lead)) + tuple(lead + i for i in inv))
        return t.reshape(*L, self.stop - self.start, -1)


@dataclass
class FeatureSlot:
    """One state-dict tensor stored in one node-feature column over a node range.

    ``scalar``: a 0-d integer buffer broadcast over the nodes (``num_batches_tracked``);
    ``shared``: a one-element float parameter broadcast over the nodes (a single-slope PReLU).
    Otherwise the tensor has shape ``(size,)``, one entry per node."""
    key: str      # state-dict key
    column: int   # column of x
    start: int    # first node
    size: int     # number of nodes
    scalar: bool  # a 0-d buffer broadcast over the nodes (num_batches_tracked)
    shared: bool = False

    @property
    def param_shape(self) -> tuple:
        return () if self.scalar else (1,) if self.shared else (self.size,)


@dataclass
class Edges:
    """What ``OpRule.edges`` returns: for every destination of the node set the op writes, its
    sources (``src``: (out, per_dest) global node ids), the spatial shape of one edge's values,
    the state-dict key holding them (None: structural constant 1), the edge type name and the
    shape of that state-dict tensor (``edge_view``, ``param_perm``: see ``Block``)."""
    src: torch.Tensor
    kshape: tuple
    key: Optional[str]
    etype: str
    param_shape: tuple
    edge_view: tuple = ()
    param_perm: tuple = ()
    #: the first node set the edges enter (None: the op's ``ns``); ``src`` may run over several
    #: consecutive node sets (a recurrent layer's gates, one row block of its weight each)
    dst: Optional[int] = None


def kernel_slots(kshape, kernel_shape) -> torch.Tensor:
    """Flat positions of a ``kshape`` kernel centred in a ``kernel_shape`` grid."""
    kernel_shape = tuple(kernel_shape)
    if not kernel_shape:
        return torch.zeros(1, dtype=torch.long)
    kshape = tuple(kshape) or (1,) * len(kernel_shape)
    grids = [torch.arange(k) + (K - k) // 2 for k, K in zip(kshape, kernel_shape)]
    pos = torch.zeros(1, dtype=torch.long)
    for g, K in zip(grids, kernel_shape):
        pos = (pos[:, None] * K + g[None, :]).reshape(-1)
    return pos


# -- the symmetry driver's state --------------------------------------------------------------
class UnionFind:
    """Disjoint sets over ``0..n-1`` (node sets that share a permutation, or a factor)."""

    def __init__(self, n: int):
        self.p = list(range(n))

    def find(self, a: int) -> int:
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a: int, b: int) -> None:
        self.p[self.find(a)] = self.find(b)

    def classes(self) -> list:
        """Class id (0..K-1, in order of first member) for every element."""
        ids, out = {}, []
        for a in range(len(self.p)):
            out.append(ids.setdefault(self.find(a), len(ids)))
        return out


class SymmetryState:
    """What the symmetry rules read and write (``converters.symmetry.analyse``).

    ``allow[v]``: factor bits (``groups.ANY/POS/NEG/ONE``) the channels of value ``v`` may be
    multiplied by; ``act_of[v]``: the activation (name, params) applied downstream of ``v``;
    ``parts[v]``: the node sets along ``v``'s channel dimension; ``align``/``tie``: union-finds of
    node sets sharing one permutation / one permutation and factor; ``inverse``: pairs of node
    sets of one size whose factors are reciprocal position by position (an attention's queries
    and keys: ``inverse_tie``); ``cuts[ns]``: boundaries permutations of node set ``ns`` may not
    cross; ``block_moves``, ``block_cuts``: blocks that may also move whole (``block_perm``);
    ``sizes[ns]``: node counts."""

    def __init__(self, parts: dict, sizes: dict, out_value: int):
        n = len(sizes)
        self.parts, self.sizes = parts, sizes
        self.allow = {v: ANY for v in parts}
        self.allow[out_value] = ONE
        self.act_of: dict = {}
        self.align, self.tie = UnionFind(n), UnionFind(n)
        self.cuts = [set() for _ in range(n)]
        #: node sets of constant inputs (a learned position's nodes): fixed, role ``other``
        self.constant: set = set()
        #: node sets an op creates that are no value's channels (``OpRule.inner_sets``: a
        #: recurrent layer's gates and hidden states): their factor bits and activation
        self.ns_allow: dict = {}
        self.ns_act: dict = {}
        #: (a, b) node-set pairs: neuron i of b takes the reciprocal of neuron i's factor in a
        self.inverse: list = []
        #: block moves (``block_perm``): per call, the ``(node set, block size)`` pairs whose
        #: blocks move by one common permutation; ``block_cuts[ns]``: the block boundaries
        self.block_moves: list = []
        self.block_cuts = [set() for _ in range(n)]

    def block_perm(self, sets, blocks: int) -> None:
        """Each node set ``ns`` of ``sets`` (``[(ns, size), ...]``, ``sizes[ns] = blocks *
        size``) is cut into ``blocks`` blocks of ``size`` consecutive channels: permutations stay
        inside each block (a cut at every boundary, as ``cuts``), and moving whole blocks, by one
        permutation of the block indices common to all of ``sets``, keeps the op's function too
        (an attention's heads in its queries, keys and values; a GroupNorm's groups).
        ``converters.symmetry`` declares the block moves (the node-set record's ``blocks``) when
        no other op cuts, fixes or differently blocks any node set aligned with these."""
        if blocks < 2:
            return
        for ns, size in sets:
            if self.sizes[ns] != blocks * size:
                raise ValueError(f"node set {ns} of {self.sizes[ns]} channels is not {blocks} "
                                 f"blocks of {size}")
            self.block_cuts[ns].update(range(size, blocks * size, size))
        self.block_moves.append(tuple((ns, size) for ns, size in sets))

    def inverse_tie(self, a: int, b: int) -> None:
        """Node sets ``a`` and ``b`` (one size) take reciprocal factors position by position:
        ``q_b[i] = 1 / q_a[i]`` (queries and keys of an attention, whose products ``q . k`` the
        scores read). The caller aligns them too (one permutation); ``converters.symmetry``
        gives both the intersection of their groups, and none when either is also tied."""
        if self.sizes[a] != self.sizes[b]:
            raise ValueError(f"inverse tie of node sets of sizes {self.sizes[a]} and "
                             f"{self.sizes[b]}")
        self.inverse.append((a, b))

    def restrict_set(self, ns: int, bits: int) -> None:
        """Allow only the factors ``bits`` on the node set ``ns`` (an inner node set)."""
        self.ns_allow[ns] = self.ns_allow.get(ns, ANY) & bits

    def restrict(self, v: int, bits: int) -> None:
        """Allow only the factors ``bits`` on value ``v``'s channels."""
        self.allow[v] &= bits

    def pass_through(self, op: dict, bits: int = ANY, activation: bool = True) -> None:
        """A channel-wise op: its input keeps the factors its output allows that the op
        commutes with (``bits``); with ``activation`` the downstream activation is inherited."""
        i, o = op["in"][0], op["out"]
        self.allow[i] &= bits & self.allow[o]
        if activation and o in self.act_of:
            self.act_of.setdefault(i, self.act_of[o])


# -- the action driver's view ------------------------------------------------------------------
class ParamAction:
    """A group action seen per node set (``converters.Action.apply_state_dict``).

    ``perm(ns)``: (n,) long, the new position of each node of node set ``ns`` inside it;
    ``q(ns)``: (n,) float64 factors; ``perm_of(parts)`` / ``q_of(parts)``: the same over the
    channels of a value made of several node sets (a concatenation)."""

    def __init__(self, perms: dict, qs: dict, sizes: dict):
        self._perm, self._q, self.sizes = perms, qs, sizes

    def perm(self, ns: int) -> torch.Tensor:
        return self._perm[ns]

    def q(self, ns: int) -> torch.Tensor:
        return self._q[ns]

    def perm_of(self, parts) -> torch.Tensor:
        out, pos = [], 0
        for ns in parts:
            out.append(self._perm[ns] + pos)
            pos += self.sizes[ns]
        return torch.cat(out)

    def q_of(self, parts) -> torch.Tensor:
        return torch.cat([self._q[ns] for ns in parts])

    @staticmethod
    def scaled(t: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """``t * factor`` computed in float64, returned in ``t``'s dtype (as ``Action.apply``)."""
        return (t.double() * factor).to(t.dtype)

    @staticmethod
    def moved(t: torch.Tensor, perm: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """``t`` with index ``i`` of dimension ``dim`` moved to ``perm[i]``."""
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))
        return t.index_select(dim, inv)


# -- the rule ----------------------------------------------------------------------------------
class OpRule:
    """All knowledge of one op kind (see module doc). Subclasses set ``kind`` and override the
    hooks that apply to them."""

    #: ``op["op"]`` of the ops this rule handles (None: a tracing-only rule that emits no op)
    kind: Optional[str] = None
    #: the op writes a new node set (``op["ns"]``): ``edges`` says where its edges come from
    creates_nodes: bool = False
    #: ``nn.Module`` types read as leaves (exact types), functions and ``Tensor`` method names
    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    #: one line for the op table of the docs
    doc: str = ""

    # -- reading the fx graph --------------------------------------------------------------
    def matches_function(self, fn: Callable, name: str) -> bool:
        return any(fn is f for f in self.functions)

    def matches_method(self, name: str) -> bool:
        return name in self.methods

    def trace_module(self, t, node, m, x) -> None:
        """Emit the op(s) for ``call_module`` ``node`` of module ``m`` on input value ``x``
        (``t``: the tracer, ``converters.trace._Builder``)."""
        t.fail(node, type(m).__name__, "not supported")

    def trace_function(self, t, node, fn, args, kwargs, name: str) -> None:
        t.fail(node, f"function {name}", "not supported")

    def method_function(self, name: str) -> Optional[Callable]:
        """The function a ``Tensor`` method stands for (``x.add(y)`` is ``add(x, y)``)."""
        return None

    def trace_method(self, t, node, name: str) -> None:
        fn = self.method_function(name)
        if fn is None:
            t.fail(node, f"method .{name}()", "not supported")
        self.trace_function(t, node, fn, node.args, node.kwargs, name)

    def example_input(self, m, model, dtype) -> tuple:
        """``(done, x)``: when the first traced module is ``m``, a guessed example input ``x``
        for ``model`` (``done`` without ``x``: give up guessing)."""
        return False, None

    # -- structure ------------------------------------------------------------------------
    def out_parts(self, op: dict, parts: dict) -> list:
        """The node sets along the channel dimension of the op's output value."""
        if self.creates_nodes:
            return [op["ns"]]
        return list(parts[op["in"][0]])

    def inner_sets(self, op: dict) -> list:
        """Node sets the op creates besides ``op["ns"]`` (their factors and activations go in
        ``SymmetryState.ns_allow`` / ``ns_act``). Default: none."""
        return []

    def attention_heads(self, op: dict, parts: dict) -> tuple:
        """``((q, k, v, heads, d, dv), ...)``: the attention heads the op computes, by the node
        sets of its queries, keys and values, the head count and the query/key and value
        dimensions per head (read by metanetworks that send the heads' scores to their values,
        ``scalegmn.gmn.plan.head_index``). Default: none."""
        return ()

    def feature_columns(self, op: dict) -> tuple:
        """Names (in ``groups.NODE_FEATURES``) of the node-feature columns the op fills."""
        return ()

    def kernel(self, op: dict) -> Optional[list]:
        """The spatial shape of the op's edge values, when it has one (for the kernel grid)."""
        return None

    # -- symmetry -------------------------------------------------------------------------
    def constrain(self, op: dict, s: SymmetryState) -> None:
        """Backward rule: restrict ``s.allow`` on the op's inputs given its output's. Default:
        no factor passes (see module doc)."""
        for v in op.get("in", ()):
            s.restrict(v, ONE)

    def couple(self, op: dict, s: SymmetryState) -> None:
        """Forward rule: align / tie node sets or cut permutations (``s.align``, ``s.tie``,
        ``s.cuts``). Default: nothing."""

    # -- layout -----------------------------------------------------------------------------
    def edges(self, op: dict, lay) -> Edges:
        """The edges into the node set the op writes (``lay``: the ``Layout`` being built, with
        ``offsets``, ``sizes`` and ``parts``)."""
        raise NotImplementedError(f"op '{self.kind}' creates no edges")

    def edge_blocks(self, op: dict, lay) -> list:
        """Every ``Edges`` block the op creates, in edge order. Default: ``[edges(op, lay)]``;
        an op writing several node sets returns one block per weight tensor (``Edges.dst``)."""
        return [self.edges(op, lay)]

    def features(self, op: dict, lay) -> list:
        """The ``FeatureSlot``s of the op's node-feature parameters."""
        return []

    def tied_edges(self, op: dict, lay) -> list:
        """``[(key, same_as, a, b)]``: edges ``b`` (state-dict key ``key``) hold the same weights
        as edges ``a`` (``same_as``), one parameter used twice (``graph.edge_tie``). Default:
        none."""
        return []

    # -- running ------------------------------------------------------------------------------
    def to_module(self, op: dict):
        """A fresh ``nn.Module`` holding the op's parameters (ops with a ``"module"`` key)."""
        raise NotImplementedError(self.kind)

    def forward(self, op: dict, module, ins: list) -> torch.Tensor:
        """The op with its rebuilt module (bitwise the original layer)."""
        return module(ins[0])

    def finish_module(self, op: dict, module) -> None:
        """After ``to_module`` loaded the state dict into ``module``: e.g. tie parameters that
        are one object in the original. Default: nothing."""

    def apply(self, op: dict, ins: list) -> torch.Tensor:
        """A parameter-free op on its input values."""
        raise NotImplementedError(self.kind)

    def batched(self, op: dict, ins: list, params: dict, B: int) -> torch.Tensor:
        """The op for B networks at once: ``ins`` are ``(B * n, ...)`` (network-major),
        ``params`` maps state-dict keys to ``(B, *shape)`` tensors."""
        return self.apply(op, ins)

    # -- group action ----------------------------------------------------------------------
    def act(self, op: dict, sd: dict, a: ParamAction, parts: dict) -> None:
        """Transform, in place in ``sd``, the state-dict entries of the op under the action
        ``a`` (parameter-free ops: nothing)."""


def bind(args: tuple, kwargs: dict, names: tuple, defaults: dict, ignore=("inplace",)) -> dict:
    """Positional ``args`` (after the input tensor) and ``kwargs`` matched to ``names``, with
    ``defaults``; keys in ``ignore`` are dropped. Raises ``TypeError`` on an unknown keyword."""
    out = dict(defaults)
    for n, v in zip(names, args):
        out[n] = v
    if len(args) > len(names):
        raise TypeError(f"too many positional arguments ({len(args)} > {len(names)})")
    for k, v in kwargs.items():
        if k in ignore:
            continue
        if k not in names:
            raise TypeError(f"unexpected argument {k!r}")
        out[k] = v
    for k in ignore:
        out.pop(k, None)
    return out


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
