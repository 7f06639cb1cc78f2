"""The reference models of ``converters.models`` written as people write them (ViT, GPT,
LLaMA block, MobileNetV2, U-Net, LSTM/GRU classifiers, TextCNN): each converts, round-trips
bitwise in float64, keeps its function under 20 random float64 actions, and changes under one
action outside its group (a control per model). The forms people also write that the converter
still refuses are checked to be refused naming the node (known gaps), and ``scalegmn convert``
takes the models as ``file.py:factory``."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import converters as C
from checks import TOL, assert_round_trip, rel_err
from converters import zoo_models as Z
from scalegmn.cli import main

NAMES = sorted(Z.ZOO_FACTORIES)


def make(name, seed=0):
    """(float64 model in eval mode with random weights large enough that units are active and
    attention is not uniform, example input of batch 3)."""
    gen = torch.Generator().manual_seed(seed)
    model = Z.ZOO_FACTORIES[name][0]().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.mul_(8.0)      # ReLU6 clips a good share of the units
    return model, Z.example_input(name, 3, torch.float64, seed)


def test_every_zoo_model_is_in_converters_models_with_a_docstring():
    for name, (factory, _) in Z.ZOO_FACTORIES.items():
        assert getattr(C.models, name) is factory
        assert factory.__doc__ and "Input" in factory.__doc__, name
        model = factory()
        assert 1_000 < sum(p.numel() for p in model.parameters()) < 100_000, name


@pytest.mark.parametrize("name", NAMES)
def test_converts_and_round_trips_bitwise(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    back = C.to_module(g)
    sd, sd2 = model.state_dict(), back.state_dict()
    assert set(sd) == set(sd2)
    for k, v in sd.items():
        assert torch.equal(sd2[k], v) and sd2[k].dtype == torch.float64 or not v.is_floating_point(), k
    y = model(x)
    assert y.dtype == torch.float64 and torch.equal(back(x), y)


@pytest.mark.parametrize("name", NAMES)
def test_twenty_random_actions_keep_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(1)
    moved = 0
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        moved += int((a.perm != torch.arange(g.num_nodes)).any()) + int((a.q != 1).any())
        assert rel_err(C.to_module(a.apply(g))(x), y) < TOL
    assert moved >= 20         # the actions do something


@pytest.mark.parametrize("name", ["vit_tiny", "gpt_tiny", "llama_block"])
def test_sampled_actions_move_whole_heads_of_every_attention(name):
    """Each attention's queries, keys and values declare one block-move id; sampled actions move
    their heads together (one head permutation for the three node sets, each head whole), every
    attention independently, and keep the function (above). Moving one head's queries and keys
    without its values changes the function."""
    model, x = make(name)
    g = C.to_graph(model, x)
    by_id: dict = {}
    for k, ns in enumerate(g.arch.nodesets):
        if "blocks" in ns:
            by_id.setdefault(ns["blocks"]["id"], []).append((k, ns["blocks"]["size"]))
    n_attn = {"vit_tiny": 2, "gpt_tiny": 2, "llama_block": 1}[name]
    assert len(by_id) == n_attn and all(len(v) == 3 for v in by_id.values())
    gen = torch.Generator().manual_seed(2)
    moved = {j: 0 for j in by_id}
    for _ in range(20):
        a = C.sample_action(g, generator=gen)
        for j, sets in by_id.items():
            heads = set()
            for k, d in sets:
                nodes = (g.layer == k).nonzero()[:, 0]
                to = ((a.perm[nodes] - nodes[0]) // d).reshape(-1, d)
                assert (to == to[:, :1]).all()
                heads.add(tuple(to[:, 0].tolist()))
            assert len(heads) == 1
            moved[j] += heads.pop() != tuple(range(len(nodes) // d))
    assert all(m >= 5 for m in moved.values()), moved
    k_q, d = by_id[0][0]
    k_k = g.arch.nodesets[k_q]["inv_tie"]
    perm = torch.arange(g.num_nodes)
    for k in (k_q, k_k):            # head 0 <-> head 1 in Q and K, V left alone
        nodes = (g.layer == k).nonzero()[:, 0]
        perm[nodes[:d]], perm[nodes[d:2 * d]] = nodes[d:2 * d], nodes[:d]
    a = C.Action(perm, torch.ones(g.num_nodes, dtype=torch.float64))
    assert rel_err(C.to_module(a.apply(g))(x), model(x)) > 1e-6


def _sets(g):
    return {ns["name"]: (k, ns) for k, ns in enumerate(g.arch.nodesets)}


#: name -> (node set, its declared group, a factor on its second neuron outside that group)
CONTROLS = {
    "vit_tiny": ("encoder.layers.0.self_attn.q", "linear", 2.5),   # its key not compensated
    "gpt_tiny": ("blocks.0.mlp.0", "perm", 2.0),   # GELU is not homogeneous
    "llama_block": ("mlp.gate_proj", "perm", -1.0),   # silu is not odd
    "mobilenet_v2_tiny": ("features.2.conv.1", "perm", 2.0),   # ReLU6 is not homogeneous
    "unet_small": ("inc.double_conv.1", "scale", -1.0),   # ReLU: positive factors only
    "lstm_classifier": ("rnn.l0.i", "perm", 2.0),   # sigmoid gate: no scaling
    "gru_classifier": ("rnn.l1.z", "perm", -1.0),
    "text_cnn": ("convs.1", "scale", -1.0),      # ReLU and max over time: positive only
}


def test_every_model_has_a_control():
    assert set(CONTROLS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_an_action_outside_the_group_changes_the_function(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    nodeset, group, factor = CONTROLS[name]
    k, rec = _sets(g)[nodeset]
    assert rec["group"] == group
    nodes = (g.layer == k).nonzero().squeeze(1)
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[nodes[1]] = factor
    bad = C.to_module(C.Action(torch.arange(g.num_nodes), q).apply(g))
    assert rel_err(bad(x), model(x)) > 1e-6
    # the same neuron moved inside its group keeps the function (the control is not vacuous)
    q[nodes[1]] = {"perm": 1.0, "sign": -1.0, "scale": 2.0, "linear": 2.5}[group]
    if "inv_tie" in rec:
        q[(g.layer == rec["inv_tie"]).nonzero().squeeze(1)[1]] = 1 / q[nodes[1]]
    ok = C.to_module(C.Action(torch.arange(g.num_nodes), q).apply(g))
    assert rel_err(ok(x), model(x)) < TOL


# -- variants: the idiomatic forms each factory can also write ---------------------------------
#: variant -> (factory, example input of the zoo model, control as in CONTROLS)
VARIANTS = {
    "vit_tiny(pool='cls')": (lambda: Z.vit_tiny(pool="cls"), "vit_tiny",
                             ("encoder.layers.1.self_attn.k", "linear", 2.5)),
    "gpt_tiny(fused_qkv=True)": (lambda: Z.gpt_tiny(fused_qkv=True), "gpt_tiny",
                                 ("blocks.0.attn.c_attn[0:16]", "linear", 2.5)),
    "gpt_tiny(positions='embedding')": (lambda: Z.gpt_tiny(positions="embedding"), "gpt_tiny",
                                        ("blocks.1.mlp.0", "perm", -1.0)),
    "text_cnn(pool='max')": (lambda: Z.text_cnn(pool="max"), "text_cnn",
                             ("convs.0", "scale", -1.0)),   # max(-x) = -min(x)
    "text_cnn(pool='max_pool')": (lambda: Z.text_cnn(pool="max_pool"), "text_cnn",
                                  ("convs.2", "scale", -1.0)),
}


def make_variant(key, seed=0):
    """``make`` for a ``VARIANTS`` entry."""
    factory, name, _ = VARIANTS[key]
    gen = torch.Generator().manual_seed(seed)
    model = factory().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return model, Z.example_input(name, 3, torch.float64, seed)


@pytest.mark.parametrize("key", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_variants_convert_and_round_trip_bitwise(key, dtype):
    """Each form was refused naming its node before (README, Converting models)."""
    model, x = make_variant(key)
    model, x = model.to(dtype), x.to(dtype) if x.is_floating_point() else x
    assert_round_trip(model, x)


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variants_keep_their_function_under_random_actions_and_not_outside(key):
    model, x = make_variant(key)
    g = C.to_graph(model, x)
    y, gen = model(x), torch.Generator().manual_seed(1)
    for _ in range(20):
        assert rel_err(C.to_module(C.sample_action(g, generator=gen).apply(g))(x), y) < TOL
    nodeset, group, factor = VARIANTS[key][2]
    k, rec = _sets(g)[nodeset]
    assert rec["group"] == group
    nodes = (g.layer == k).nonzero().squeeze(1)
    q = torch.ones(g.num_nodes, dtype=torch.float64)
    q[nodes[1]] = factor
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), q).apply(g))(x), y) > 1e-6
    q[nodes[1]] = {"perm": 1.0, "sign": -1.0, "scale": 2.0, "linear": 2.5}[group]
    if "inv_tie" in rec:
        q[(g.layer == rec["inv_tie"]).nonzero().squeeze(1)[1]] = 1 / q[nodes[1]]
    assert rel_err(C.to_module(C.Action(torch.arange(g.num_nodes), q).apply(g))(x), y) < TOL


@pytest.mark.parametrize("key, base", [
    ("gpt_tiny(fused_qkv=True)", "gpt_tiny"), ("gpt_tiny(positions='embedding')", "gpt_tiny"),
    ("text_cnn(pool='max')", "text_cnn"), ("text_cnn(pool='max_pool')", "text_cnn"),
    ("vit_tiny(pool='cls')", "vit_tiny"),
])
def test_variants_have_the_groups_of_the_form_that_converted_before(key, base):
    """The fused projection's thirds get the groups, cuts, head blocks and inverse ties of
    separate query/key/value Linears; the looked-up position table those of a sliced
    parameter; a max written as .max/max_pool1d those of adaptive_max_pool1d; the CLS readout
    those of the mean over the tokens (both read every feature alike)."""
    rename = {"c_attn[0:16]": "query", "c_attn[16:32]": "key", "c_attn[32:48]": "value",
              "wpe.weight": "wpe"}

    def name_of(n):
        for old, new in rename.items():
            n = n.replace(old, new)
        return n.split(":")[0]            # "wpe:add" and "wpe.weight:add_1" alike

    def records(g):
        names = [ns["name"] for ns in g.arch.nodesets]
        out = []
        for ns in g.arch.nodesets:
            r = {k: v for k, v in ns.items() if k not in ("align", "tie", "producer")}
            r["name"] = name_of(ns["name"])
            if "inv_tie" in r:
                r["inv_tie"] = name_of(names[r["inv_tie"]])
            out.append(r)
        return sorted(out, key=lambda r: r["name"])

    g = C.to_graph(*make_variant(key))
    g0 = C.to_graph(*make(base))
    if base == "gpt_tiny" and "fused" in key:
        assert sum(op["op"] == "half" for op in g.arch.ops) == 6
        assert [op.get("split") for op in g.arch.ops if op.get("module", "").endswith(
            "c_attn")] == [3, 3]
    assert records(g) == records(g0)


def _timm_attention():
    """timm's fused QKV: ``qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)`` then
    ``q, k, v = qkv.unbind(0)`` (the three pieces moved in front of the batch)."""
    class Attn(nn.Module):
        def __init__(self, dim=16, heads=2):
            super().__init__()
            self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(B, N, C))
    return Attn()


# -- known gaps: idiomatic forms the converter still refuses, naming the node ---------------------
@pytest.mark.parametrize("make_model, x, node, reason", [
    (_timm_attention, lambda: torch.randn(3, 5, 16, dtype=torch.float64), "permute",
     "moving the batch dimension"),
])
def test_known_gaps_are_refused_naming_the_node(make_model, x, node, reason):
    """If one of these starts converting, the gap is closed: move the form into the zoo and
    drop it here (the README's Converting models section lists the gaps)."""
    model = make_model().double().eval()
    with pytest.raises(C.UnsupportedLayerError) as e:
        C.to_graph(model, x())
    assert f"{node}" in str(e.value) and reason in str(e.value)


# -- the CLI ------------------------------------------------------------------------------------
SOURCE = Path(Z.__file__)


@pytest.mark.parametrize("name, shape, example", [
    ("text_cnn", "9", lambda: torch.zeros(2, 9, dtype=torch.long)),
    ("vit_tiny", "3,16,16", lambda: torch.zeros(2, 3, 16, 16)),
])
def test_scalegmn_convert_takes_the_zoo_factories(tmp_path, capsys, name, shape, example):
    out = tmp_path / "g.pt"
    assert main(["convert", f"{SOURCE}:{name}", "--example-shape", shape, "-o", str(out)]) == 0
    assert "symmetry groups" in capsys.readouterr().out
    g = C.load_graph(out)
    torch.manual_seed(0)
    assert g.arch == C.to_graph(Z.ZOO_FACTORIES[name][0](), example()).arch


def test_example_shape_of_a_model_reading_token_ids_gives_integer_ids(tmp_path):
    """--example-shape on a model whose first layer is an nn.Embedding: integer ids of that
    shape (before: float zeros, which nn.Embedding refuses), and a TextCNN needs more tokens
    than the guessed (2, 3) ids."""
    from converters.load import load_graph_source
    g = load_graph_source(f"{SOURCE}:text_cnn", example_shape=[9])
    assert g.arch == C.to_graph(Z.text_cnn(), torch.zeros(2, 9, dtype=torch.long)).arch
    with pytest.raises(C.UnsupportedLayerError, match="convs.2"):
        load_graph_source(f"{SOURCE}:text_cnn")            # kernel 4 > the guessed 3 tokens
    # float models keep float examples of the model's dtype
    g = load_graph_source(f"{SOURCE}:lstm_classifier", example_shape=[5, 8])
    assert g.num_nodes == C.to_graph(Z.lstm_classifier(), torch.zeros(2, 5, 8)).num_nodes


def test_the_transformer_symmetry_example_runs(capsys):
    """examples/transformer_symmetry.py: its asserts (head swap and Q/K rescaling keep the
    function, Q and K scaled alike change it) hold."""
    import runpy
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "transformer_symmetry.py"),
                   run_name="__main__")
    out = capsys.readouterr().out
    assert "(broken)" in out and "function unchanged" in out


# -- the converters benchmark -------------------------------------------------------------------
def test_the_converters_bench_lists_every_zoo_model_and_measures_one():
    from scalegmn.bench import report, suites, workloads
    from scalegmn.bench.settings import BenchSettings, Size
    assert suites.ZOO_CONVERTER_CASES == tuple(f"zoo:{n}" for n in Z.ZOO_FACTORIES)
    assert set(suites.ZOO_CONVERTER_CASES) <= set(suites.CONVERTER_CASES)
    assert "resnet18" in suites.CONVERTER_CASES
    with pytest.raises(ValueError, match="zoo:.*vit_tiny"):
        workloads.make_model("zoo:nosuch")
    settings = BenchSettings(table=Size(batch=2, hidden=8, layers=1, repeats=1, max_s=None),
                             threads=1, timeout=120)
    result = suites.run_converters(settings, cases=("zoo:text_cnn", "zoo:gru_classifier"),
                                   repeats=1, fit_batch=2, fit_steps=2)
    rows = result["converters"]
    assert [r["workload"] for r in rows] == ["zoo:text_cnn", "zoo:gru_classifier"]
    for r in rows:
        assert r["nodes"] > 0 and r["edges"] > 0 and r["to_graph_s"] > 0
        assert r["round_trip_exact"] and r["peak_rss_mib"] > 0
    assert "zoo:text_cnn" in report.converters_markdown(result)


def test_scalegmn_is_invariant_on_a_batch_of_every_zoo_model():
    """ScaleGMN (auto engine: sparse for the recurrent graphs) on one mixed float64 batch of all
    zoo models (two batches: 1-d and 2-d kernels do not batch together): invariant under
    random group actions, sensitive to uncoupled rescalings."""
    import scalegmn
    from scalegmn.testing import assert_equivariant, assert_sensitive
    conv1d = ["text_cnn", "gpt_tiny", "llama_block", "lstm_classifier", "gru_classifier"]
    for names in (conv1d, [n for n in NAMES if n != "text_cnn"]):
        mixed = C.batch_graphs([C.to_graph(*make(n)) for n in names])
        net = scalegmn.build("scalegmn", "invariant", spec=mixed, out_dim=2, hidden=8,
                             layers=2).double()
        errors = assert_equivariant(net, mixed, n_actions=2)
        assert {"perm", "scale", "sign"} <= set(errors)
        assert_sensitive(net, mixed, "uncoupled")
