"""Symmetry detection: which group each node set carries, and how node sets are coupled.

A neuron's group is the intersection of what every consumer of its value allows
(docs/design.md 3.2). We walk the ops backwards, tracking for every value the set of
factors q with which its channels may be multiplied (``groups.ANY/POS/NEG/ONE`` bits) without
changing the network function, given that the consumer compensates where it can. Each op kind's
rule lives with the rest of its knowledge in ``converters.ops`` (``OpRule.constrain`` and
``OpRule.couple``); this module is the driver loop and the generic part (fixed inputs and outputs,
classes of aligned and tied node sets). What the rules say:

- a Linear / Conv / eval BatchNorm consumer absorbs any factor (its weight columns, its gamma);
- an activation lets through the factors it commutes with (ReLU: q > 0; tanh, sin: signs;
  GELU, SiLU, sigmoid: none) and passes on its own consumers' constraints;
- a max-pool removes sign flips, an average pool / flatten / mean / scalar product is transparent,
  a LayerNorm or an added constant removes every factor;
- a residual add *ties* its operands and its output: one permutation and one factor;
- BatchNorm and LayerNorm *align* their input and output channels: one permutation;
- a grouped convolution cuts its input and output channels into blocks that permutations may not
  cross;
- an attention's heads and a GroupNorm's groups are blocks that permutations may not cross, but
  that may move whole, one permutation of the heads for queries, keys and values (``blocks``);
- inputs, outputs and everything aligned with them are ``fixed``.
"""
from __future__ import annotations

from . import ops as _ops
from .errors import UnsupportedLayerError
from .groups import ANY, NEG, ONE, POS, GROUPS, group_from_bits
from .ops.base import SymmetryState, UnionFind
from .ops.base import UnionFind as _UnionFind  # noqa: F401 (old import path)


def value_parts(ops_list) -> dict:
    """For every value id, the node sets making up its channel dimension, in order."""
    parts = {}
    for op in ops_list:
        if op["op"] == "output":
            continue
        parts[op["out"]] = _ops.rule_for(op["op"]).out_parts(op, parts)
    return parts


def analyse(ops_list, sizes: dict, names: dict) -> list:
    """Node-set records (see ``ArchSpec``) for the op list ``ops_list``.

    ``sizes`` and ``names`` map node-set id -> channel count / readable name. A driver loop: every
    op's rule restricts the factors allowed on its inputs (``OpRule.constrain``, walking
    backwards) and couples node sets (``OpRule.couple``, forwards); the rest is generic.
    """
    n_sets = len(sizes)
    parts = value_parts(ops_list)
    out_op = [op for op in ops_list if op["op"] == "output"]
    if len(out_op) != 1:
        raise UnsupportedLayerError("<graph>", "output", "exactly one output tensor is supported")
    out_v = out_op[0]["in"][0]

    s = SymmetryState(parts, sizes, out_v)
    for op in reversed(ops_list):
        _ops.rule_for(op["op"]).constrain(op, s)
    for op in ops_list:
        _ops.rule_for(op["op"]).couple(op, s)
    allow, act_of, align, tie, cuts = s.allow, s.act_of, s.align, s.tie, s.cuts
    producer = {op["ns"]: i for i, op in enumerate(ops_list) if "ns" in op}
    ns_value = {op["ns"]: op["out"] for op in ops_list if "ns" in op}
    for i, op in enumerate(ops_list):   # node sets inside an op (a recurrent layer's gates)
        for k in _ops.rule_for(op["op"]).inner_sets(op):
            producer[k] = i
    bits = [allow[ns_value[k]] if k in ns_value else s.ns_allow.get(k, ANY)
            for k in range(n_sets)]

    fixed = [False] * n_sets
    fixed[0] = True
    out_sets = set(parts[out_v])
    for ns in out_sets:
        fixed[ns] = True
    for ns in s.constant:   # constant inputs (a learned position's nodes)
        fixed[ns] = True
    align_id, tie_id = align.classes(), tie.classes()
    # propagate through classes: fixedness and cuts along alignment, factors along ties
    n_align = max(align_id) + 1
    cls_fixed, cls_cuts = [False] * n_align, [set() for _ in range(n_align)]
    cls_plain = [False] * n_align     # cut by an op that declares no block moves
    for k in range(n_sets):
        cls_fixed[align_id[k]] |= fixed[k]
        cls_cuts[align_id[k]] |= cuts[k] | s.block_cuts[k]
        cls_plain[align_id[k]] |= bool(cuts[k])
    blocks_of = _block_moves(s, align_id, cls_fixed, cls_plain)
    tie_bits = {}
    for k in range(n_sets):
        tie_bits[tie_id[k]] = tie_bits.get(tie_id[k], ANY) & bits[k]
    tie_size = {}
    for k in range(n_sets):
        tie_size[tie_id[k]] = tie_size.get(tie_id[k], 0) + 1
    inv_of = _inverse_pairs(s, tie_id, tie_size, tie_bits)

    records = []
    for k in range(n_sets):
        is_fixed = cls_fixed[align_id[k]]
        group = "fixed" if is_fixed else GROUPS[group_from_bits(tie_bits[tie_id[k]])]
        role = ("input" if k == 0 else "output" if k in out_sets
                else "other" if k in s.constant else "hidden")
        act, act_params = (act_of.get(ns_value[k], ("identity", {})) if k in ns_value
                           else s.ns_act.get(k, ("identity", {})))
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
        if k in inv_of:   # only on such node sets, so that other specs keep their hash
            records[-1]["inv_tie"] = inv_of[k]
        if align_id[k] in blocks_of:   # likewise
            records[-1]["blocks"] = blocks_of[align_id[k]]
    return records


def _block_moves(s: SymmetryState, align_id: list, cls_fixed: list, cls_plain: list) -> dict:
    """``{align class: {"id": j, "size": D}}``: the classes whose blocks of ``D`` channels move
    whole, class ``j`` of classes moving by one permutation of their block indices
    (``SymmetryState.block_perm``; ids in order of first node set). Calls that share an align
    class are joined (one permutation for all). A joined group is dropped (only the
    permutations inside blocks remain: the smaller group) when any of its classes is fixed, is
    cut by an op that declares no block moves (a grouped convolution: its own blocks would have
    to move too), or is blocked with two block sizes."""
    calls = UnionFind(len(s.block_moves))
    first: dict = {}
    for i, sets in enumerate(s.block_moves):
        for ns, _ in sets:
            calls.union(i, first.setdefault(align_id[ns], i))
    size: dict = {}
    count: dict = {}      # blocks per class of one group: one number
    bad: set = set()
    for i, sets in enumerate(s.block_moves):
        root = calls.find(i)
        for ns, d in sets:
            c = align_id[ns]
            members = {s.sizes[k] for k, a in enumerate(align_id) if a == c}
            if (cls_fixed[c] or cls_plain[c] or size.setdefault(c, d) != d or members != {
                    s.sizes[ns]} or count.setdefault(root, s.sizes[ns] // d) != s.sizes[ns] // d):
                bad.add(root)
    ids: dict = {}
    out = {}
    for c in sorted(size, key=align_id.index):
        root = calls.find(first[c])
        if root not in bad:
            out[c] = {"id": ids.setdefault(root, len(ids)), "size": size[c]}
    return out


def _inverse_pairs(s: SymmetryState, tie_id: list, tie_size: dict, tie_bits: dict) -> dict:
    """``{node set: partner}`` for the inverse ties (``SymmetryState.inverse``) that are kept,
    with the factor bits of both members intersected in ``tie_bits``. A node set in two pairs
    or also tied to another (a residual) would need one factor to be the reciprocal of several
    others': such pairs are dropped and their members take no factor (the smaller group)."""
    count: dict = {}
    for a, b in s.inverse:
        for k in (a, b):
            count[k] = count.get(k, 0) + 1
    inv_of = {}
    for a, b in s.inverse:
        ta, tb = tie_id[a], tie_id[b]
        if a == b or count[a] > 1 or count[b] > 1 or tie_size[ta] > 1 or tie_size[tb] > 1:
            tie_bits[ta] = tie_bits[tb] = ONE
            continue
        tie_bits[ta] = tie_bits[tb] = tie_bits[ta] & tie_bits[tb]
        inv_of[a], inv_of[b] = b, a
    return inv_of


__all__ = ["analyse", "value_parts", "POS", "NEG"]
