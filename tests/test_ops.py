"""The op table: every registered op kind has a round-trip and action test case, and its action
rule (op by op, on the state dict) is the graph action, bitwise."""
import copy

import pytest
import torch

import converters as C
from converters import ops
from converters.ops.base import OpRule
from zoo import ZOO, extra_inputs, make
from checks import TOL, rel_err

#: op kind -> zoo models that contain it (each model exercises its kind's rule in every hook)
CASES = {
    "input": ["mlp_relu"],
    "output": ["mlp_relu"],
    "linear": ["mlp_relu", "cat", "tokens_mlp", "tokens_4d"],
    "conv": ["cnn_grouped", "conv1d", "conv3d", "depthwise"],
    "batchnorm": ["resnet", "conv1d", "residual_mlp"],
    "layernorm": ["layernorm", "tokens_mlp", "tokens_conv"],
    "act": ["mlp_mixed", "siren_nfn", "acts_perm", "acts_clamp", "rrelu_mlp"],
    "prelu": ["prelu_mlp", "prelu_cnn"],
    "pool": ["cnn_grouped", "conv3d", "depthwise"],
    "flatten": ["cnn_grouped", "resnet"],
    "mean": ["conv1d", "depthwise"],
    "scalar": ["siren_dws"],
    "add": ["resnet", "residual_mlp"],
    "cat": ["cat"],
    "view": ["tokens_heads"],
    "permute": ["tokens_mlp", "tokens_heads", "tokens_conv"],
    "softmax": ["softmax_mlp", "softmax_tokens"],
    "attention": ["attn_sdpa", "attn_sdpa_1head", "attn_written", "attn_masked"],
    "extra_input": ["attn_masked"],
    "mha": ["mha", "mha_kv", "encoder", "encoder_prenorm", "decoder", "decoder_prenorm"],
    "mul": ["gates", "swiglu", "geglu"],
    "glu": ["swiglu"],
    "half": ["geglu", "fused_qkv"],
    "groupnorm": ["groupnorm_cnn", "groupnorm_mlp"],
    "instancenorm": ["instnorm_cnn", "instnorm_1d", "convt_1d", "convt_3d"],
    "rmsnorm": ["rmsnorm_mlp", "rmsnorm_tokens"],
    "conv_transpose": ["convt_cnn", "convt_1d", "convt_3d"],
    "embedding": ["emb_mlp", "emb_positions", "emb_tied_lm", "emb_tied_tanh"],
    "position": ["emb_positions", "emb_tied_lm", "emb_arange"],
    "tie": ["emb_tied_lm", "emb_tied_tanh"],
    "rnn": ["lstm", "gru_state", "rnn_tanh", "rnn_relu"],
    "select": ["lstm", "gru_state", "rnn_tanh", "rnn_relu"],
    "index": ["token_readouts", "conv_max_time", "emb_arange"],
    "amax": ["token_readouts", "conv_max_time"],
}


def test_the_table_lists_each_kind_once_and_every_form_has_a_rule():
    assert all(isinstance(r, OpRule) for r in ops.FORMS)
    kinds = [r.kind for r in ops.FORMS if r.kind is not None]
    assert len(kinds) == len(set(kinds)) == len(ops.RULES)
    with pytest.raises(ValueError, match="already registered"):
        ops.register(type(ops.RULES["linear"])())
    with pytest.raises(C.UnsupportedLayerError, match="unknown op kind"):
        ops.rule_for("conv_transpose9d")


@pytest.mark.parametrize("kind", sorted(ops.RULES))
def test_every_rule_round_trips_and_its_action_rule_is_the_graph_action(kind):
    """For each registered op kind: models containing it round-trip bitwise, 20 random actions
    applied by the op rules keep the function (float64, relative 1e-9) and equal the graph
    action converted back, bitwise."""
    assert CASES.get(kind), f"op kind {kind!r} has no test case: add a model to CASES"
    for name in CASES[kind]:
        assert name in ZOO, name
        model, x = make(name)
        extra = extra_inputs(name, x)          # attention masks passed as further inputs
        g = C.to_graph(model, (x, *extra) if extra else x)
        assert any(op["op"] == kind for op in g.arch.ops), (kind, name)
        back = C.to_module(g)
        sd, sd2 = model.state_dict(), back.state_dict()
        assert set(sd) == set(sd2)
        for k in sd:
            assert torch.equal(sd[k], sd2[k]) and sd[k].dtype == sd2[k].dtype, k
        y = model(x, *extra)
        assert torch.equal(back(x, *extra), y)
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            a = C.sample_action(g, generator=gen)
            by_rules = a.apply_state_dict(g.arch, sd)
            by_graph = C.to_state_dict(a.apply(g))
            assert set(by_rules) == set(by_graph)
            for k in by_graph:
                assert torch.equal(by_rules[k], by_graph[k]), (name, k)
            moved = copy.deepcopy(model)
            moved.load_state_dict(by_rules)
            assert rel_err(moved(x, *extra), y) < TOL, name


def test_action_rules_refuse_an_action_of_another_graph():
    g1 = C.to_graph(*make("mlp_relu"))
    g2 = C.to_graph(*make("cat"))
    a = C.sample_action(g1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="nodes"):
        a.apply_state_dict(g2.arch, make("cat")[0].state_dict())
    swap = torch.arange(g1.num_nodes)
    swap[2], swap[3] = 3, 2            # the last input and the first hidden neuron swapped
    with pytest.raises(ValueError, match="out of their node set"):
        C.Action(swap, torch.ones(g1.num_nodes, dtype=torch.float64)).apply_state_dict(
            g1.arch, make("mlp_relu")[0].state_dict())


def test_a_rule_that_says_nothing_lets_no_factor_through():
    """The default constraint is the safe one: a new rule that forgets ``constrain`` claims too
    small a group (``perm``), never too large."""
    from converters.groups import ANY, ONE
    from converters.ops.base import SymmetryState
    s = SymmetryState({0: [0], 1: [0], 2: [0]}, {0: 3}, out_value=2)
    s.allow[1] = ANY
    OpRule().constrain({"op": "new", "in": [0], "out": 1}, s)
    assert s.allow[0] == ONE
    s2 = SymmetryState({0: [0], 1: [0], 2: [0]}, {0: 3}, out_value=2)
    ops.RULES["linear"].constrain({"op": "linear", "in": [0], "out": 1, "ns": 1}, s2)
    assert s2.allow[0] == ANY                    # a layer with weights absorbs every factor
