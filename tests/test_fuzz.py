"""Fuzzing the converter: no silent wrong graph.

Random architectures are composed from the converter's op kinds (linear layers of random widths,
every activation of the activation table, residual adds, concatenations, LayerNorm / BatchNorm
(eval) / GroupNorm / RMSNorm, token-wise layers on ``(batch, tokens, features)``, softmax,
products and GLU, a Linear's output cut into 2 or 3 equal pieces by ``chunk``/``split`` and
read alone, multiplied, added or concatenated, ``F.scaled_dot_product_attention`` with a head
split (separate or fused query/key/value projections, ``q, k, v = c_attn(h).chunk(3, -1)`` or
``.split(d, -1)``), RNN (tanh, ReLU) / LSTM / GRU of 1 or 2 layers, uni- or bidirectional, read
at ``out[:, -1]``, from ``h_n`` (``h_n[-1]``; ``torch.cat([h_n[-2], h_n[-1]], 1)``) or token-wise
(``out``), ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` (post- and pre-norm),
embeddings, learned positions ``h + self.wpe(torch.arange(T))`` (``T`` of ``h`` or of the
input; also ``torch.arange(0, T).unsqueeze(0)``), token readouts ``h[:, 0]``, ``h[:, -1]``,
``h[:, 1:]``, the mean and the max over the tokens (``h.max(dim=1).values``, ``h.max(1)[0]``,
``torch.amax(h, dim=1)``), and one value used twice: ``torch.cat([h, h])``, ``h * h``, ``h +
h``, a module called twice). Each is a real ``nn.Module`` (``FuzzNet``) that holds an
``nn.ModuleList`` and a fixed list of steps unrolled in ``forward``, so ``torch.fx`` traces it.

Each architecture must be either

* refused with ``converters.UnsupportedLayerError`` naming the culprit (``where`` and ``what``
  set), or
* converted with an exact round trip (``to_module(to_graph(m))`` bitwise equal in parameters
  and outputs), and 10 random float64 actions (``sample_action``; the op rules' state-dict action
  equal to the graph action, bitwise) keep the function to relative 1e-9. The actions move whole
  attention heads and GroupNorm groups too (the node-set records' ``blocks``).

Anything else (another exception, a wrong result) is a failure. The default suite runs a few
dozen examples; ``-m slow`` runs 1,000. ``python tests/test_fuzz.py N SEED OUT`` runs ``N``
deterministic architectures (seeds ``SEED..SEED+N-1``) and writes the counts and every failure
to the JSON file ``OUT``.
"""
from __future__ import annotations

import copy
import json
import random
import sys
import traceback
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks import TOL, rel_err

import converters as C
from converters.layout import layout
from converters.ops.activation import ACTS

N_ACTIONS = 10
#: every activation of the table (``identity`` included)
ACT_NAMES = tuple(ACTS)
NORMS = ("layernorm", "batchnorm", "groupnorm", "rmsnorm")
#: ops on any value, and the extra ones on token-wise values
OPS = ("linear", "act", "norm", "add", "cat", "mul", "glu", "softmax", "twice", "pieces")
TOKEN_OPS = ("attn", "mha", "encoder", "rnn", "mean", "index", "amax", "pos")
#: token-wise value kinds: ``tok`` all the input's tokens, ``cut`` one fewer (``h[:, 1:]``)
TOKEN_KINDS = ("tok", "cut")
#: the forms of each step kind's variants (``test_the_fuzzer_builds_every_op_kind``)
PIECE_CUTS, PIECE_READS = ("chunk", "split"), ("one", "mul", "add", "cat")
QKV = ("separate", "chunk", "split")
RNN_CELLS, RNN_READS = ("lstm", "gru", "rnn_tanh", "rnn_relu"), ("last", "hn", "seq")
INDEX_ITEMS, AMAX_FORMS, POS_FORMS = (0, -1, "1:"), ("values", "item0", "amax"), \
    ("arange", "unsqueeze", "input")


# -- the architectures ---------------------------------------------------------------------------
class Choices:
    """Where a program's random choices come from: ``pick(options)``, ``int(lo, hi)``
    (inclusive). ``Choices.seeded(seed)`` draws from ``random.Random``; ``Choices.drawn(data)``
    from hypothesis (so that failures shrink)."""

    def __init__(self, pick, integer):
        self.pick, self.int = pick, integer

    @classmethod
    def seeded(cls, seed: int) -> "Choices":
        r = random.Random(seed)
        return cls(lambda opts: opts[r.randrange(len(opts))], r.randint)

    @classmethod
    def drawn(cls, draw) -> "Choices":
        return cls(lambda opts: draw(st.sampled_from(list(opts))),
                   lambda lo, hi: draw(st.integers(lo, hi)))


def make_program(c: Choices) -> dict:
    """A random architecture: ``{"input": "vec"|"tok"|"ids", "in": width, "vocab": int,
    "steps": [...], "out": width}``. Values are numbered: 0 is the input (for ``ids``, 1 is the
    embedding's output); step ``k`` writes the next value. Each value is ``(kind, width)`` with
    kind ``vec`` ``(batch, width)``, ``tok`` ``(batch, tokens, width)`` or ``cut`` ``(batch,
    tokens - 1, width)`` (after ``h[:, 1:]``)."""
    mode = c.pick(("vec", "tok", "ids"))
    prog = {"input": mode, "in": c.int(2, 4), "vocab": 0, "steps": []}
    vals = [("vec" if mode == "vec" else "tok", prog["in"])]
    if mode == "ids":
        prog["vocab"] = c.int(3, 6)
        prog["steps"].append(("embed", 0, prog["vocab"], prog["in"]))
        vals = [None, ("tok", prog["in"])]

    def src():
        usable = [i for i, v in enumerate(vals) if v is not None]
        return usable[-1] if c.int(0, 2) else c.pick(usable)

    for _ in range(c.int(1, 6)):
        a = src()
        kind, w = vals[a]
        op = c.pick(OPS + (TOKEN_OPS if kind in TOKEN_KINDS else ()))
        partners = [i for i, v in enumerate(vals) if v == (kind, w)]   # a itself included
        if op == "linear":
            step, out = ("linear", a, c.int(1, 6)), None
            out = (kind, step[2])
        elif op == "act":
            step, out = ("act", a, c.pick(ACT_NAMES)), (kind, w)
        elif op == "norm":
            norm = c.pick(NORMS)
            divisors = [d for d in range(1, w + 1) if w % d == 0]
            step, out = ("norm", a, norm, c.pick(divisors)), (kind, w)
        elif op in ("add", "mul"):
            b = a if c.int(0, 4) == 0 else c.pick(partners)
            if op == "add" and c.int(0, 1):
                step = ("residual", a)        # h + Linear(h)
            else:
                step = (op, a, b)
            out = (kind, w)
        elif op == "cat":
            same = [i for i, v in enumerate(vals) if v is not None and v[0] == kind]
            b = a if c.int(0, 4) == 0 else c.pick(same)
            step, out = ("cat", a, b), (kind, w + vals[b][1])
        elif op == "glu":
            if w % 2:
                step, out = ("linear", a, 2 * w), (kind, 2 * w)
            else:
                step, out = ("glu", a), (kind, w // 2)
        elif op == "softmax":
            step, out = ("softmax", a), (kind, w)
        elif op == "twice":
            step, out = ("twice", a), (kind, w)
        elif op == "pieces":     # Linear(w, n k) cut into n pieces of k; pieces i and j read
            n, k = c.int(2, 3), c.int(1, 3)
            how = c.pick(PIECE_READS)
            step = ("pieces", a, n, k, c.pick(PIECE_CUTS), how, c.int(0, n - 1), c.int(0, n - 1))
            out = (kind, 2 * k if how == "cat" else k)
        elif op == "attn":
            heads = c.pick((1, 2))
            step = ("attn", a, heads, heads * c.int(1, 3), c.int(0, 1), c.pick(QKV))
            out = (kind, w)
        elif op in ("mha", "encoder"):
            heads = c.pick([d for d in (1, 2, 3) if w % d == 0])
            step, out = (op, a, heads, c.int(1, 6)), (kind, w)
        elif op == "rnn":
            hidden, bi = c.int(1, 5), c.int(0, 1)
            step = ("rnn", a, c.pick(RNN_CELLS), hidden, c.int(1, 2), bi, c.pick(RNN_READS))
            out = (kind if step[6] == "seq" else "vec", hidden * (1 + bi))
        elif op == "index":     # h[:, 1:] of a tok value only (one token fewer: ``cut``)
            item = c.pick(INDEX_ITEMS if kind == "tok" else INDEX_ITEMS[:2])
            step, out = ("index", a, item), ("cut" if item == "1:" else "vec", w)
        elif op == "amax":
            step, out = ("amax", a, c.pick(AMAX_FORMS)), ("vec", w)
        elif op == "pos":       # a table of 3 to 5 positions (3 tokens at most)
            form = c.pick(POS_FORMS if kind == "tok" else POS_FORMS[:2])   # input: its T
            step, out = ("pos", a, c.int(3, 5), form), (kind, w)
        else:   # mean over the tokens
            step, out = ("mean", a), ("vec", w)
        prog["steps"].append(step)
        vals.append(out)
    prog["out"] = c.int(1, 3)
    prog["last"] = vals[-1]
    return prog


def _act_module(name: str) -> nn.Module | None:
    row = ACTS[name]
    if name == "identity":
        return nn.Identity()
    return row.modules[0]() if row.modules else None      # sin / clamp / abs: functions


class FuzzNet(nn.Module):
    """The network of a program (``make_program``): modules in ``self.mods`` (an
    ``nn.ModuleList``), ``forward`` unrolls the fixed ``self.steps``. Input ``(batch, in)``,
    ``(batch, tokens, in)`` or token ids ``(batch, tokens)`` (3 tokens at most: the position
    tables); output ``(batch, out)``."""

    def __init__(self, prog: dict):
        super().__init__()
        self.prog = prog
        mods, steps = nn.ModuleList(), []
        widths = [prog["in"]] if prog["input"] != "ids" else [None]
        tokens = [prog["input"] != "vec"]      # value -> token-wise (known at construction)

        def add(m: nn.Module) -> int:
            mods.append(m)
            return len(mods) - 1

        for s in prog["steps"]:
            op, a = s[0], s[1]
            w = widths[a]
            if op == "embed":
                steps.append(("embed", a, add(nn.Embedding(s[2], s[3]))))
                widths.append(s[3])
            elif op == "linear":
                steps.append(("linear", a, add(nn.Linear(w, s[2]))))
                widths.append(s[2])
            elif op == "act":
                m = _act_module(s[2])
                steps.append(("act", a, add(m) if m is not None else s[2]))
                widths.append(w)
            elif op == "norm":
                norm, groups = s[2], s[3]
                m = {"layernorm": lambda: nn.LayerNorm(w),
                     "batchnorm": lambda: nn.BatchNorm1d(w),
                     "groupnorm": lambda: nn.GroupNorm(groups, w),
                     "rmsnorm": lambda: nn.RMSNorm(w)}[norm]()
                steps.append(("norm", a, add(m),
                              tokens[a] and norm in ("batchnorm", "groupnorm")))
                widths.append(w)
            elif op == "residual":
                steps.append(("residual", a, add(nn.Linear(w, w))))
                widths.append(w)
            elif op in ("add", "mul", "cat"):
                steps.append((op, a, s[2]))
                widths.append(w + widths[s[2]] if op == "cat" else w)
            elif op == "glu":
                steps.append(("glu", a))
                widths.append(w // 2)
            elif op in ("softmax", "mean"):
                steps.append((op, a))
                widths.append(w)
            elif op == "twice":
                steps.append(("twice", a, add(nn.Linear(w, w))))
                widths.append(w)
            elif op == "pieces":
                n, k, how = s[2], s[3], s[5]
                steps.append(("pieces", a, add(nn.Linear(w, n * k))) + tuple(s[2:]))
                widths.append(2 * k if how == "cat" else k)
            elif op == "attn":
                heads, d, causal, qkv = s[2], s[3], bool(s[4]), s[5]
                qkv_ids = ((add(nn.Linear(w, d)), add(nn.Linear(w, d)), add(nn.Linear(w, d)))
                           if qkv == "separate" else (add(nn.Linear(w, 3 * d)),))
                ids = qkv_ids + (add(nn.Linear(d, w)),)
                steps.append(("attn", a, ids, heads, causal, qkv, d))
                widths.append(w)
            elif op == "mha":
                steps.append(("mha", a, add(nn.MultiheadAttention(w, s[2], batch_first=True))))
                widths.append(w)
            elif op == "encoder":
                layer = nn.TransformerEncoderLayer(w, s[2], dim_feedforward=s[3], dropout=0.0,
                                                   batch_first=True, norm_first=bool(s[3] % 2))
                steps.append(("encoder", a, add(layer)))
                widths.append(w)
            elif op == "rnn":
                cell, hidden, layers, bi, read = s[2:]
                kw = dict(num_layers=layers, batch_first=True, bidirectional=bool(bi))
                m = (nn.LSTM(w, hidden, **kw) if cell == "lstm" else
                     nn.GRU(w, hidden, **kw) if cell == "gru" else
                     nn.RNN(w, hidden, nonlinearity=cell[4:], **kw))
                steps.append(("rnn", a, add(m), cell == "lstm", bool(bi), read))
                widths.append(hidden * (1 + bi))
            elif op in ("index", "amax"):
                steps.append((op, a, s[2]))
                widths.append(w)
            elif op == "pos":
                steps.append(("pos", a, add(nn.Embedding(s[2], w)), s[3]))
                widths.append(w)
            else:
                raise ValueError(f"unknown step {s!r}")
            reads_tokens = (op in ("mean", "amax") or (op == "index" and s[2] != "1:")
                            or (op == "rnn" and s[6] != "seq"))
            tokens.append(tokens[a] and not reads_tokens)
        self.mods, self.steps = mods, steps
        self.tokens_out = prog["last"][0] in TOKEN_KINDS
        self.head = nn.Linear(widths[-1], prog["out"])

    def forward(self, x):
        v = [x]
        for s in self.steps:
            op, h = s[0], v[s[1]]
            if op in ("embed", "linear"):
                y = self.mods[s[2]](h)
            elif op == "act":
                if isinstance(s[2], int):
                    y = self.mods[s[2]](h)
                elif s[2] == "sin":
                    y = torch.sin(h)
                elif s[2] == "abs":
                    y = torch.abs(h)
                else:
                    y = torch.clamp(h, -0.5, 0.5)
            elif op == "norm":
                m = self.mods[s[2]]
                if s[3]:         # token-wise, channels second: transpose in and out
                    y = m(h.transpose(1, 2)).transpose(1, 2)
                else:
                    y = m(h)
            elif op == "residual":
                y = h + self.mods[s[2]](h)
            elif op == "add":
                y = h + v[s[2]]
            elif op == "mul":
                y = h * v[s[2]]
            elif op == "cat":
                y = torch.cat([h, v[s[2]]], dim=-1)
            elif op == "glu":
                y = F.glu(h, dim=-1)
            elif op == "softmax":
                y = F.softmax(h, dim=-1)
            elif op == "mean":
                y = h.mean(1)
            elif op == "twice":
                y = self.mods[s[2]](self.mods[s[2]](h))
            elif op == "pieces":
                n, k, cut, how, i, j = s[3:]
                f = self.mods[s[2]](h)
                p = f.chunk(n, -1) if cut == "chunk" else f.split(k, -1)
                if how == "one":
                    y = p[i]
                elif how == "mul":
                    y = p[i] * p[j]
                elif how == "add":
                    y = p[i] + p[j]
                else:
                    y = torch.cat([p[i], p[j]], dim=-1)
            elif op == "attn":
                ids, heads, causal, qkv, d = s[2:]
                B, T, _ = h.shape
                if qkv == "separate":
                    q, k, w = (self.mods[i](h) for i in ids[:3])
                elif qkv == "chunk":       # fused: one Linear, cut in three
                    q, k, w = self.mods[ids[0]](h).chunk(3, -1)
                else:
                    q, k, w = self.mods[ids[0]](h).split(d, -1)
                if heads > 1:
                    q, k, w = (t.view(B, T, heads, -1).transpose(1, 2) for t in (q, k, w))
                y = F.scaled_dot_product_attention(q, k, w, is_causal=causal)
                if heads > 1:
                    y = y.transpose(1, 2).reshape(B, T, -1)
                y = self.mods[ids[-1]](y)
            elif op == "mha":
                y, _ = self.mods[s[2]](h, h, h, need_weights=False)
            elif op == "encoder":
                y = self.mods[s[2]](h)
            elif op == "rnn":
                is_lstm, bi, read = s[3:]
                out, h_n = self.mods[s[2]](h)
                if is_lstm:
                    h_n = h_n[0]           # (h_n, c_n)
                if read == "seq":
                    y = out
                elif read == "last":
                    y = out[:, -1]
                else:   # the last layer's final state (both directions)
                    y = torch.cat([h_n[-2], h_n[-1]], 1) if bi else h_n[-1]
            elif op == "index":
                y = h[:, 1:] if s[2] == "1:" else h[:, s[2]]
            elif op == "amax":
                if s[2] == "values":
                    y = h.max(dim=1).values
                elif s[2] == "item0":
                    y = h.max(1)[0]
                else:
                    y = torch.amax(h, dim=1)
            else:   # pos: learned positions of an nn.Embedding, looked up with arange
                if s[3] == "arange":
                    y = h + self.mods[s[2]](torch.arange(h.size(1)))
                elif s[3] == "input":     # GPT's: T of the input ids (or tokens)
                    y = h + self.mods[s[2]](torch.arange(x.size(1), device=x.device))
                else:
                    y = h + self.mods[s[2]](torch.arange(0, h.shape[1]).unsqueeze(0))
            v.append(y)
        h = v[-1]
        if self.tokens_out:
            h = h.mean(1)
        return self.head(h)


def build(prog: dict, seed: int = 0):
    """(FuzzNet in eval mode, float64, weights ~ 0.7 N(0, 1), BatchNorm statistics random;
    an example input with batch 5 and 3 tokens)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FuzzNet(prog).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    if prog["input"] == "vec":
        x = torch.randn(5, prog["in"], generator=g, dtype=torch.float64)
    elif prog["input"] == "tok":
        x = torch.randn(5, 3, prog["in"], generator=g, dtype=torch.float64)
    else:
        x = torch.randint(0, prog["vocab"], (5, 3), generator=g)
    return model.eval(), x


# -- the check -----------------------------------------------------------------------------------
def check(model: nn.Module, x: torch.Tensor, n_actions: int = N_ACTIONS, seed: int = 0):
    """``("converted", None)``, ``("refused", what)`` or ``("failure", message)`` for one
    model: the contract of the module docstring."""
    try:
        g = C.to_graph(model, x)
    except C.UnsupportedLayerError as e:
        if not (e.where and e.what):
            return "failure", f"refusal without a culprit: {e}"
        return "refused", e.what
    except Exception as e:       # noqa: BLE001 - any other error is what the fuzzer looks for
        return "failure", f"to_graph raised {type(e).__name__}: {e}"
    try:
        with torch.no_grad():
            y = model(x)
            back = C.to_module(g)
            sd, sd2 = model.state_dict(), back.state_dict()
            if set(sd) != set(sd2):
                return "failure", f"round trip: keys differ {sorted(set(sd) ^ set(sd2))}"
            for k in sd:
                if not (torch.equal(sd[k], sd2[k]) and sd[k].dtype == sd2[k].dtype):
                    return "failure", f"round trip: parameter {k} differs"
            if not torch.equal(back(x), y):
                return "failure", f"round trip: outputs differ ({rel_err(back(x), y):.2e})"
            gen = torch.Generator().manual_seed(seed)
            for i in range(n_actions):
                a = C.sample_action(g, generator=gen)
                by_graph = C.to_state_dict(a.apply(g))
                by_rules = a.apply_state_dict(g.arch, sd)
                if set(by_rules) != set(by_graph):
                    return "failure", f"action {i}: op rules and graph action differ in keys"
                for k in by_graph:
                    if not torch.equal(by_rules[k], by_graph[k]):
                        return "failure", f"action {i}: op rules and graph action differ at {k}"
                moved = copy.deepcopy(model)
                moved.load_state_dict(by_graph)
                err = rel_err(moved(x), y)
                if not err < TOL:
                    return "failure", f"action {i} changes the function (relative {err:.2e})"
    except Exception as e:       # noqa: BLE001
        return "failure", f"after conversion: {type(e).__name__}: {e}"
    return "converted", None


def programs():
    """The hypothesis strategy of programs."""
    return st.composite(lambda draw: make_program(Choices.drawn(draw)))()


def outcome(prog: dict):
    return check(*build(prog))


# -- the suites ----------------------------------------------------------------------------------
def _assert_ok(prog):
    status, msg = outcome(prog)
    assert status != "failure", f"{msg}\nprogram: {prog}"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_architectures_convert_exactly_or_are_refused(prog):
    _assert_ok(prog)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_a_thousand_random_architectures(prog):
    _assert_ok(prog)


def test_the_fuzzer_builds_every_op_kind():
    """The generator reaches every step kind, activation and norm, every form of the pieces,
    attention, recurrent, index, max and position steps, and the same value twice (so a rule
    missing from the fuzz is a visible gap, not a silent one)."""
    steps, acts, norms, twice, forms = Counter(), set(), set(), set(), set()
    for seed in range(400):
        prog = make_program(Choices.seeded(seed))
        for s in prog["steps"]:
            steps[s[0]] += 1
            if s[0] == "act":
                acts.add(s[2])
            if s[0] == "norm":
                norms.add(s[2])
            if s[0] in ("add", "mul", "cat") and s[1] == s[2]:
                twice.add(s[0])
            if s[0] == "pieces":
                forms |= {("pieces", s[2]), ("pieces", s[4]), ("pieces", s[5])}
            elif s[0] == "attn":
                forms.add(("attn", s[2], s[5]))
            elif s[0] == "rnn":
                forms |= {("rnn", s[2], s[5]), ("rnn", s[6], s[5]), ("rnn", "layers", s[4])}
            elif s[0] in ("index", "amax"):
                forms.add((s[0], s[2]))
            elif s[0] == "pos":
                forms.add(("pos", s[3]))
    assert set(steps) == {"embed", "linear", "act", "norm", "residual", "add", "mul", "cat",
                          "glu", "softmax", "twice", "pieces", "attn", "mha", "encoder", "rnn",
                          "mean", "index", "amax", "pos"}
    assert acts == set(ACT_NAMES) and norms == set(NORMS)
    assert twice == {"add", "mul", "cat"}
    want = ({("pieces", f) for f in (2, 3) + PIECE_CUTS + PIECE_READS}
            | {("attn", h, q) for h in (1, 2) for q in QKV}
            | {("rnn", f, bi) for f in RNN_CELLS + RNN_READS for bi in (0, 1)}
            | {("rnn", "layers", n) for n in (1, 2)}
            | {("index", i) for i in INDEX_ITEMS} | {("amax", f) for f in AMAX_FORMS}
            | {("pos", f) for f in POS_FORMS})
    assert forms == want, want ^ forms


def _moves_a_block(g, action) -> bool:
    """Whether ``action`` takes some node of a block (``Layout.block_node``) into another block
    of its node set."""
    lay = layout(g.arch)
    node, start, size = lay.block_node, lay.block_start, lay.block_size
    return bool((((action.perm[node] - start) // size) != ((node - start) // size)).any())


def test_the_fuzzer_reaches_block_moves():
    """Among the deterministic architectures, some convert with whole attention heads (and no
    GroupNorm of several groups) and some with whole GroupNorm groups (and no attention) as
    blocks, the fuzzer's sampled actions move those blocks, and the contract holds for them."""
    found = set()
    for seed in range(300):
        prog = make_program(Choices.seeded(seed))
        kinds = {s[0] for s in prog["steps"] if s[0] in ("attn", "mha", "encoder") and s[2] > 1}
        kinds |= {"groupnorm" for s in prog["steps"] if s[0] == "norm" and s[2] == "groupnorm"
                  and s[3] > 1}
        kind = ("attention" if kinds and "groupnorm" not in kinds else
                "groupnorm" if kinds == {"groupnorm"} else None)
        if kind is None or kind in found:
            continue
        model, x = build(prog)
        try:
            g = C.to_graph(model, x)
        except C.UnsupportedLayerError:
            continue
        if not bool((layout(g.arch).block_count > 1).any()):
            continue
        gen = torch.Generator().manual_seed(0)
        assert any(_moves_a_block(g, C.sample_action(g, generator=gen))
                   for _ in range(N_ACTIONS)), prog
        assert check(model, x) == ("converted", None), prog
        found.add(kind)
        if len(found) == 2:
            break
    assert found == {"attention", "groupnorm"}


@pytest.mark.parametrize("qkv", QKV)
def test_attention_heads_of_one_feature_convert(qkv):
    """Two heads of one feature each (``d = 2``), separate or fused projections: a valid
    attention that converts (found by the fuzzer: it was refused at the attention)."""
    prog = {"input": "tok", "in": 3, "vocab": 0, "out": 2, "last": ("tok", 3),
            "steps": [("linear", 0, 3), ("attn", 1, 2, 2, 0, qkv)]}
    assert outcome(prog) == ("converted", None)


def _channel_edges_without_check(op, lay, groups=1, size=None):
    """``converters.ops.linear.channel_edges`` with its duplicate-node-set guard removed (a
    planted bug: a layer reading one node set twice gets two edges per (src, dst) pair)."""
    in_sets = lay.parts[op["in"][0]]
    chan_nodes = torch.cat([torch.arange(lay.offsets[p], lay.offsets[p + 1]) for p in in_sets])
    size = lay.sizes[op["ns"]] if size is None else size
    ipg, opg = len(chan_nodes) // groups, size // groups
    o = torch.arange(size)
    return chan_nodes[((o // opg) * ipg)[:, None] + torch.arange(ipg)[None, :]]


def test_a_planted_cat_duplicate_bug_is_found(monkeypatch):
    """The bug of the issue, planted: with the Cat rule's duplicate check off,
    ``torch.cat([h, h])`` reaches the next layer (whose own guard then raises a plain
    ``ValueError``: a failure); with that guard off too, it converts, round-trips, and the
    actions corrupt it. The fuzzer's deterministic sample reports both."""
    from converters.ops import linear
    from converters.ops.cat import Cat
    cat_twice = {"input": "vec", "in": 3, "vocab": 0, "out": 2, "last": ("vec", 8),
                 "steps": [("linear", 0, 4), ("act", 1, "relu"), ("cat", 2, 2)]}
    assert outcome(cat_twice)[0] == "refused"           # the real rules refuse it

    def sample_failures():
        return [s for s in range(25) if outcome(make_program(Choices.seeded(s)))[0] == "failure"]
    assert not sample_failures()
    monkeypatch.setattr(Cat, "check_distinct", lambda self, t, node, vals: None)
    status, msg = outcome(cat_twice)
    assert status == "failure" and "ValueError" in msg
    failing = sample_failures()
    assert failing, "the planted bug went unnoticed"
    monkeypatch.setattr(linear, "channel_edges", _channel_edges_without_check)
    status, msg = outcome(cat_twice)
    assert status == "failure" and msg.startswith("action 0"), msg   # converted, then wrong
    assert sample_failures() == failing
    for s in failing:        # a concatenation: a cat step or two pieces read by torch.cat
        assert any(st_[0] == "cat" or st_[0] == "pieces" and st_[5] == "cat"
                   for st_ in make_program(Choices.seeded(s))["steps"])


def test_a_refusal_without_a_culprit_and_other_errors_are_failures(monkeypatch):
    """Controls of ``check``: an unnamed refusal, another exception, a wrong round trip and a
    wrong action are each reported as failures."""
    model, x = build({"input": "vec", "in": 3, "vocab": 0, "out": 2, "last": ("vec", 4),
                      "steps": [("linear", 0, 4), ("act", 1, "relu")]})
    assert check(model, x)[0] == "converted"
    real = C.to_graph

    def raising(exc):
        def f(*a, **k):
            raise exc
        return f
    monkeypatch.setattr(C, "to_graph", raising(C.UnsupportedLayerError("", "")))
    assert check(model, x)[0] == "failure"
    monkeypatch.setattr(C, "to_graph", raising(IndexError("boom")))
    assert check(model, x)[0] == "failure"
    monkeypatch.setattr(C, "to_graph", real)
    real_module = C.to_module

    def bad_module(g):
        m = real_module(g)
        with torch.no_grad():
            next(m.parameters()).mul_(1 + 1e-12)
        return m
    monkeypatch.setattr(C, "to_module", bad_module)
    assert check(model, x)[0] == "failure"
    monkeypatch.setattr(C, "to_module", real_module)
    real_sample = C.sample_action

    def wrong_action(g, generator=None):
        a = real_sample(g, generator)
        a.scale = a.scale.clone()
        a.scale[g.role == C.ROLES.index("hidden")] = 3.0   # scales without the inverse: wrong
        return a
    monkeypatch.setattr(C, "sample_action", wrong_action)
    assert check(model, x)[0] == "failure"


# -- the long run --------------------------------------------------------------------------------
def run(n: int, seed: int = 0) -> dict:
    """Check ``n`` deterministic architectures (seeds ``seed..seed+n-1``); the counts and every
    failure with its program."""
    counts, refused, failures = Counter(), Counter(), []
    for s in range(seed, seed + n):
        prog = make_program(Choices.seeded(s))
        try:
            status, msg = outcome(prog)
        except Exception:        # noqa: BLE001 - a crash of the fuzzer itself is recorded too
            status, msg = "failure", "fuzzer: " + traceback.format_exc(limit=3)
        counts[status] += 1
        if status == "refused":
            refused[msg] += 1
        elif status == "failure":
            failures.append({"seed": s, "message": msg, "program": repr(prog)})
    return {"n": n, "seed": seed, "counts": dict(counts), "refused_by": dict(refused),
            "failures": failures}


if __name__ == "__main__":
    n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    result = run(n, seed)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("counts", "refused_by")}), len(result["failures"]))
