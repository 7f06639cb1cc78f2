"""Products of two branches: ``a * b`` of two layers' values (``operator.mul``, ``torch.mul``,
``x.mul(y)``: gating ``sigmoid(g) * v``, SwiGLU ``silu(W1 x) * (W3 x)``, bilinear ``a * b``), and
the GLU (``nn.GLU``, ``F.glu``: ``a * sigmoid(b)`` of the two halves of one layer's features).

No new nodes. The product's channels are the neurons of one operand, the *carrying* one: its
consumer's edges come from those neurons. Symmetry (docs/design.md 3.6): with ``y = a * b``,
``a = sigma_a(z_a)``, ``b = sigma_b(z_b)`` channel by channel and ``b`` carrying,

- one permutation for both operands' neurons (``align``): ``(P a) * (P b) = P (a * b)``, and the
  consumer's columns move alike; different permutations pair other neurons;
- the carrying neurons keep the factors their own path allows (``sigma_b(q z) = q sigma_b(z)``)
  and the product's consumers allow: ``a * (q b) = q (a * b)``, undone by the consumer, which
  divides by the carrying neuron's ``q``;
- the other operand's neurons take no factor: ``(q_a a) * b = q_a (a * b)`` would need the
  consumer to divide by ``q_a`` too, but its edges come from the carrying neurons only. (For two
  linear branches ``q_a`` and ``q_b`` are both symmetries, the consumer dividing by
  ``q_a q_b``; the graph expresses the carrying one only: the smaller group.)

The carrying operand is the one whose path from its layer lets more factors through (identity:
any factor; ReLU: positive; tanh: signs; sigmoid, SiLU, ...: none), the first on a tie.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..groups import ANY, ONE, POS
from .activation import activation_bits
from .base import OpRule


def path_bits(t, vid: int) -> int:
    """The factor bits the chain of channel-wise ops from a layer's own value to value ``vid``
    lets through (a guess used only to pick the carrying operand)."""
    producer = {op["out"]: op for op in t.ops if "out" in op}
    bits = ANY
    while True:
        op = producer.get(vid)
        if op is None or "ns" in op or len(op.get("in", ())) != 1:
            return bits
        kind = op["op"]
        if kind == "act":
            bits &= activation_bits(op["name"], op["params"])
        elif kind == "prelu":
            bits &= POS
        elif kind == "scalar":
            bits &= ANY if op["fn"] in ("mul", "div") and not op["reverse"] else ONE
        elif kind == "pool":
            bits &= POS if "max" in op["fn"] else ANY
        elif kind == "amax":
            bits &= POS
        elif kind not in ("view", "permute", "flatten", "mean", "index"):
            bits &= ONE
        vid = op["in"][0]


def _popcount(bits: int) -> int:
    return bin(bits).count("1")


class Mul(OpRule):
    """``mul``: ``in`` = [a, b], ``carry`` (0 or 1): the operand whose node set holds the
    product's channels."""

    kind = "mul"
    doc = "the product of two values of single node sets; ``carry``: the operand it belongs to"

    def trace_product(self, t, node, a, b) -> None:
        """Emit ``a * b`` (two traced values, read by ``converters.ops.residual``)."""
        import operator
        if node.target is operator.imul and isinstance(a, fx.Node) and len(a.users) > 1:
            t.fail(node, "mul", "in-place op on a tensor that is used elsewhere")
        va, vb = t.vals[a], t.vals[b]
        sa = t.single_set(node, "mul", va)
        sb = t.single_set(node, "mul", vb)
        if t.shape(a) != t.shape(b):
            t.fail(node, "mul", f"a broadcasting product ({t.shape(a)} * {t.shape(b)}) is "
                                f"unsupported: both factors must be layers of one shape")
        if (va.caxes, va.csplit) != (vb.caxes, vb.csplit) or va.chan != vb.chan:
            t.fail(node, "mul", f"the factors' channels lie on different axes "
                                f"({list(va.caxes)} and {list(vb.caxes)})")
        carry = 1 if _popcount(path_bits(t, vb.vid)) > _popcount(path_bits(t, va.vid)) else 0
        vid = t.new_vid()
        t.ops.append({"op": "mul", "in": [va.vid, vb.vid], "out": vid, "carry": carry})
        c = (va, vb)[carry]
        t.vals[node] = t.value(vid, [(sa, sb)[carry]], c.chan, c.rank, None, c.caxes, c.csplit)

    def out_parts(self, op, parts):
        return list(parts[op["in"][op["carry"]]])

    def constrain(self, op, s):
        carry, other = op["in"][op["carry"]], op["in"][1 - op["carry"]]
        s.allow[carry] &= s.allow[op["out"]]
        s.restrict(other, ONE)

    def couple(self, op, s):
        a, b = (s.parts[v][0] for v in op["in"])
        s.align.union(a, b)

    def apply(self, op, ins):
        return ins[0] * ins[1]


def _cut_of(t, u, node):
    """``(axis, parts)``: fx node ``u`` cuts ``node``'s value into ``parts`` equal pieces along
    ``axis`` (a GLU: two halves; ``chunk(n, dim)``; ``split(size, dim)`` with ``size`` a divisor
    of the axis, a constant or a feature size such as ``C`` of ``B, T, C = x.size()``; ``split``
    with a list of equal sizes), or None."""
    if not u.args or u.args[0] is not node:
        return None
    args, kw = u.args, u.kwargs
    if u.op == "call_module" and type(t.gm.get_submodule(u.target)) is nn.GLU:
        return t.gm.get_submodule(u.target).dim, 2
    if u.op == "call_function" and u.target is F.glu:
        return (args[1] if len(args) > 1 else kw.get("dim", -1)), 2
    name = u.target if u.op == "call_method" else getattr(u.target, "__name__", None)
    if not (u.op in ("call_method", "call_function") and name in ("chunk", "split") and
            (u.op == "call_method" or u.target in (torch.chunk, torch.split))):
        return None
    size = args[1] if len(args) > 1 else kw.get("chunks", kw.get("split_size_or_sections",
                                                                  kw.get("split_size")))
    dim = args[2] if len(args) > 2 else kw.get("dim", 0)
    shape = t.shape(node)
    if not _is_int(dim) or not -len(shape) <= dim < len(shape):
        return None
    n_axis = shape[dim]
    if name == "split" and isinstance(size, (list, tuple)):
        sizes = [_feature_int(t, s) for s in size]
        ok = len(sizes) >= 2 and all(_is_int(s) and s == sizes[0] for s in sizes)
        return (dim, len(sizes)) if ok and sizes[0] * len(sizes) == n_axis else None
    size = _feature_int(t, size)
    if not _is_int(size) or size < 1:
        return None
    n = size if name == "chunk" else n_axis // size
    piece = n_axis // n if n else 0
    return (dim, n) if n >= 2 and piece * n == n_axis and (name == "chunk" or piece == size) \
        else None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _feature_int(t, n):
    """The Python value of ``n``: a constant or an expression of feature sizes
    (``converters.ops.attention.size_value``), also ``C`` of ``B, T, C = x.size()``; None when
    it reads a token count or anything else."""
    from .attention import _feature_size, size_value
    if (isinstance(n, fx.Node) and n.op == "call_function" and n.target is operator.getitem
            and isinstance(n.args[0], fx.Node) and n.args[0].op == "call_method"
            and n.args[0].target == "size" and len(n.args[0].args) == 1):
        return _feature_size(t, n.args[0].args[0], n.args[1])
    return size_value(t, n)


def split_parts(t, node):
    """The number of equal pieces (2 or more) the value of fx ``node`` (a Linear's output) is cut
    into along its last axis when every reader cuts it so, by one count (a GLU, ``chunk(n,
    -1)``, ``split(size, -1)``: GLU halves, GPT-2's fused ``q, k, v = c_attn(x).split(C,
    dim=2)``); None otherwise. The Linear then writes its pieces as that many node sets
    (``converters.ops.linear``)."""
    rank, counts = len(t.shape(node)), set()
    for u in node.users:     # every reader cuts it alike: each piece's group is its own
        cut = _cut_of(t, u, node)
        if cut is None or not _is_int(cut[0]) or cut[0] % rank != rank - 1:
            return None
        counts.add(cut[1])
    return counts.pop() if len(counts) == 1 else None


def glu_split(t, node) -> bool:
    """Whether the value of fx ``node`` is cut into two halves along its last axis by its
    readers only (``split_parts`` is 2)."""
    return split_parts(t, node) == 2


class Half(OpRule):
    """``half``: ``index``: piece ``index`` of the ``parts`` (default 2) equal pieces of a split
    Linear's features, cut by ``chunk(n, dim)``/``split(size, dim)`` along the features (``dim``)
    and read by indexing the result (``a, b = h.chunk(2, -1)``; GPT-2's ``q, k, v =
    c_attn(x).split(C, dim=2)``). Its channels are the piece's own node set, whose factors its
    consumers decide, independently of the other pieces (a product of two halves aligns them,
    an attention couples its queries, keys and values)."""

    kind = "half"
    methods = ("chunk", "split")
    functions = (torch.chunk, torch.split)
    doc = "``dim``, ``index``, ``parts`` (default 2): one of the node sets of a split Linear"

    def trace_method(self, t, node, name):
        self._cut(t, node, name)

    def trace_function(self, t, node, fn, args, kwargs, name):
        self._cut(t, node, name)

    def _cut(self, t, node, name):
        x = t.tensor_arg(node, node.args[0])
        n = split_parts(t, node.args[0])
        if not (n is not None and len(x.parts) == n and x.flat is None
                and _cut_of(t, node, node.args[0]) is not None):
            t.fail(node, name, "chunk/split is supported only into equal pieces of a Linear's "
                               "features, read directly (h.chunk(2, dim=-1), "
                               "h.split(half, dim=-1), q, k, v = h.split(C, dim=-1)) by nothing "
                               "else, every reader cutting it alike")
        t.__dict__.setdefault("halves", {})[node] = x
        t.vals[node] = None

    def select(self, t, node, src, index) -> bool:
        """Emit piece ``index`` of the cut ``src`` (an fx node), if ``src`` is one."""
        x = t.__dict__.get("halves", {}).get(src)
        if x is None:
            return False
        n = len(x.parts)
        if not isinstance(index, int) or isinstance(index, bool) or not -n <= index < n:
            t.fail(node, "indexing", f"the {n} pieces of a split Linear are items 0 to {n - 1}, "
                                     f"got {index!r}")
        k = index % n
        ns = x.parts[k]
        op = {"op": "half", "dim": x.cdim, "index": k, **({"parts": n} if n != 2 else {})}
        t.emit(node, op, x, chan=t.sizes[ns], parts=[ns])
        return True

    def out_parts(self, op, parts):
        return [parts[op["in"][0]][op["index"]]]

    def constrain(self, op, s):
        i, o = op["in"][0], op["out"]
        if op["index"] == 0:       # the value's own bits are the first piece's
            s.allow[i] &= s.allow[o]
            if o in s.act_of:
                s.act_of.setdefault(i, s.act_of[o])
        else:
            ns = s.parts[i][op["index"]]
            s.restrict_set(ns, s.allow[o])
            if o in s.act_of:
                s.ns_act.setdefault(ns, s.act_of[o])

    def apply(self, op, ins):
        return torch.chunk(ins[0], op.get("parts", 2), op["dim"])[op["index"]]


class GLU(OpRule):
    """``glu``: ``dim``; ``F.glu(x, dim) = a * sigmoid(b)`` with ``a, b`` the two halves of ``x``
    along ``dim``. Its input must be a Linear's output read along its features: the Linear then
    writes the halves as two node sets of equal size (``split``), aligned position by position
    (neuron ``i`` of ``a`` with neuron ``i`` of ``b``); the product carries ``a``'s node set."""

    kind = "glu"
    modules = (nn.GLU,)
    functions = (F.glu,)
    doc = "``dim``; reads the two node sets of a split Linear (``a * sigmoid(b)``)"

    def trace_module(self, t, node, m, x):
        self._emit(t, node, x, m.dim, "GLU")

    def trace_function(self, t, node, fn, args, kwargs, name):
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
        self._emit(t, node, t.tensor_arg(node, args[0]), dim, "glu")

    def _emit(self, t, node, x, dim, what):
        if isinstance(dim, fx.Node) or not isinstance(dim, int):
            t.fail(node, what, "the axis must be a Python integer")
        d = dim % x.rank
        if (x.flat is not None or len(x.parts) != 2 or x.cdim != d
                or t.sizes[x.parts[0]] != t.sizes[x.parts[1]]
                or x.parts[1] != x.parts[0] + 1):
            t.fail(node, what, "a GLU must read the output of a Linear directly, along its "
                               "features, and be its only reader (the Linear's two halves become "
                               "two node sets that share one permutation); other inputs are "
                               "unsupported")
        a, b = x.parts
        n = t.sizes[a]
        t.emit(node, {"op": "glu", "dim": d}, x, chan=n, parts=[a])

    def out_parts(self, op, parts):
        return list(parts[op["in"][0]][:1])

    def constrain(self, op, s):
        i = op["in"][0]
        a, b = s.parts[i]
        s.allow[i] &= s.allow[op["out"]]       # the first half carries the product
        s.restrict_set(b, ONE)                 # the gate half: a * sigmoid(q z) needs q = 1
        s.ns_act.setdefault(b, ("sigmoid", {}))

    def couple(self, op, s):
        a, b = s.parts[op["in"][0]]
        s.align.union(a, b)

    def apply(self, op, ins):
        return F.glu(ins[0], op["dim"])
