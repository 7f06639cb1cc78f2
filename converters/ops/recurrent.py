"""Recurrent layers: ``nn.RNN`` (tanh or ReLU), ``nn.LSTM``, ``nn.GRU``; and indexing their outputs.

Encoding (docs/design.md 3.7). Per layer ``l`` of ``H`` hidden units the op writes one node set
per gate (PyTorch's row order of ``weight_ih_l{l}``: LSTM ``i, f, g, o``; GRU ``r, z, n``; a
plain RNN has a single "gate", its hidden state) and, for LSTM and GRU, one node set ``h`` of the
hidden units. The gate node sets are consecutive, so the ``(G H, in)`` tensor ``weight_ih_l{l}``
is one block of edges *input -> gates* (edge type ``weight``) and ``weight_hh_l{l}`` one block
*h -> gates* (edge type ``recurrent``: these edges close cycles, and a plain RNN has self-loops
``h_i -> h_i``); ``bias_ih_l{l}`` is the gate neurons' ``bias`` column and ``bias_hh_l{l}`` their
``bias_hh`` column. LSTM/GRU add one structural ``state`` edge (value 1) per unit from its
candidate (``g`` / ``n``) to its hidden unit. The next layer's ``weight_ih`` and any consumer read
the ``h`` node set.

Symmetry. The hidden units of a layer may be permuted, one permutation shared by every gate node
set and ``h`` (``align``). The initial state is zero, which every factor keeps, so a unit's factor
holds at every time step by induction:

- plain RNN, ``h_t = sigma(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``: ``h -> D h`` is a symmetry
  when ``sigma(q z) = q sigma(z)``: tanh signs, ReLU positive factors (``W_hh[i, j]`` times
  ``q_i / q_j``; row ``i`` of ``W_ih`` and both biases times ``q_i``);
- LSTM, ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``: flipping the rows of the ``g``
  gate (``g = tanh(.)`` is odd) flips ``g``, hence ``c`` (from ``c_0 = 0``), ``tanh(c)`` and ``h``;
  the gates read ``h`` through the columns of ``W_hh``, which flip with it. ``i, f, o`` are
  sigmoids (no factor). So ``g`` and ``h`` are *tied* (one factor), group ``sign``;
- GRU, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``:
  flipping ``n`` (rows of ``W_in``, ``b_in``, ``W_hn``, ``b_hn``) and ``h`` (columns of every
  ``W_h*``) together keeps ``h_t = (1 - z)(-n) + z(-h_{t-1}) = -h_t``; ``r, z`` are sigmoids.
  ``n`` and ``h`` are tied, ``sign``.

Bidirectional layers: each layer and direction (``l{k}``, ``l{k}_reverse``) gets its own gate
node sets and ``h`` with the edges above, inside the direction; a next layer's ``weight_ih``
reads both directions' ``h`` (forward first), and the output sequence is a value of the last
layer's two ``h`` node sets. Each direction is a recurrence of its own from a zero state (the
backward one over reversed time), so each gets the symmetry above alone: one permutation per
direction, the directions independent (docs/design.md 3.7).

Outputs. The module returns a tuple; ``select`` ops index it: ``out = rnn(x)[0]`` (the sequence of
the last layer's ``h``), ``out[:, -1]`` (a time step or a time slice; batch and feature
dimensions kept whole), ``h_n[k]`` (entry ``k``: layer ``k``, or layer ``k // 2`` direction
``k % 2`` when bidirectional). The LSTM cell state ``c_n`` is not
a node set of the graph: reading it is refused.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn

from ..groups import ANY, NEG, ONE, POS
from .base import Edges, FeatureSlot, OpRule

#: mode -> (gate names, gate activations, index of the candidate gate tied with h or None)
GATES = {
    "RNN_TANH": (("h",), ("tanh",), None),
    "RNN_RELU": (("h",), ("relu",), None),
    "LSTM": (("i", "f", "g", "o"), ("sigmoid", "sigmoid", "tanh", "sigmoid"), 2),
    "GRU": (("r", "z", "n"), ("sigmoid", "sigmoid", "tanh"), 2),
}
#: factors a hidden unit may take, by mode (before its consumers restrict them)
UNIT_BITS = {"RNN_TANH": NEG, "RNN_RELU": POS, "LSTM": NEG, "GRU": NEG}
_GATE_BITS = {"sigmoid": ONE, "tanh": NEG, "relu": POS}
_CLASSES = {"RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


def _items(t) -> dict:
    """fx node -> (what, info) of the recurrent layers' non-tensor results seen by the tracer
    (``what``: tuple, state, hn, cn, seq)."""
    return t.__dict__.setdefault("rnn_items", {})


def _untraced(t, node, why: str) -> None:
    t.vals[node] = None
    t.__dict__.setdefault("untraced", {})[node] = why


def _dirs(op) -> int:
    """Directions per layer: 2 for a bidirectional layer, else 1."""
    return 2 if op.get("bidirectional") else 1


def _layers(op) -> list:
    """``[(gate node sets, hidden node set)]`` per layer and direction (layer-major: layer
    ``l``, direction ``d`` is entry ``l * D + d``, PyTorch's order of ``h_n``)."""
    return list(zip(op["gates"], op["hidden"]))


def _suffix(op, k: int) -> str:
    """State-dict key suffix of entry ``k`` of ``_layers``: ``l{layer}`` or
    ``l{layer}_reverse``."""
    layer, d = divmod(k, _dirs(op))
    return f"l{layer}" + ("_reverse" if d else "")


def _out_sets(op) -> list:
    """The node sets along the features of the output sequence: the last layer's hidden units,
    forward then backward."""
    return list(op["hidden"][-_dirs(op):])


class Recurrent(OpRule):
    """``rnn``: ``module`` path, ``mode`` (RNN_TANH, RNN_RELU, LSTM, GRU), ``input_size``,
    ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``, ``dropout``, ``bidirectional``
    (only when true); ``gates`` (per layer and direction, layer-major, its gate node sets) and
    ``hidden`` (likewise, its hidden node set; ``ns`` is the last one). Its value is the
    module's tuple, read by ``select`` ops."""

    kind = "rnn"
    creates_nodes = True
    modules = (nn.RNN, nn.LSTM, nn.GRU)
    doc = ("``module``, ``mode`` (RNN_TANH, RNN_RELU, LSTM, GRU), sizes, ``num_layers``, "
           "``bias``, ``batch_first``; ``gates``/``hidden``: its node sets per layer")

    def trace_module(self, t, node, m, x) -> None:
        what = type(m).__name__
        t.claim_module(node, m)
        if getattr(m, "proj_size", 0):
            t.fail(node, what, f"LSTM with proj_size={m.proj_size} is not supported")
        if x.rank != 3:
            t.fail(node, what, f"only batched (rank-3) inputs are supported, got rank {x.rank}")
        src = node.args[0]
        shape = t.shape(src)
        F = m.input_size
        if shape[-1] != F:
            t.fail(node, what, f"its input's last dimension is {shape[-1]}, not input_size {F}")
        if t.ops[0]["op"] == "input" and x.vid == t.ops[0]["out"]:
            # the network input read directly: its features are the last dimension
            if len(src.users) != 1:
                t.fail(node, what, "the network input is read by the recurrent layer and by "
                                   "something else")
            t.ops[0] = {**t.ops[0], "channels": F, "channels_last": True}
            t.sizes[0], x.chan = F, F
        elif x.flat is not None or x.chan != F:
            t.fail(node, what, f"its input must be {F} features in the last dimension (no "
                               f"flatten before it)")
        gate_names, _, cand = GATES[m.mode]
        H, path = m.hidden_size, node.target
        gates, hidden = [], []
        for layer in range(m.num_layers):
            for sfx in (("", "_reverse") if m.bidirectional else ("",)):
                sets = []
                for g in gate_names:
                    ns = len(t.sizes)
                    t.sizes[ns], t.names[ns] = H, f"{path}.l{layer}{sfx}.{g}"
                    sets.append(ns)
                gates.append(sets)
                if cand is None:
                    hidden.append(sets[0])
                else:
                    ns = len(t.sizes)
                    t.sizes[ns], t.names[ns] = H, f"{path}.l{layer}{sfx}.h"
                    hidden.append(ns)
        vid = t.new_vid()
        t.ops.append({"op": "rnn", "module": path, "mode": m.mode, "input_size": F,
                      "hidden_size": H, "num_layers": m.num_layers, "bias": bool(m.bias),
                      "batch_first": bool(m.batch_first), "dropout": float(m.dropout),
                      # only when set, so that one-directional specs keep their hash
                      **({"bidirectional": True} if m.bidirectional else {}),
                      "gates": gates, "hidden": hidden, "in": [x.vid], "out": vid,
                      "ns": hidden[-1]})
        _items(t)[node] = ("tuple", {"vid": vid, "op": t.ops[-1], "path": []})
        _untraced(t, node, f"the output of '{path}' is a tuple: index it "
                           f"(out, h_n = {path}(x); out[:, -1]; h_n[-1])")

    def example_input(self, m, model, dtype):
        shape = (2, 3, m.input_size) if m.batch_first else (3, 2, m.input_size)
        return True, torch.zeros(*shape, dtype=dtype)

    # -- structure and symmetry ------------------------------------------------------------
    def out_parts(self, op, parts):
        return _out_sets(op)

    def inner_sets(self, op):
        return [k for gates, h in _layers(op) for k in (*gates, h) if k != op["ns"]]

    def feature_columns(self, op):
        return ("bias", "bias_hh") if op["bias"] else ("bias",)

    def constrain(self, op, s):
        """Every input factor is absorbed by ``weight_ih``'s columns; per layer the gates and
        hidden units get the factors of the derivation in the module doc, the hidden units
        intersected with what their consumers allow (``SymmetryState.ns_allow``)."""
        _, acts, cand = GATES[op["mode"]]
        unit = UNIT_BITS[op["mode"]]
        for gates, h in _layers(op):
            h_bits = unit & s.ns_allow.get(h, ANY)
            if h == op["ns"]:
                h_bits &= s.allow[op["out"]]
            for k, a in zip(gates, acts):
                if k != h:
                    s.ns_allow[k] = _GATE_BITS[a]
                    s.ns_act[k] = (a, {})
            h_act = (acts[0] if cand is None else "identity", {})
            if h == op["ns"]:
                s.allow[op["out"]] = h_bits
                s.act_of[op["out"]] = h_act
            else:
                s.ns_allow[h], s.ns_act[h] = h_bits, h_act

    def couple(self, op, s):
        cand = GATES[op["mode"]][2]
        for gates, h in _layers(op):
            for k in gates:
                s.align.union(k, h)
            if cand is not None:
                s.tie.union(gates[cand], h)

    # -- layout -----------------------------------------------------------------------------
    def edge_blocks(self, op, lay):
        m, H = op["module"], op["hidden_size"]
        nodes = lambda ns: torch.arange(lay.offsets[ns], lay.offsets[ns + 1])
        src_in = torch.cat([nodes(p) for p in lay.parts[op["in"][0]]])
        cand, D = GATES[op["mode"]][2], _dirs(op)
        out, layers = [], _layers(op)
        for k, (gates, h) in enumerate(layers):
            GH = len(gates) * H
            if k and k % D == 0:    # a next layer reads every direction of the previous one
                src_in = torch.cat([nodes(hh) for _, hh in layers[k - D:k]])
            for key, src, etype in (("weight_ih", src_in, "weight"),
                                    ("weight_hh", nodes(h), "recurrent")):
                out.append(Edges(src[None, :].expand(GH, -1).clone(), (),
                                 f"{m}.{key}_{_suffix(op, k)}", etype, (GH, len(src)),
                                 dst=gates[0]))
            if cand is not None:
                out.append(Edges(nodes(gates[cand])[:, None], (), None, "state", (H,), dst=h))
        return out

    def features(self, op, lay):
        if not op["bias"]:
            return []
        m, H, out = op["module"], op["hidden_size"], []
        for k, (gates, _) in enumerate(_layers(op)):
            start, GH, sfx = lay.offsets[gates[0]], len(gates) * H, _suffix(op, k)
            out += [FeatureSlot(f"{m}.bias_ih_{sfx}", lay.col["bias"], start, GH, False),
                    FeatureSlot(f"{m}.bias_hh_{sfx}", lay.col["bias_hh"], start, GH, False)]
        return out

    # -- running ----------------------------------------------------------------------------
    def to_module(self, op):
        kw = dict(num_layers=op["num_layers"], bias=op["bias"], batch_first=op["batch_first"],
                  dropout=op["dropout"], bidirectional=_dirs(op) == 2)
        if op["mode"].startswith("RNN_"):
            kw["nonlinearity"] = op["mode"][4:].lower()
        return _CLASSES[op["mode"]](op["input_size"], op["hidden_size"], **kw)

    def batched(self, op, ins, params, B):
        """B networks at once: the recurrence written out (``(B, n, ...)`` matmuls per step),
        returning the module's tuple with its layout (batch dimension ``B * n``, network-major:
        ``(B n, T, D H)`` batch first, ``(T, B n, D H)`` sequence first; ``h_n``:
        ``(L D, B n, H)``). A bidirectional layer's backward direction reads the sequence from
        its end; the next layer reads both directions' features, forward first."""
        m, mode, H, D = op["module"], op["mode"], op["hidden_size"], _dirs(op)
        x = ins[0] if op["batch_first"] else ins[0].transpose(0, 1)    # (B n, T, F)
        Bn, T = x.shape[0], x.shape[1]
        u = x.reshape(B, Bn // B, T, -1)
        hs, cs, seqs = [], [], []
        for k in range(len(op["hidden"])):
            sfx, reverse = _suffix(op, k), k % D == 1
            if k and k % D == 0:
                u = torch.cat(seqs, dim=-1)                             # (B, n, T, D H)
                seqs = []
            W_ih, W_hh = params[f"{m}.weight_ih_{sfx}"], params[f"{m}.weight_hh_{sfx}"]
            gi = torch.einsum("bntf,bgf->bntg", u, W_ih)
            if op["bias"]:
                gi = gi + params[f"{m}.bias_ih_{sfx}"][:, None, None, :]
            b_hh = params[f"{m}.bias_hh_{sfx}"][:, None, :] if op["bias"] else 0
            h = u.new_zeros(B, Bn // B, H)
            c = torch.zeros_like(h)
            steps = []
            for step in (range(T - 1, -1, -1) if reverse else range(T)):
                gh = torch.bmm(h, W_hh.transpose(1, 2)) + b_hh
                a = gi[:, :, step]
                if mode == "RNN_TANH":
                    h = torch.tanh(a + gh)
                elif mode == "RNN_RELU":
                    h = torch.relu(a + gh)
                elif mode == "LSTM":
                    i, f, g, o = (a + gh).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    ar, az, an = a.chunk(3, dim=-1)
                    hr, hz, hn = gh.chunk(3, dim=-1)
                    r, z = torch.sigmoid(ar + hr), torch.sigmoid(az + hz)
                    n = torch.tanh(an + r * hn)
                    h = (1 - z) * n + z * h
                steps.append(h)
            if reverse:
                steps.reverse()
            seqs.append(torch.stack(steps, dim=2))                      # (B, n, T, H)
            hs.append(h.reshape(Bn, H))
            cs.append(c.reshape(Bn, H))
        out = torch.cat(seqs, dim=-1).reshape(Bn, T, D * H)
        if not op["batch_first"]:
            out = out.transpose(0, 1)
        h_n = torch.stack(hs)
        return (out, (h_n, torch.stack(cs))) if mode == "LSTM" else (out, h_n)

    def act(self, op, sd, a, parts):
        m, D, layers = op["module"], _dirs(op), _layers(op)
        src = parts[op["in"][0]]
        for k, (gates, h) in enumerate(layers):
            if k and k % D == 0:    # a next layer reads every direction of the previous one
                src = [hh for _, hh in layers[k - D:k]]
            p_in, q_in = a.perm_of(src), a.q_of(src)
            p_rows, q_rows = a.perm_of(gates), a.q_of(gates)
            for key, pc, qc in (("weight_ih", p_in, q_in), ("weight_hh", a.perm(h), a.q(h))):
                name = f"{m}.{key}_{_suffix(op, k)}"
                w = a.scaled(sd[name], q_rows[:, None] / qc[None, :])
                sd[name] = a.moved(a.moved(w, p_rows, 0), pc, 1)
            if op["bias"]:
                for key in ("bias_ih", "bias_hh"):
                    name = f"{m}.{key}_{_suffix(op, k)}"
                    sd[name] = a.moved(a.scaled(sd[name], q_rows), p_rows)


def dense_batch_dim(ops) -> int:
    """The batch axis of the network input in the dense view (``functional_forward``): 1 when a
    sequence-first recurrent layer reads it (``(T, n, F)``), else 0. The B networks are stacked
    along that axis, network-major. Raises ``ValueError`` naming the layer for the sequence-first
    forms the dense view cannot run: a layer reading something else than the network input, or
    an output sequence (or time slice) read by anything but a time-step index (its batch axis is
    not the first, which the ops after it assume)."""
    first = [op for op in ops if op["op"] == "rnn" and not op["batch_first"]]
    if not first:
        return 0
    owner, seq = {}, {}     # value -> its layer: the tuples, then the sequences read from them
    for op in first:
        if op["in"][0] != ops[0]["out"]:
            raise ValueError(f"'{op['module']}': the dense view runs a sequence-first recurrent "
                             f"layer only on the network input (make it batch_first)")
        owner[op["out"]] = op
    for op in ops:
        v = op.get("in", [None])[0]
        if op["op"] == "select" and (v in owner and tuple(op["path"]) == (0,) or
                                     v in seq and not isinstance(op["index"][0], (int, str))):
            seq[op["out"]] = owner.get(v) or seq[v]
        elif op["op"] != "select":
            for v in op.get("in", ()):
                if v in seq:
                    raise ValueError(
                        f"'{seq[v]['module']}': the dense view reads the output sequence of a "
                        f"sequence-first recurrent layer only one time step at a time "
                        f"(out[-1]); make it batch_first to read whole sequences or slices")
    return 1


# -- indexing the outputs -----------------------------------------------------------------------
def _slice_json(s: slice) -> dict:
    for v in (s.start, s.stop, s.step):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"slice bounds must be constant integers, got {s}")
    return {"slice": [s.start, s.stop, s.step]}


def _index_of(item):
    if isinstance(item, dict):
        return slice(*item["slice"])
    return slice(None) if item == "all" else item


class Select(OpRule):
    """``select``: one part of a recurrent layer's result: ``path`` (tuple positions: ``[0]``
    the output sequence, ``[1, k]`` / ``[1, 0, k]`` entry ``k`` of ``h_n``) then ``index`` (per
    dimension of the sequence: ``"all"``, an integer or ``{"slice": [start, stop, step]}``; time
    only); ``parts``: the node sets of the result's features (the last dimension; both
    directions' for a bidirectional output sequence)."""

    kind = "select"
    functions = (operator.getitem,)
    doc = ("a recurrent layer's output sequence, a time step or slice of it, or one layer of "
           "``h_n``: ``path``, ``index``, ``parts``")

    def trace_function(self, t, node, fn, args, kwargs, name):
        src, idx = args
        items = _items(t)
        if src not in items:
            t.fail(node, "indexing", "indexing is supported only on the results of a recurrent "
                                     "layer (out, h_n = rnn(x); out[:, -1]; h_n[-1])")
        what, info = items[src]
        op = info["op"]
        path = info["path"]
        where = f"output of '{op['module']}'"
        if what == "tuple":
            if idx == 0:
                return self._emit(t, node, info, path + [0], [], _out_sets(op), 3, seq=True)
            if idx == 1:
                kind = "state" if op["mode"] == "LSTM" else "hn"
                items[node] = (kind, {**info, "path": path + [1]})
                return _untraced(t, node, f"h_n of '{op['module']}' holds every layer: index "
                                          f"it (h_n[-1])" if kind == "hn" else
                                 f"the state (h_n, c_n) of '{op['module']}': unpack it")
            t.fail(node, "indexing", f"{where} is (output, state): index 0 or 1, got {idx!r}")
        if what == "state":
            if idx == 0:
                items[node] = ("hn", {**info, "path": path + [0]})
                return _untraced(t, node, f"h_n of '{op['module']}' holds every layer: index it "
                                          f"(h_n[-1])")
            if idx == 1:
                items[node] = ("cn", info)
                return _untraced(t, node, f"the cell state c_n of the LSTM '{op['module']}' is "
                                          f"not a node set of the graph (read the output or "
                                          f"h_n)")
            t.fail(node, "indexing", f"the state of '{op['module']}' is (h_n, c_n): index 0 or "
                                     f"1, got {idx!r}")
        if what == "cn":
            t.fail(node, "indexing", f"the cell state c_n of the LSTM '{op['module']}' is not a "
                                     f"node set of the graph (read the output or h_n)")
        if what == "hn":
            L = op["num_layers"] * _dirs(op)
            k = idx
            if isinstance(k, tuple) and k and all(i == slice(None) or i is Ellipsis
                                                  for i in k[1:]) and len(k) <= 3:
                k = k[0]                                    # h_n[k, :, :], h_n[k, ...]
            if not isinstance(k, int) or isinstance(k, bool) or not -L <= k < L:
                what_k = ("one layer number" if L == op["num_layers"] else
                          "one entry (layer * 2 + direction; concatenate the directions with "
                          "torch.cat([h_n[-2], h_n[-1]], 1))")
                t.fail(node, "indexing", f"index h_n of '{op['module']}' with {what_k} in "
                                         f"[-{L}, {L}), got {idx!r}")
            return self._emit(t, node, info, path + [k % L], [], [op["hidden"][k % L]], 2)
        # a sequence value: time indexing only
        items_ = list(idx) if isinstance(idx, tuple) else [idx]
        if sum(i is Ellipsis for i in items_) > 1 or any(i is None for i in items_):
            t.fail(node, "indexing", f"unsupported index {idx!r} on the {where}")
        if Ellipsis in items_:
            k = items_.index(Ellipsis)
            items_ = items_[:k] + [slice(None)] * (3 - len(items_) + 1) + items_[k + 1:]
        items_ += [slice(None)] * (3 - len(items_))
        if len(items_) != 3:
            t.fail(node, "indexing", f"too many indices {idx!r} for the {where}")
        tdim = 1 if op["batch_first"] else 0
        for d in range(3):
            i = items_[d]
            if d != tdim and i != slice(None):
                t.fail(node, "indexing", f"only the time dimension of the {where} may be "
                                         f"indexed (batch and features kept whole), got "
                                         f"{idx!r}")
        ti = items_[tdim]
        try:
            enc = (_slice_json(ti) if isinstance(ti, slice) else
                   ti if isinstance(ti, int) and not isinstance(ti, bool) else None)
        except ValueError as e:
            t.fail(node, "indexing", str(e))
        if enc is None:
            t.fail(node, "indexing", f"the time index must be a constant integer or slice, got "
                                     f"{ti!r}")
        index = ["all"] * 3
        index[tdim] = enc
        rank = 3 if isinstance(ti, slice) else 2
        self._emit(t, node, {**info, "vid": t.vals[src].vid}, [], index, _out_sets(op), rank,
                   seq=rank == 3)

    @staticmethod
    def _emit(t, node, info, path, index, parts, rank, seq=False):
        vid = t.new_vid()
        t.ops.append({"op": "select", "path": path, "index": index, "parts": list(parts),
                      "in": [info["vid"]], "out": vid})
        t.vals[node] = t.value(vid, list(parts), sum(t.sizes[ns] for ns in parts), rank, None,
                               caxes=(rank - 1,))
        if seq:
            _items(t)[node] = ("seq", {**info, "vid": vid, "path": []})

    def out_parts(self, op, parts):
        return list(op["parts"])

    def constrain(self, op, s):
        """Transparent: the node set it reads keeps what its consumers allow."""
        for ns in op["parts"]:
            s.restrict_set(ns, s.allow[op["out"]])

    def apply(self, op, ins):
        v = ins[0]
        for p in op["path"]:
            v = v[p]
        if op["index"]:
            v = v[tuple(_index_of(i) for i in op["index"])]
        return v


__all__ = ["Recurrent", "Select", "GATES", "UNIT_BITS", "dense_batch_dim"]
