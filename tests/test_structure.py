"""Hand-counted graphs of small models, the edge order contract, and the arch builders."""
import pytest
import torch
import torch.nn as nn

import converters as C
from zoo import make


def names(g):
    return [ns["name"] for ns in g.arch.nodesets]


def groups(g):
    return [ns["group"] for ns in g.arch.nodesets]


def test_mlp_counts_and_edge_order():
    m = C.models.mlp([2, 8, 1])
    g = C.to_graph(m)
    assert (g.num_nodes, g.num_edges) == (11, 24)
    # layer-major, destination-major, source-minor: edge (i, j) of layer 0 is at i * 2 + j
    W = m[0].weight
    for i in range(8):
        for j in range(2):
            e = i * 2 + j
            assert g.edge_index[:, e].tolist() == [j, 2 + i]
            assert g.edge_attr[e, 0] == W[i, j]
    assert torch.equal(g.x[2:10, 0], m[0].bias.detach())
    assert groups(g) == ["fixed", "scale", "fixed"]


def test_cnn_zoo_counts_and_parameters():
    spec = C.arch.cnn_zoo()
    assert [ns["size"] for ns in spec.nodesets] == [1, 16, 16, 16, 10]
    m = C.models.cnn_zoo()
    assert sum(p.numel() for p in m.parameters()) == 4970
    g = C.from_state_dict(m.state_dict(), spec)
    assert (g.num_nodes, g.num_edges, g.edge_attr.shape[1]) == (59, 688, 9)
    d = C.to_dense(g)
    assert [tuple(W.shape) for W in d.W] == [(1, 16, 1, 9), (1, 16, 16, 9), (1, 16, 16, 9),
                                             (1, 10, 16, 9)]
    assert torch.equal(d.W[1][0, 3, 5], m[2].weight[3, 5].reshape(9))
    # the dense weight after global average pooling sits in the centre slot
    assert torch.equal(d.W[3][0, :, :, 4], m[8].weight)
    assert not d.W_mask[3][..., [0, 1, 2, 3, 5, 6, 7, 8]].any()


def test_layernorm_mlp():
    g = C.to_graph(*make("layernorm"))
    assert names(g) == ["input", "l1", "ln", "l2", "l3"]
    assert (g.num_nodes, g.num_edges) == (23, 24 + 6 + 30 + 10)
    assert groups(g) == ["fixed", "perm", "perm", "perm", "fixed"]  # LN kills scales; GELU, SiLU
    # the LayerNorm's input and output channels move together, as one permutation class
    assert torch.equal(g.perm_class[g.layer == 1], g.perm_class[g.layer == 2])
    assert (g.edge_type == C.EDGE_TYPES.index("norm")).sum() == 6


def test_grouped_cnn_with_flatten_block():
    g = C.to_graph(*make("cnn_grouped"))
    assert [ns["size"] for ns in g.arch.nodesets] == [2, 6, 6, 4, 3]
    assert (g.num_nodes, g.num_edges) == (21, 12 + 12 + 24 + 12)
    assert g.arch.kernel_shape == (3, 3)
    # c2 (groups=3) cuts both sides into 3 blocks of 2
    for k in (1, 2):
        assert g.arch.nodesets[k]["perm_cuts"] == (2, 4)
        assert len(set(g.perm_class[g.layer == k].tolist())) == 3
    # the flatten feeds the dense layer a 2x2 spatial block per channel
    fc = [b for b in C.to_dense(g).W][3]
    assert fc.shape == (1, 3, 4, 9)
    assert groups(g) == ["fixed", "sign", "scale", "scale", "fixed"]


def test_resnet_block_ties_and_batchnorm_features():
    g = C.to_graph(*make("resnet"))
    nm = names(g)
    assert nm[:4] == ["input", "stem", "bn", "layer1.0.conv1"]
    assert g.arch.node_features == ("bias", "bn_mean", "bn_var", "bn_count")
    # pre-BN convolutions are 'linear' (any nonzero scale), post-ReLU streams 'scale'
    assert g.arch.nodesets[nm.index("stem")]["group"] == "linear"
    assert g.arch.nodesets[nm.index("layer1.0.bn1")]["group"] == "scale"
    # the residual stream of layer1: bn output, both adds and the bn2 outputs are one tie class
    stream = {nm.index(n) for n in ("bn", "layer1.0.bn2", "layer1.1.bn2")}
    stream |= {k for k, n in enumerate(nm) if n.startswith("add:")
               and g.arch.nodesets[k]["size"] == 4}
    ties = {g.arch.nodesets[k]["tie"] for k in stream}
    assert len(ties) == 1 and ties != {-1}
    # the stage-2 projection starts a new stream
    assert g.arch.nodesets[nm.index("layer2.0.shortcut.1")]["tie"] not in ties
    # running statistics are node features of the BN's input channels
    model, _ = make("resnet")
    pre = (g.layer == nm.index("stem"))
    assert torch.equal(g.x[pre, 1], model.bn.running_mean)
    assert torch.equal(g.x[pre, 2], model.bn.running_var)
    post = (g.layer == nm.index("bn"))
    assert torch.equal(g.x[post, 0], model.bn.bias.detach())
    assert (g.x[post, 3] == model.bn.num_batches_tracked).all()
    residual = g.edge_type == C.EDGE_TYPES.index("residual")
    assert (g.edge_attr[residual, 4] == 1).all()


def test_cat_keeps_each_branch_group():
    g = C.to_graph(*make("cat"))
    assert groups(g) == ["fixed", "scale", "sign", "fixed"]
    assert g.num_edges == 12 + 15 + 18


def test_siren_builders_read_published_keys():
    dws = C.arch.siren(output_offset=0.5)
    sd = {"seq.0.weight": torch.randn(32, 2), "seq.0.bias": torch.randn(32),
          "seq.1.weight": torch.randn(32, 32), "seq.1.bias": torch.randn(32),
          "seq.2.weight": torch.randn(1, 32), "seq.2.bias": torch.randn(1)}
    g = C.from_state_dict(sd, dws)
    assert (g.num_nodes, g.num_edges) == (67, 64 + 1024 + 32)
    assert [ns["act"] for ns in dws.nodesets] == ["identity", "sin", "sin", "identity"]
    assert dws.nodesets[1]["act_params"]["w0"] == 30.0
    assert [(op["fn"], op["const"]) for op in dws.ops if op["op"] == "scalar"][-1] == ("add", 0.5)
    net = C.to_module(g)
    x = torch.rand(5, 2)
    ref = torch.sin(30 * (x @ sd["seq.0.weight"].T + sd["seq.0.bias"]))
    ref = torch.sin(30 * (ref @ sd["seq.1.weight"].T + sd["seq.1.bias"]))
    ref = ref @ sd["seq.2.weight"].T + sd["seq.2.bias"] + 0.5
    assert torch.allclose(net(x), ref, atol=1e-5)
    nfn = C.arch.siren(widths=(2, 32, 32, 3), style="nfn")
    keys = {k for k in C.to_state_dict(C.to_graph(C.models.Siren((2, 32, 32, 3), style="nfn")))}
    assert keys == {"net.0.linear.weight", "net.0.linear.bias", "net.1.linear.weight",
                    "net.1.linear.bias", "net.2.weight", "net.2.bias"}
    assert nfn != dws and nfn.hash != dws.hash


def test_archspec_json_round_trip_and_hash():
    spec = C.to_graph(*make("resnet")).arch
    again = C.ArchSpec.from_json(spec.to_json())
    assert again == spec and again.hash == spec.hash and hash(again) == hash(spec)
    try:
        spec.ops[0]["op"] = "x"
        raise AssertionError("ArchSpec must be read-only")
    except TypeError:
        pass
    assert C.arch.mlp([2, 4, 1]).hash != C.arch.mlp([2, 5, 1]).hash


def test_float32_models_keep_their_dtype():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    g = C.to_graph(m)
    assert g.x.dtype == g.edge_attr.dtype == torch.float32 and g.arch.dtype == "float32"


@pytest.mark.parametrize("spec, model, example", [
    (lambda: C.arch.siren((2, 32, 32, 1), output_offset=0.5),
     lambda: C.models.Siren((2, 32, 32, 1), 30.0, 0.5, "dwsnets"), None),
    (lambda: C.arch.siren((2, 16, 16, 3), w0=20.0, style="nfn"),
     lambda: C.models.Siren((2, 16, 16, 3), 20.0, 0.0, "nfn"), None),
    (lambda: C.arch.mlp([3, 8, 8, 2], "tanh"),
     lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)),
     None),
    (lambda: C.arch.mlp([2, 8, 1], dtype=torch.float64), lambda: C.models.mlp([2, 8, 1]).double(),
     None),
    (lambda: C.arch.cnn_zoo(), lambda: C.models.cnn_zoo(), None),               # guessed 32x32
    (lambda: C.arch.cnn_zoo(), lambda: C.models.cnn_zoo(), torch.zeros(2, 1, 28, 28)),
    (lambda: C.arch.cnn_zoo(stride=1, activation="tanh", in_channels=3, channels=8),
     lambda: C.models.cnn_zoo(stride=1, activation="tanh", in_channels=3, channels=8),
     torch.zeros(2, 3, 32, 32)),
])
def test_builders_and_to_graph_give_one_hash(spec, model, example):
    spec, model = spec(), model()
    traced = C.to_graph(model, example).arch
    assert traced.hash == spec.hash and traced == spec and hash(traced) == hash(spec)
    assert C.from_state_dict(model.state_dict(), spec).arch.hash == traced.hash


def test_what_the_hash_ignores_and_what_it_keeps():
    on28 = C.to_graph(C.models.cnn_zoo(), torch.zeros(2, 1, 28, 28)).arch
    on64 = C.to_graph(C.models.cnn_zoo(), torch.zeros(2, 1, 64, 64)).arch
    assert on28 == on64 and on28.hash == on64.hash          # the example's spatial size: ignored
    assert on28.input["shape"] == (1, 28, 28) and on64.input["shape"] == (1, 64, 64)  # but kept
    assert C.ArchSpec.from_json(on28.to_json()).input["shape"] == (1, 28, 28)
    base = C.arch.siren((2, 32, 32, 1), output_offset=0.5)
    others = [C.arch.siren((2, 32, 32, 1)),
              C.arch.siren((2, 32, 32, 1), w0=31.0, output_offset=0.5),
              C.arch.siren((2, 32, 16, 1), output_offset=0.5),
              C.arch.siren((2, 32, 32, 1), output_offset=0.5, dtype=torch.float64),
              C.arch.siren((2, 32, 32, 1), output_offset=0.5, style="nfn"),
              base.with_meta(convention={"style": "dwsnets"}),
              C.arch.cnn_zoo(in_channels=3), C.arch.cnn_zoo(kernel=5)]
    hashes = {base.hash} | {o.hash for o in others}
    assert len(hashes) == len(others) + 1                     # everything else: kept
    conv1d = C.to_graph(nn.Sequential(nn.Conv1d(1, 2, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                                      nn.Linear(2, 1)), torch.zeros(2, 1, 9)).arch
    assert conv1d.input["shape"] == (1, 9) and '"shape":[1,null]' in conv1d.identity_json()
