"""Embeddings, learned positions and tied weights (docs/design.md 3.9).

- ``embedding`` (``nn.Embedding``): the model input is integer token ids, shape ``(batch,
  *tokens)``. The input node set holds one fixed node per vocabulary entry (``num_embeddings``
  nodes: the one-hot reading of an id), and the embedding writes ``embedding_dim`` neurons with
  one ``weight`` edge ``v -> i`` per entry ``weight[v, i]``: ``emb(ids) = onehot(ids) W``, a
  bias-free ``Linear`` from the vocabulary, so its neurons take whatever their consumers allow.
- ``position``: a parameter (or persistent buffer) used outside a module and joined to a stream
  of token-wise features ``(batch, *tokens, d)``: added (``x + self.pos[:, :T]``, ``x +
  self.pos``) or concatenated along a token axis (``torch.cat([self.cls.expand(B, -1, -1), x],
  dim=1)``). Its ``L`` positions (the entries along its non-feature axes) are a fixed node set of
  their own (role ``other``) with one ``weight`` edge ``p -> i`` per entry ``P[p, i]``, into a new
  node set of ``d`` neurons that also reads the stream through one ``residual`` edge per neuron
  and is tied to it: a bias per position, which moves and scales with its feature.
- ``tie``: an ``nn.Linear`` whose weight *is* an embedding's weight (``head.weight =
  emb.weight``): an identity op after the Linear that records the tie. The embedding's neurons
  and the Linear's input neurons share one permutation and take reciprocal factors
  (``q_head = 1 / q_emb``, an inverse tie), or, when either is tied to other node sets, one
  factor restricted to sign flips; the graph's ``edge_tie`` field gives the two edges holding
  one weight one id.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from ..groups import NEG
from .base import Edges, OpRule


def _untraced(t, node, why: str) -> None:
    t.vals[node] = None
    t.__dict__.setdefault("untraced", {})[node] = why


class Embedding(OpRule):
    """``embedding``: ``module`` path, ``num_embeddings``, ``embedding_dim``, ``padding_idx``,
    ``scale_grad_by_freq``, ``sparse``; reads the model input (token ids) and writes
    ``embedding_dim`` neurons, one edge per weight from the vocabulary nodes."""

    kind = "embedding"
    creates_nodes = True
    modules = (nn.Embedding,)
    #: on_call_module hands it the raw fx argument (the ids are no traced tensor)
    reads_ids = True
    doc = ("``module``, ``num_embeddings``, ``embedding_dim``, ``padding_idx``: token ids -> "
           "features; one edge per weight from the vocabulary nodes (node set 0)")

    # -- the ids input -------------------------------------------------------------------------
    @staticmethod
    def trace_ids(t, node) -> None:
        """The model input is integer token ids ``(batch, *tokens)``: node set 0 is the
        vocabulary, sized by the embedding that reads it (``channels`` filled in then)."""
        shape = t.shape(node)
        if len(shape) < 1:
            t.fail(node, "input", f"token ids must be (batch, *tokens), got shape {shape}")
        t.sizes[0], t.names[0] = 0, "tokens"
        vid = t.new_vid()
        t.ops.append({"op": "input", "out": vid, "ns": 0, "channels": 0,
                      "rank": len(shape) - 1, "ids": True})
        t.ids_node = node
        t.ids_val = t.value(vid, [0], 0, len(shape), None, ())
        t.input_shape = list(shape[1:])
        _untraced(t, node, "the model input is integer token ids, which only an nn.Embedding "
                           "may read")

    def trace_module(self, t, node, m, x) -> None:
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if src in t.__dict__.get("aranges", {}):     # self.wpe(torch.arange(T)): positions
            return t.rules["position"].trace_lookup(t, node, m)
        ids = getattr(t, "ids_node", None)
        if src is None or src is not ids:
            t.fail(node, "Embedding", "an nn.Embedding must read the model input (integer token "
                                      "ids) directly")
        if m.max_norm is not None:
            t.fail(node, "Embedding", f"max_norm={m.max_norm} renormalises rows of the weight in "
                                      f"place during forward (the function changes the "
                                      f"parameters); use max_norm=None")
        t.claim_module(node, m)
        if t.sizes[0]:
            t.fail(node, "Embedding", f"the token ids are read by two embeddings ('{t.ids_by}' "
                                      f"and '{node.target}'); one table per input is supported")
        t.ids_by = node.target
        V, d = m.num_embeddings, m.embedding_dim
        t.sizes[0] = V
        t.ops[0]["channels"] = V
        t.ids_val.chan = V
        op = {"op": "embedding", "module": node.target, "num_embeddings": V, "embedding_dim": d,
              "padding_idx": m.padding_idx, "scale_grad_by_freq": bool(m.scale_grad_by_freq),
              "sparse": bool(m.sparse)}
        rank = len(t.shape(node))
        t.new_nodeset(node, op, [t.ids_val], d, node.target, caxes=(rank - 1,))

    def example_input(self, m, model, dtype):
        return True, torch.arange(6).reshape(2, 3) % m.num_embeddings

    def constrain(self, op, s):
        """Its input (the vocabulary) is fixed; it absorbs any factor of its own neurons (the
        weight's columns)."""

    def edges(self, op, lay) -> Edges:
        V, d = op["num_embeddings"], op["embedding_dim"]
        src = lay.offsets[0] + torch.arange(V)[None, :].expand(d, V)
        # the state-dict weight is (V, d): the (d, V) destination-major edge values transposed
        return Edges(src, (), op["module"] + ".weight", "weight", (V, d), (d, V), (1, 0))

    def to_module(self, op):
        return nn.Embedding(op["num_embeddings"], op["embedding_dim"],
                            padding_idx=op["padding_idx"],
                            scale_grad_by_freq=op["scale_grad_by_freq"], sparse=op["sparse"])

    def batched(self, op, ins, params, B):
        ids = ins[0]                                           # (B * n, *tokens) long
        W = params[op["module"] + ".weight"]                   # (B, V, d)
        net = torch.arange(B, device=ids.device).repeat_interleave(ids.shape[0] // B)
        return W[net.view(-1, *([1] * (ids.dim() - 1))), ids]

    def act(self, op, sd, a, parts):
        # W'[v, p(i)] = q_i W[v, i]: a column moves and scales with its neuron
        ns, key = op["ns"], op["module"] + ".weight"
        sd[key] = a.moved(a.scaled(sd[key], a.q(ns)[None, :]), a.perm(ns), 1)


# -- parameters used outside a module: learned positions, CLS tokens -----------------------------
_ADD_FNS = (operator.add, operator.iadd, torch.add)


def _slices(t, node, idx, rank: int) -> list:
    """The axes of a ``rank``-d parameter that ``param[idx]`` cuts to a length (``[:, :T]``);
    refused unless every item is a slice from the start with no step."""
    items = idx if isinstance(idx, tuple) else (idx,)
    if len(items) > rank or not all(isinstance(s, slice) for s in items):
        t.fail(node, "indexing", f"a parameter may only be sliced from the start of its axes "
                                 f"(self.pos[:, :T]), got {idx!r}")
    cut = []
    for a, s in enumerate(items):
        if s.step not in (None, 1) or s.start not in (None, 0):
            t.fail(node, "indexing", f"a parameter may only be sliced from the start of its "
                                     f"axes, with no step (self.pos[:, :T]), got {s}")
        if s.stop is not None:
            cut.append(a)
    return cut


class Position(OpRule):
    """``position``: ``param`` (the state-dict key), ``shape`` (its shape), ``buffer``; ``core``
    (its shape right-aligned to the stream's axes after the batch, leading 1s added), ``sliced``
    (core axes cut to the stream's length at run time), ``form`` ``add`` or ``cat`` (``dim``,
    the tensor axis, and ``first``: the parameter comes first), ``pos_ns`` (its fixed position
    nodes) and ``ns`` (the result's neurons, tied to the stream's)."""

    kind = "position"
    creates_nodes = True
    doc = ("``param``, ``shape``, ``core``, ``sliced``, ``form`` (``add``, or ``cat`` with "
           "``dim``, ``first``), ``pos_ns``: a parameter added to or concatenated with the "
           "token stream; edges from its fixed position nodes")

    # -- tracing -------------------------------------------------------------------------------
    @staticmethod
    def trace_attr(t, node) -> bool:
        """A ``get_attr`` of a parameter or persistent buffer: remembered, handed to this rule's
        ``trace_use`` at its use. False for anything else (refused by the caller)."""
        key = str(node.target)
        try:
            tensor = t.gm.get_parameter(key)
            buffer = False
        except AttributeError:
            try:
                tensor = t.gm.get_buffer(key)
                buffer = True
            except AttributeError:
                return False
        if key not in t.module.state_dict():
            t.fail(node, f"get_attr {key}", "a non-persistent buffer used in forward is not in "
                                            "the state dict")
        t.__dict__.setdefault("attrs", {})[node] = {"param": key, "tensor": tensor,
                                                    "buffer": buffer, "cut": []}
        _untraced(t, node, f"'{key}' is a parameter used outside a module: it may only be added "
                           f"to the token stream or concatenated with it along a token axis")
        return True

    @staticmethod
    def trace_lookup(t, node, m) -> None:
        """``self.wpe(torch.arange(T))`` (``converters.ops.tokens.Arange``): the table's first
        ``T`` rows, read as a learned position table sliced to the stream's length
        (``self.wpe.weight[:T]``, bitwise the lookup) at its use (``trace_use``)."""
        path = str(node.target)
        if path in t.used_modules:
            t.fail(node, "Embedding", "module called more than once (weight sharing)")
        bad = {"max_norm": m.max_norm, "padding_idx": m.padding_idx,
               "scale_grad_by_freq": m.scale_grad_by_freq or None, "sparse": m.sparse or None}
        bad = {k: v for k, v in bad.items() if v is not None}
        if bad:
            t.fail(node, "Embedding", f"a table of positions looked up with torch.arange is "
                                      f"read as a plain parameter, which would lose "
                                      f"{', '.join(f'{k}={v}' for k, v in bad.items())} (they "
                                      f"change the forward or the gradient); use the defaults")
        t.used_modules[path] = m
        key = f"{path}.weight"
        lead = t.aranges[node.args[0]]["lead"]   # arange(T).unsqueeze(0): (1, T, d) rows
        t.__dict__.setdefault("attrs", {})[node] = {"param": key, "tensor": m.weight,
                                                    "buffer": False, "cut": [0], "lead": lead}
        _untraced(t, node, f"'{path}' looked up with torch.arange(T) is a table of positions: "
                           f"it may only be added to the token stream")

    def trace_use(self, t, node) -> None:
        """``node`` reads a remembered parameter: a slice, an ``expand``, an addition to the
        token stream or a concatenation with it; anything else is refused naming it."""
        attrs = t.attrs
        used = [a for a in node.all_input_nodes if a in attrs]
        rec = attrs[used[0]]
        what = f"'{rec['param']}'"
        if node.op == "call_function" and node.target is operator.getitem:
            rank = len(rec["tensor"].shape)
            attrs[node] = {**rec, "cut": sorted(set(rec["cut"]) | set(
                _slices(t, node, node.args[1], rank)))}
            return _untraced(t, node, t.untraced[used[0]])
        if node.op == "call_method" and node.target == "expand":
            attrs[node] = dict(rec)
            return _untraced(t, node, t.untraced[used[0]])
        is_add = ((node.op == "call_function" and node.target in _ADD_FNS)
                  or (node.op == "call_method" and node.target == "add"))
        if is_add and len(node.args) == 2 and not node.kwargs and len(used) == 1:
            other = node.args[1] if node.args[0] is used[0] else node.args[0]
            return self._emit(t, node, rec, used[0], other, "add")
        if node.op == "call_function" and node.target is torch.cat:
            tensors = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if len(tensors) != 2 or len(used) != 1:
                t.fail(node, "cat", f"a concatenation with the parameter {what} must join it "
                                    f"with one token stream (torch.cat([cls, x], dim=1))")
            first = tensors[0] is used[0]
            return self._emit(t, node, rec, used[0], tensors[1] if first else tensors[0], "cat",
                              dim, first)
        name = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))
        t.fail(node, f"{node.op} {name}",
               f"the parameter {what} is used outside a supported module (e.g. F.linear with "
               f"raw parameters); a bare parameter may only be added to the token stream "
               f"(x + self.pos[:, :T]) or concatenated with it along a token axis "
               f"(torch.cat([self.cls.expand(B, -1, -1), x], dim=1))")

    def _emit(self, t, node, rec, pnode, other, form, dim=None, first=False) -> None:
        """Emit the op joining the parameter (as fx node ``pnode``) to the stream ``other``."""
        key = rec["param"]
        if not isinstance(other, fx.Node) or t.vals.get(other) is None:
            t.fail(node, form, f"the parameter '{key}' must be joined to a traced token stream")
        x = t.vals[other]
        t.single_set(node, form, x)
        t.channel_axis(node, form, x, "last")
        xs, ps, full = t.shape(other), t.shape(node), tuple(rec["tensor"].shape)
        pshape = t.shape(pnode)[rec.get("lead", 0):]    # a looked-up table's leading 1 axes
        r = len(xs)
        if len(pshape) != len(full) or len(full) > r or full[-1] != xs[-1]:
            t.fail(node, form, f"the parameter '{key}' of shape {list(full)} (used as "
                               f"{list(pshape)}) must end with the stream's {xs[-1]} features "
                               f"and have at most its {r} axes")
        if len(full) == r and full[0] != 1:
            t.fail(node, form, f"the parameter '{key}' of shape {list(full)} must have size 1 "
                               f"on the batch axis")
        k = len(full) - (1 if len(full) == r else 0)           # axes after the batch
        core = [1] * (r - 1 - k) + list(full[len(full) - k:])
        used = [1] * (r - 1 - k) + list(pshape[len(pshape) - k:])
        sliced = sorted({a + (r - 1 - k) - (len(full) - k) for a in rec["cut"]
                         if a >= len(full) - k})
        if any(a < len(full) - k for a in rec["cut"]) and len(full) == r:
            t.fail(node, form, f"the parameter '{key}' is sliced on the batch axis")
        op = {"op": "position", "param": key, "shape": list(full), "buffer": rec["buffer"],
              "core": core, "sliced": sliced, "form": form}
        if form == "add":
            if ps != xs:
                t.fail(node, "add", f"adding the parameter '{key}' of shape {list(pshape)} "
                                    f"changes the stream's shape {list(xs)} (broadcasting)")
            for a in range(r - 1):
                if a in sliced and used[a] != xs[1 + a]:
                    t.fail(node, "add", f"the parameter '{key}' is sliced to {used[a]} on axis "
                                        f"{1 + a} but the stream has {xs[1 + a]} there")
        else:
            d = dim % r if isinstance(dim, int) else None
            if d is None or d in (0, r - 1):
                t.fail(node, "cat", f"the parameter '{key}' may be concatenated along a token "
                                    f"axis of the stream (not the batch or the features), got "
                                    f"dim={dim}")
            if sliced:
                t.fail(node, "cat", f"the concatenated parameter '{key}' must not be sliced")
            op.update(dim=d, first=bool(first))
        tensor = rec["tensor"]
        if id(tensor) in t.used_params:
            t.fail(node, form, f"the parameter '{key}' is also used as "
                               f"'{t.used_params[id(tensor)]}' (shared)")
        t.used_params[id(tensor)] = key
        L = math.prod(core[:-1])
        pos_ns = len(t.sizes)
        t.sizes[pos_ns], t.names[pos_ns] = L, key
        op["pos_ns"] = pos_ns
        t.new_nodeset(node, op, [x], xs[-1], f"{key}:{node.name}")

    # -- structure and symmetry ----------------------------------------------------------------
    def inner_sets(self, op):
        return [op["pos_ns"]]

    def constrain(self, op, s):
        """Tied to the stream: the stream's neurons take the factors the result allows."""
        s.allow[op["in"][0]] &= s.allow[op["out"]]

    def couple(self, op, s):
        """One permutation and one factor for the stream and the result (a bias per position
        moves and scales with its feature); the position nodes are fixed constant inputs."""
        m = s.parts[op["in"][0]][0]
        s.align.union(m, op["ns"])
        s.tie.union(m, op["ns"])
        s.constant.add(op["pos_ns"])

    def edge_blocks(self, op, lay) -> list:
        d = lay.sizes[op["ns"]]
        L = lay.sizes[op["pos_ns"]]
        stream = lay.offsets[lay.parts[op["in"][0]][0]] + torch.arange(d)[:, None]
        pos = lay.offsets[op["pos_ns"]] + torch.arange(L)[None, :].expand(d, L)
        return [Edges(stream, (), None, "residual", (d,)),
                Edges(pos, (), op["param"], "weight", tuple(op["shape"]), (d, L), (1, 0))]

    # -- running ---------------------------------------------------------------------------------
    def to_param(self, op) -> torch.Tensor:
        """An empty tensor of the parameter's shape (filled by ``load_state_dict``)."""
        return torch.empty(op["shape"])

    @staticmethod
    def _join(op, x, p) -> torch.Tensor:
        """``x`` (n, *tokens, d) joined with ``p`` (n or 1, *core), cut to the stream."""
        for a in op["sliced"]:
            p = p.narrow(1 + a, 0, x.shape[1 + a])
        if op["form"] == "add":
            return x + p
        p = p.expand(x.shape[0], *p.shape[1:])
        return torch.cat([p, x] if op["first"] else [x, p], dim=op["dim"])

    def forward(self, op, param, ins):
        return self._join(op, ins[0], param.reshape(1, *op["core"]))

    def batched(self, op, ins, params, B):
        x = ins[0]
        n = x.shape[0] // B
        p = params[op["param"]].reshape(B, 1, *op["core"])
        p = p.expand(B, n, *op["core"]).reshape(B * n, *op["core"])
        return self._join(op, x, p)

    def act(self, op, sd, a, parts):
        # P'[p, perm(i)] = q_i P[p, i]: the features (last axis) move and scale with the stream
        key, ns = op["param"], op["ns"]
        d = op["core"][-1]
        P = sd[key].reshape(-1, d)
        sd[key] = a.moved(a.scaled(P, a.q(ns)[None, :]), a.perm(ns), 1).reshape(op["shape"])


# -- weight tying --------------------------------------------------------------------------------
class Tie(OpRule):
    """``tie``: after the ``nn.Linear`` at ``linear`` whose weight ``key`` is the weight
    ``same_as`` of the embedding at ``embedding`` (value ``emb_value``, its neurons);
    ``head_in``: the value the Linear reads. An identity on the Linear's output."""

    kind = "tie"
    doc = ("``linear``, ``key``, ``embedding``, ``same_as``, ``emb_value``, ``head_in``: the "
           "Linear before it uses the embedding's weight (identity on its output)")

    @staticmethod
    def allow(t, node, m, pname: str, other: str) -> bool:
        """Whether the parameter ``pname`` of module ``m`` (at ``node``), already claimed as
        ``other``, is a supported tie: an ``nn.Linear``'s weight that is an embedding's weight.
        Records it for ``emit``."""
        emb = next((op for op in t.ops if op["op"] == "embedding"
                    and op["module"] + ".weight" == other), None)
        if type(m) is not nn.Linear or pname != "weight" or emb is None:
            return False
        t.__dict__.setdefault("tied_keys", []).append(f"{node.target}.weight")
        t.__dict__.setdefault("pending_ties", []).append((node, emb))
        return True

    def emit(self, t, node) -> None:
        """Emit the tie op after the Linear ``node`` (the last op)."""
        for tnode, emb in t.__dict__.pop("pending_ties", []):
            lin = t.ops[-1]
            if lin["op"] != "linear" or lin["module"] != tnode.target or lin.get("split"):
                t.fail(node, "tied weight", "a tied weight must be the whole weight of one "
                                            "nn.Linear")
            x = t.tensor_arg(node, node.args[0])
            if lin["spatial"]:
                t.fail(node, "Linear", f"its weight is the embedding '{emb['module']}''s "
                                       f"(tied), but it reads a flattened map")
            t.single_set(node, "Linear (tied weight)", x)
            t.emit(node, {"op": "tie", "linear": lin["module"], "key": lin["module"] + ".weight",
                          "embedding": emb["module"], "same_as": emb["module"] + ".weight",
                          "emb_value": emb["out"], "head_in": x.vid}, t.vals[node])

    def constrain(self, op, s):
        """An identity on the Linear's output (the tie itself is coupled in ``couple``)."""
        s.pass_through(op)

    def couple(self, op, s):
        """Both uses of the weight transform alike exactly when the embedding's neuron ``i`` and
        the head's input neuron ``i`` share one permutation and ``q_head = 1 / q_emb``: an
        inverse tie (``SymmetryState.inverse_tie``). When either node set is already tied to
        others (a residual, a position) or they are one node set, one factor for both restricted
        to sign flips (``q = 1 / q``) is declared instead, which a tie can say."""
        e, h = s.parts[op["emb_value"]][0], s.parts[op["head_in"]][0]
        s.align.union(e, h)
        n = len(s.sizes)
        shared = [k for k in range(n) if k not in (e, h)
                  and s.tie.find(k) in (s.tie.find(e), s.tie.find(h))]
        paired = {k for pair in s.inverse for k in pair}
        if s.tie.find(e) == s.tie.find(h) or shared or e in paired or h in paired:
            s.tie.union(e, h)
            s.allow[op["emb_value"]] &= NEG   # the tie class's factors: its members' AND
        else:
            s.inverse_tie(e, h)

    def apply(self, op, ins):
        return ins[0]

    def tied_edges(self, op, lay) -> list:
        """``[(key, same_as, a, b)]``: edge ``b[k]`` of the Linear holds the weight of edge
        ``a[k]`` of the embedding."""
        emb = next(b for b in lay.blocks if b.weight_key == op["same_as"])
        head = next(b for b in lay.blocks if b.weight_key == op["key"])
        d, V = emb.out, emb.per_dest           # embedding edges: (d, V), head edges: (V, d)
        j, v = torch.meshgrid(torch.arange(d), torch.arange(V), indexing="ij")
        a = emb.start + j * V + v
        b = head.start + v * d + j
        return [(op["key"], op["same_as"], a.reshape(-1), b.reshape(-1))]

    def finish_module(self, op, module) -> None:
        """Tie the rebuilt Linear's weight to the embedding's (one ``Parameter``)."""
        module.get_submodule(op["linear"]).weight = module.get_submodule(
            op["embedding"]).weight
