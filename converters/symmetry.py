"""Symmetry detection: which group each node set carries, and how node sets are coupled.

A neuron's group is the intersection of what every consumer of its value allows
(docs/design.md 3.2). We walk the ops backwards, tracking for every value the set of
factors q with which its channels may be multiplied (``groups.ANY/POS/NEG/ONE`` bits) without
changing the network function, given that the consumer compensates where it can:

- a Linear / Conv / eval BatchNorm consumer absorbs any factor (its weight columns, its gamma);
- an activation lets through the factors it commutes with (ReLU: q > 0; tanh, sin: signs;
  GELU, SiLU, sigmoid: none) and passes on its own consumers' constraints;
- a max-pool removes sign flips, an average pool / flatten / mean / scalar product is transparent,
  a LayerNorm or an added constant removes every factor;
- a residual add *ties* its operands and its output: one permutation and one factor;
- BatchNorm and LayerNorm *align* their input and output channels: one permutation;
- a grouped convolution cuts its input and output channels into blocks that permutations may not
  cross;
- inputs, outputs and everything aligned with them are ``fixed``.
"""
from __future__ import annotations

from .errors import UnsupportedLayerError
from .groups import ACTIVATIONS, ANY, NEG, ONE, POS, GROUPS, group_from_bits

NS_OPS = ("input", "linear", "conv", "batchnorm", "layernorm", "add")


class _UnionFind:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, a):
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a, b):
        self.p[self.find(a)] = self.find(b)

    def classes(self):
        """Class id (0..K-1, in order of first member) for every element."""
        ids, out = {}, []
        for a in range(len(self.p)):
            out.append(ids.setdefault(self.find(a), len(ids)))
        return out


def value_parts(ops) -> dict:
    """For every value id, the node sets making up its channel dimension, in order."""
    parts = {}
    for op in ops:
        kind = op["op"]
        if kind == "output":
            continue
        if kind in NS_OPS:
            parts[op["out"]] = [op["ns"]]
        elif kind == "cat":
            parts[op["out"]] = [ns for v in op["in"] for ns in parts[v]]
        else:
            parts[op["out"]] = list(parts[op["in"][0]])
    return parts


def analyse(ops, sizes: dict, names: dict) -> list:
    """Node-set records (see ``ArchSpec``) for the op list ``ops``.

    ``sizes`` and ``names`` map node-set id -> channel count / readable name.
    """
    n_sets = len(sizes)
    parts = value_parts(ops)
    out_op = [op for op in ops if op["op"] == "output"]
    if len(out_op) != 1:
        raise UnsupportedLayerError("<graph>", "output", "exactly one output tensor is supported")
    out_v = out_op[0]["in"][0]

    # backward pass: allowed factor bits per value
    allow = {v: ANY for v in parts}
    allow[out_v] = ONE
    act_of = {}  # value id -> (activation name, params, w0 so far) seen downstream
    for op in reversed(ops):
        kind, ins = op["op"], op.get("in", [])
        if kind in ("output", "input"):
            continue
        o = op["out"]
        if kind in ("linear", "conv", "batchnorm"):
            continue  # absorbs any factor
        if kind == "layernorm":
            allow[ins[0]] &= ONE
        elif kind == "act":
            allow[ins[0]] &= ACTIVATIONS[op["name"]] & allow[o]
            act_of.setdefault(ins[0], (op["name"], dict(op.get("params", {}))))
        elif kind == "pool":
            bits = POS if "max" in op["fn"] else ANY
            allow[ins[0]] &= bits & allow[o]
            if o in act_of:
                act_of.setdefault(ins[0], act_of[o])
        elif kind in ("flatten", "mean"):
            allow[ins[0]] &= allow[o]
            if o in act_of:
                act_of.setdefault(ins[0], act_of[o])
        elif kind == "scalar":
            if op["fn"] in ("mul", "div") and not (op["fn"] == "div" and op["reverse"]):
                allow[ins[0]] &= allow[o]
                if o in act_of:  # fold a constant factor into the activation (SIREN w0)
                    name, params = act_of[o]
                    if name == "sin" and op["fn"] == "mul":
                        params = {**params, "w0": params.get("w0", 1.0) * op["const"]}
                    act_of.setdefault(ins[0], (name, params))
            else:
                allow[ins[0]] &= ONE
        elif kind == "add":
            for v in ins:
                allow[v] &= allow[o]
        elif kind == "cat":
            for v in ins:
                allow[v] &= allow[o]
        else:  # pragma: no cover - the tracer only emits the kinds above
            raise UnsupportedLayerError(op.get("name", "?"), kind, "unknown op in ArchSpec")

    producer = {op["ns"]: i for i, op in enumerate(ops) if op["op"] in NS_OPS}
    ns_value = {op["ns"]: op["out"] for op in ops if op["op"] in NS_OPS}
    bits = [allow[ns_value[k]] for k in range(n_sets)]

    align, tie = _UnionFind(n_sets), _UnionFind(n_sets)
    cuts = [set() for _ in range(n_sets)]
    for op in ops:
        if op["op"] in ("batchnorm", "layernorm"):
            align.union(op["pre"], op["ns"])
        elif op["op"] == "add":
            a, b = (parts[v][0] for v in op["in"])
            for m in (a, b):
                align.union(m, op["ns"])
                tie.union(m, op["ns"])
        elif op["op"] == "conv" and op["groups"] > 1:
            g = op["groups"]
            ipg, opg = op["in_channels"] // g, op["out_channels"] // g
            cuts[op["ns"]].update(range(opg, op["out_channels"], opg))
            pos = 0
            for ns in parts[op["in"][0]]:
                cuts[ns].update(c - pos for c in range(ipg, op["in_channels"], ipg)
                                if pos < c < pos + sizes[ns])
                pos += sizes[ns]

    fixed = [False] * n_sets
    fixed[0] = True
    out_sets = set(parts[out_v])
    for ns in out_sets:
        fixed[ns] = True
    align_id, tie_id = align.classes(), tie.classes()
    # propagate through classes: fixedness and cuts along alignment, factors along ties
    n_align = max(align_id) + 1
    cls_fixed, cls_cuts = [False] * n_align, [set() for _ in range(n_align)]
    for k in range(n_sets):
        cls_fixed[align_id[k]] |= fixed[k]
        cls_cuts[align_id[k]] |= cuts[k]
    tie_bits = {}
    for k in range(n_sets):
        tie_bits[tie_id[k]] = tie_bits.get(tie_id[k], ANY) & bits[k]
    tie_size = {}
    for k in range(n_sets):
        tie_size[tie_id[k]] = tie_size.get(tie_id[k], 0) + 1

    records = []
    for k in range(n_sets):
        is_fixed = cls_fixed[align_id[k]]
        group = "fixed" if is_fixed else GROUPS[group_from_bits(tie_bits[tie_id[k]])]
        role = "input" if k == 0 else "output" if k in out_sets else "hidden"
        act, act_params = act_of.get(ns_value[k], ("identity", {}))
        if k in out_sets:
            act, act_params = "identity", {}
        records.append({
            "name": names[k],
            "size": sizes[k],
            "role": role,
            "group": group,
            "act": act,
            "act_params": act_params,
            "perm_cuts": sorted(cls_cuts[align_id[k]]),
            "align": align_id[k],
            "tie": tie_id[k] if tie_size[tie_id[k]] > 1 else -1,
            "producer": producer[k],
        })
    return records


__all__ = ["analyse", "value_parts", "POS", "NEG"]
