"""Module -> graph -> module is bitwise exact; graph -> dense -> graph is exact; the dense view
runs the networks (functional_forward); networkx and file round trips keep everything."""
import pytest
import torch
from torch_geometric.data import Batch

import converters as C
from zoo import ZOO, make

FIELDS = ("x", "edge_index", "edge_attr", "edge_mask", "edge_type", "layer", "role", "io_index",
          "group", "perm_class", "tie", "act")


def assert_same_graph(a, b):
    assert a.arch == b.arch
    for k in FIELDS:
        assert torch.equal(a[k], b[k]), k
        assert a[k].dtype == b[k].dtype, k


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_graph_module_is_bitwise(name, dtype):
    model, x = make(name, dtype)
    graph = C.to_graph(model, x)
    back = C.to_module(graph)
    sd, sd2 = model.state_dict(), back.state_dict()
    assert list(sd) == list(sd2) or set(sd) == set(sd2)
    for k in sd:
        assert torch.equal(sd[k], sd2[k]) and sd[k].dtype == sd2[k].dtype, k
    assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("name", list(ZOO))
def test_graph_is_well_formed(name):
    model, x = make(name)
    g = C.to_graph(model, x)
    N, E = g.num_nodes, g.edge_index.shape[1]
    assert g.edge_index.min() >= 0 and g.edge_index.max() < N
    assert g.edge_attr.shape == g.edge_mask.shape == (E, g.edge_attr.shape[1])
    # every parameter element is on exactly one slot: masked entries count the parameters
    n_params = sum(p.numel() for p in model.parameters())
    n_bn = sum(m.num_features for m in model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    ln_bias = sum(m.bias.numel() for m in model.modules()
                  if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm,
                                    torch.nn.modules.instancenorm._InstanceNorm))
                  and m.bias is not None)
    structural = ((g.edge_type == C.EDGE_TYPES.index("residual"))
                  | (g.edge_type == C.EDGE_TYPES.index("state")))
    on_edges = int(g.edge_mask[~structural].sum())
    on_edges -= int(g.edge_mask[g.edge_tie >= 0].sum()) // 2   # a tied weight: two edges
    rnns = [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    ln_bias += sum(m.in_proj_bias.numel() for m in model.modules()   # attention: Q, K, V biases
                   if isinstance(m, torch.nn.MultiheadAttention) and m.in_proj_bias is not None)
    ln_bias += sum(p.numel() for m in rnns for k, p in m.named_parameters() if "bias" in k)
    biases = sum(m.bias.numel() for m in model.modules()
                 if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd,
                                   torch.nn.modules.batchnorm._BatchNorm))
                 and m.bias is not None) + ln_bias
    slopes = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.PReLU))
    assert on_edges + biases + slopes == n_params
    # node features: a prefix of the global columns, as long as the last one used
    n_prelu = sum(isinstance(m, torch.nn.PReLU) for m in model.modules())
    n_cols = (6 if any(m.bias for m in rnns) else 5 if n_prelu else 1 if n_bn == 0 else 4)
    assert g.x.shape[0] == N and g.x.shape[1] == n_cols
    # edges run forward in layer order (a DAG) and are stored layer-major; a recurrent layer's
    # hidden -> gate edges run backward (cycles), the others forward
    fwd = g.edge_type != C.EDGE_TYPES.index("recurrent")
    assert (g.layer[g.edge_index[0]] < g.layer[g.edge_index[1]])[fwd].all()
    assert bool(fwd.all()) == (not rnns)
    if not rnns:
        assert (torch.diff(g.layer[g.edge_index[1]]) >= 0).all()
    # inputs and outputs are fixed and indexed
    inp = g.role == C.ROLES.index("input")
    out = g.role == C.ROLES.index("output")
    assert (g.group[inp | out] == 0).all() and (g.perm_class[inp | out] == -1).all()
    assert torch.equal(g.io_index[inp], torch.arange(int(inp.sum())))


@pytest.mark.parametrize("name", list(ZOO))
def test_dense_view_is_a_reshape_and_round_trips(name):
    graphs, models, x = [], [], None
    for seed in range(3):
        m, x = make(name, seed=seed)
        models.append(m)
        graphs.append(C.to_graph(m, x))
    batch = Batch.from_data_list(graphs)
    dense = C.to_dense(batch)
    # views, not copies: writing through the view changes the batch
    for W in dense.W:
        assert W.data_ptr() >= batch.edge_attr.data_ptr()
        assert W.untyped_storage().data_ptr() == batch.edge_attr.untyped_storage().data_ptr()
    back = C.from_dense(dense)
    for a, b in zip(back.to_data_list(), graphs):
        assert_same_graph(a, b)
    # the dense weights are the PyTorch parameters, cropped from the padded kernels
    params = dense.params()
    for i, m in enumerate(models):
        for k, v in m.state_dict().items():
            assert torch.equal(params[k][i].to(v.dtype), v), k
    # functional_forward runs all networks at once, equal to each module
    y = C.functional_forward(dense, x)
    for i, m in enumerate(models):
        ref = m(x)
        assert (y[i] - ref).abs().max() <= 1e-10 * ref.abs().max()


def test_functional_forward_is_differentiable_and_takes_per_network_inputs():
    graphs = [C.to_graph(make("siren_dws", seed=s)[0]) for s in range(4)]
    dense = C.to_dense(Batch.from_data_list(graphs))
    for W in dense.W:
        W.requires_grad_(True)
    xs = torch.rand(4, 10, 2, dtype=torch.float64)
    y = C.functional_forward(dense, xs)
    assert y.shape == (4, 10, 1)
    y.square().sum().backward()
    assert all(W.grad is not None and W.grad.abs().sum() > 0 for W in dense.W)
    with pytest.raises(ValueError, match="x must be"):
        C.functional_forward(dense, torch.rand(3, 10, 2))


@pytest.mark.parametrize("name", ["resnet", "cnn_grouped", "siren_nfn"])
def test_networkx_and_file_round_trips(name, tmp_path):
    m, x = make(name)
    g = C.to_graph(m, x)
    assert_same_graph(C.from_networkx(C.to_networkx(g)), g)
    G = C.to_networkx(g)
    assert G.number_of_nodes() == g.num_nodes and G.number_of_edges() == g.num_edges
    path = tmp_path / "g.pt"
    C.save_graph(g, path)
    assert_same_graph(C.load_graph(path), g)
    assert torch.equal(C.to_module(C.load_graph(path))(x), m(x))


def test_save_graph_takes_torch_saves_order_and_the_old_one_with_a_warning(tmp_path, recwarn):
    m, x = make("cat")
    g = C.to_graph(m, x)
    C.save_graph(g, tmp_path / "new.pt")                 # torch.save(obj, path)'s order
    C.save_graph(g, str(tmp_path / "new_str.pt"))
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
    with pytest.warns(DeprecationWarning, match=r"save_graph\(graph, path\)"):
        C.save_graph(tmp_path / "old.pt", g)             # the old order still works
    with pytest.warns(DeprecationWarning):
        C.save_graph(str(tmp_path / "old_str.pt"), g)
    for name in ("new.pt", "new_str.pt", "old.pt", "old_str.pt"):
        assert_same_graph(C.load_graph(tmp_path / name), g)
    with pytest.raises(TypeError, match="takes one ParameterGraph, got str"):
        C.save_graph("a.pt", "b.pt")
    with pytest.raises(TypeError, match="Batch"):
        C.save_graph(Batch.from_data_list([g, g]), tmp_path / "batch.pt")


def test_load_graph_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a graph"):
        C.load_graph(bad)
    (tmp_path / "trunc.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="cannot read"):
        C.load_graph(tmp_path / "trunc.pt")


def test_mixed_architectures_batch_with_local_ids():
    g1 = C.to_graph(*make("cnn_zoo"))
    g2 = C.to_graph(*make("mlp_relu"))
    g3 = C.to_graph(*make("resnet"))
    batch = C.batch_graphs([g1, g2, g3])
    assert batch.edge_attr.shape[1] == 9 and batch.x.shape[1] == 4
    assert batch.edge_index.max() < batch.num_nodes
    # perm_class / tie ids stay graph-local; combined with batch they identify classes
    for i, g in enumerate((g1, g2, g3)):
        sel = batch.batch == i
        assert torch.equal(batch.perm_class[sel], g.perm_class)
        assert torch.equal(batch.tie[sel], g.tie)
    parts = batch.to_data_list()
    # the MLP's scalar weights sit in the centre slot of the 3x3 grid
    assert torch.equal(parts[1].edge_attr[:, 4], g2.edge_attr[:, 0])
    assert parts[1].edge_attr[:, [0, 1, 2, 3, 5, 6, 7, 8]].abs().sum() == 0
    assert torch.equal(parts[1].edge_mask[:, 4], torch.ones(g2.num_edges, dtype=torch.bool))
    for orig, p in zip((g1, g2, g3), parts):
        assert torch.equal(C.to_module(p)(make_input(orig)), C.to_module(orig)(make_input(orig)))
    with pytest.raises(ValueError, match="one architecture"):
        C.to_dense(batch)


def make_input(g):
    torch.manual_seed(0)
    return torch.randn(3, *g.arch.input["shape"], dtype=torch.float64)


def test_kernel_padding_is_centred_across_sizes():
    k5 = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5), torch.nn.ReLU(),
                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                             torch.nn.Linear(2, 1))
    g5 = C.to_graph(k5, torch.zeros(1, 1, 8, 8))
    g3 = C.to_graph(make("cnn_zoo", torch.float32)[0])
    batch = C.batch_graphs([g3, g5])
    small = batch.to_data_list()[0]
    grid = small.edge_attr[0].reshape(5, 5)
    assert torch.equal(grid[1:4, 1:4].reshape(-1), g3.edge_attr[0])
    outside = torch.ones(5, 5, dtype=torch.bool)
    outside[1:4, 1:4] = False
    assert (grid[outside] == 0).all() and not small.edge_mask[0].reshape(5, 5)[outside].any()
    assert torch.equal(C.to_state_dict(small)["0.weight"], C.to_state_dict(g3)["0.weight"])


def test_a_rebuilt_network_can_be_traced_again():
    """The rebuilt module's forward takes one input unless the network reads further inputs
    (attention masks): torch.fx turned `*extra` into a proxy and refused `if extra`, which broke
    `scalegmn simulate` on every model."""
    import torch.fx as fx
    import torch.nn as nn
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    back = C.to_module(C.to_graph(model))
    assert type(back) is C.SpecModule
    fx.symbolic_trace(back)
    again = C.to_module(C.to_graph(back, torch.zeros(3, 2)))
    x = torch.randn(5, 2)
    assert torch.equal(again(x), model(x))
