"""ScaleGMN, ScaleGMN-B and GMN: symmetry (float64, coupled actions, scales in [1e-3, 1e3]),
negative controls, internal states, engines, batch independence, numerics and training."""

import pytest
import torch
from torch_geometric.data import Batch

import converters as C
import scalegmn
from converters.groups import GROUP_ID
from scalegmn.gmn import io_nodes
from scalegmn.testing import (assert_equivariant, assert_sensitive, equivariance_errors,
                              output_error)
from zoo import make, toy_sign_task

FAMILIES = ["mlp_relu", "mlp_leaky", "mlp_tanh", "siren_nfn", "mlp_mixed", "cnn_zoo",
            "cnn_zoo_tanh", "resnet", "cnn_grouped"]
VARIANTS = [("scalegmn", {}), ("scalegmn-b", {}), ("scalegmn-b", {"backward_edges":
                                                                 "division_free"})]
SMALL = dict(hidden=8, layers=2)


def batch_of(name, n=3):
    graphs = [C.to_graph(*make(name, seed=s)) for s in range(n)]
    return Batch.from_data_list(graphs)


@pytest.fixture(scope="module")
def batches():
    return {name: batch_of(name) for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, extra", VARIANTS)
@pytest.mark.parametrize("readout", ["full_graph", "last_layer"])
def test_invariant_models(batches, name, backend, extra, readout):
    b = batches[name]
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=3, readout=readout, **SMALL,
                         **extra)
    errors = assert_equivariant(net, b, n_actions=3)
    present = {C.GROUPS[int(g)] for g in b.group}
    assert set(errors) >= {"perm", "all"} and (present - {"fixed", "perm"}) <= set(errors)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, extra", VARIANTS)
def test_equivariant_models(batches, name, backend, extra):
    b = batches[name]
    net = scalegmn.build(backend, "equivariant", spec=b, **SMALL, **extra)
    assert_equivariant(net, b, n_actions=3)
    out = net(b)
    # same structure; deltas only where the network has parameters; residual edges untouched
    assert torch.equal(out.edge_index, b.edge_index) and out.x.shape == b.x.shape
    residual = b.edge_type == C.EDGE_TYPES.index("residual")
    assert (out.delta_edge_attr[residual] == 0).all()
    assert (out.delta_edge_attr[~b.edge_mask] == 0).all()
    assert (out.delta_x[b.role == C.ROLES.index("input")] == 0).all()
    assert out.delta_edge_attr.abs().sum() > 0 and out.delta_x.abs().sum() > 0
    for g in out.to_data_list():   # edited networks convert back
        C.to_module(g)


@pytest.mark.parametrize("name", ["mlp_relu", "siren_nfn", "cnn_zoo", "resnet", "cnn_grouped",
                                  "mlp_mixed"])
@pytest.mark.parametrize("backend, extra", VARIANTS)
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_sparse_and_dense_engines_agree(batches, name, backend, extra, task):
    b = batches[name]
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        net = scalegmn.build(backend, task, spec=b, out_dim=2, **SMALL, **extra).to(dtype).eval()
        bb = b.clone()
        bb.x, bb.edge_attr = b.x.to(dtype), b.edge_attr.to(dtype)
        outs = {}
        for engine in ("sparse", "dense"):
            net.set_engine(engine)
            with torch.no_grad():
                outs[engine] = net(bb)
        if task == "invariant":
            err = output_error(outs["dense"], outs["sparse"])
        else:
            err = max(float((outs["dense"][k] - outs["sparse"][k]).abs().max()
                            / outs["sparse"][k].abs().max()) for k in ("delta_x",
                                                                       "delta_edge_attr"))
        assert err < tol, (dtype, err)


# -- negative controls ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b", "gmn"])
@pytest.mark.parametrize("task", ["invariant", "equivariant"])
@pytest.mark.parametrize("kind", ["uncoupled", "io_permutation", "unclaimed", "different"])
def test_controls_change_the_output(batches, backend, task, kind):
    b = batches["mlp_relu"]
    net = scalegmn.build(backend, task, spec=b, out_dim=3, **SMALL)
    assert_sensitive(net, b, kind, threshold=1e-4)


def test_control_canonicalisation_off_fails_the_scale_test(batches):
    b = batches["mlp_relu"]
    net = scalegmn.build("scalegmn", "invariant", spec=b, scale_inv="none", **SMALL, out_dim=1)
    errors = equivariance_errors(net, b, n_actions=2)
    assert errors["perm"] < 1e-9 and errors["scale"] > 1e-3
    with pytest.raises(AssertionError, match="scale"):
        assert_equivariant(net, b, n_actions=2)


@pytest.mark.parametrize("readout", ["full_graph", "last_layer"])
def test_control_published_bidirectional_bug(batches, readout):
    """Forward weights on backward edges (the published code) break scale invariance on ReLU
    nets, and are harmless on sign nets, as measured on the published code (docs/methods.md 8.1)."""
    buggy = dict(backward_edges="forward", readout=readout, **SMALL)
    relu = scalegmn.build("scalegmn-b", "invariant", spec=batches["cnn_zoo"], **buggy,
                          out_dim=1)
    assert equivariance_errors(relu, batches["cnn_zoo"], n_actions=2)["scale"] > 1e-4
    tanh = scalegmn.build("scalegmn-b", "invariant", spec=batches["cnn_zoo_tanh"], **buggy,
                          out_dim=1)
    assert_equivariant(tanh, batches["cnn_zoo_tanh"], n_actions=2)


def test_gmn_claims_permutations_only(batches):
    b = batches["mlp_relu"]
    net = scalegmn.build("gmn", "invariant", spec=b, **SMALL, out_dim=1)
    assert net.claimed_groups() == ("fixed", "perm")
    assert set(assert_equivariant(net, b)) == {"perm"}
    net = scalegmn.build("scalegmn", "invariant", spec=b, **SMALL, out_dim=1)
    assert net.claimed_groups() == C.GROUPS


# -- internal states -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp_relu", "mlp_mixed", "resnet"])
@pytest.mark.parametrize("backend, extra", VARIANTS[:2])
def test_internal_states_transform_as_stated(batches, name, backend, extra):
    b = batches[name]
    net = scalegmn.build(backend, "invariant", spec=b, **SMALL, **extra, out_dim=1).double().eval()
    bb = b.clone()
    a = C.sample_action(bb, torch.Generator().manual_seed(5), scale_range=(1e-3, 1e3))
    with torch.no_grad():
        _, s0 = net(bb, return_states=True)
        _, s1 = net(a.apply(bb), return_states=True)
    src, dst = bb.edge_index
    old = a.edge_source(bb.edge_index, bb.num_nodes)
    inv = torch.empty_like(a.perm)
    inv[a.perm] = torch.arange(bb.num_nodes)
    q_dst, q_src = a.q[inv[dst]], a.q[inv[src]]
    io = (bb.group == GROUP_ID["fixed"])
    for (h0, e0, eb0), (h1, e1, eb1) in zip(s0, s1):
        expect_h = torch.empty_like(h0)
        expect_h[a.perm] = h0 * a.q[:, None]
        assert torch.allclose(h1, expect_h, rtol=1e-9, atol=1e-9 * h0.abs().max())
        assert torch.equal(a.q[io], torch.ones(int(io.sum()), dtype=torch.float64))
        expect_e = e0[old] * (q_dst / q_src)[:, None]
        assert torch.allclose(e1, expect_e, rtol=1e-9, atol=1e-9 * e0.abs().max())
        if eb0 is not None:
            expect_eb = eb0[old] * (q_src / q_dst)[:, None]
            assert torch.allclose(eb1, expect_eb, rtol=1e-9, atol=1e-9 * eb0.abs().max())


def test_batch_independence(batches):
    graphs = batches["cnn_zoo"].to_data_list()
    net = scalegmn.build("scalegmn-b", "invariant", spec=graphs[0], out_dim=4, **SMALL).double()
    net.eval()
    with torch.no_grad():
        together = net(Batch.from_data_list(graphs))
        reversed_ = net(Batch.from_data_list(graphs[::-1])).flip(0)
        alone = torch.cat([net(Batch.from_data_list([g])) for g in graphs])
    assert torch.allclose(together, alone, rtol=1e-12, atol=1e-14)
    assert torch.allclose(together, reversed_, rtol=1e-12, atol=1e-14)


def test_mixed_architectures_in_one_batch():
    graphs = [C.to_graph(*make(n)) for n in ("mlp_relu", "cnn_zoo", "mlp_tanh", "resnet")]
    b = C.batch_graphs(graphs)
    for backend in ("scalegmn", "scalegmn-b"):
        net = scalegmn.build(backend, "invariant", spec=b, out_dim=2, **SMALL)
        assert_equivariant(net, b, n_actions=2)
        with pytest.raises(ValueError, match="one architecture"):
            net.set_engine("dense")
            net(b)


def test_no_nan_at_zero_weights_and_states():
    model = C.models.mlp([2, 4, 4, 1], "relu").double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model[2].weight[0, 0] = 1.5     # one nonzero weight, the rest exactly zero
    g = C.to_graph(model)
    b = Batch.from_data_list([g, g])
    for backend in ("scalegmn", "scalegmn-b"):
        for task in ("invariant", "equivariant"):
            net = scalegmn.build(backend, task, spec=b, **SMALL, out_dim=1).double()
            out = net(b)
            y = out if task == "invariant" else torch.cat([out.delta_x.reshape(-1),
                                                           out.delta_edge_attr.reshape(-1)])
            assert torch.isfinite(y).all()
            y.sum().backward()
            assert all(torch.isfinite(p.grad).all() for p in net.parameters()
                       if p.grad is not None)


def test_training_reduces_the_loss():
    """Toy invariant task: predict the sign of each ReLU network's output at a fixed point."""
    b, y = toy_sign_task()
    net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=1, hidden=16, layers=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(b).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::10]


def test_build_errors_and_counts(batches):
    b = batches["mlp_relu"]
    with pytest.raises(ValueError, match="unknown backend"):
        scalegmn.build("nope", spec=b, out_dim=1)
    with pytest.raises(ValueError, match="spec"):
        scalegmn.build("scalegmn")
    with pytest.raises(ValueError, match="unknown config key .model.hidden_size."):
        scalegmn.build("scalegmn", spec=b, hidden_size=3)
    with pytest.raises(ValueError, match="readout"):
        scalegmn.build("scalegmn", spec=b, readout="mean")
    net = scalegmn.build("scalegmn", spec=b.arch[0], **SMALL, out_dim=1)
    counts = scalegmn.count_parameters(net)
    assert counts["trainable"] == sum(p.numel() for p in net.parameters()) > 0
    tiny = scalegmn.build("scalegmn", spec=C.arch.mlp([2, 3, 1]), **SMALL, out_dim=1)
    with pytest.raises(ValueError, match="input neurons|node sets|output neurons"):
        tiny(b)
    tanh_only = scalegmn.build("scalegmn", spec=C.arch.mlp([3, 8, 8, 2], "tanh"), **SMALL,
                               out_dim=1)
    with pytest.raises(ValueError, match="groups"):
        tanh_only(b)


def test_shipped_paper_configs_build():
    from scalegmn import paper_configs
    names = paper_configs.list_configs()
    assert len(names) >= 25
    for name in names:
        cfg, arch = paper_configs.load(name)
        assert cfg == scalegmn.ModelConfig.from_yaml(paper_configs.CONFIG_DIR / f"{name}.yaml")
        net = scalegmn.build(cfg.backend, cfg.task, spec=arch, config=cfg)
        assert scalegmn.count_parameters(net)["trainable"] > 1_000


@pytest.mark.parametrize("sign_inv", ["symmetrize", "canonicalize", "abs"])
@pytest.mark.parametrize("name", ["siren_nfn", "mlp_mixed"])
def test_sign_invariant_options(batches, sign_inv, name):
    b = batches[name]
    for task in ("invariant", "equivariant"):
        net = scalegmn.build("scalegmn-b", task, spec=b, sign_inv=sign_inv, **SMALL, out_dim=1)
        assert_equivariant(net, b, n_actions=2)
        assert_sensitive(net, b, "unclaimed")


# -- speed and memory options (docs/performance.md): same results to rounding ----------------
def _outputs_and_grads(net, b):
    out = net(b)
    y = out if torch.is_tensor(out) else torch.cat([out.delta_x.flatten(),
                                                    out.delta_edge_attr.flatten()])
    net.zero_grad()
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    return y.detach(), {k: p.grad.clone() for k, p in net.named_parameters()
                        if p.grad is not None}


def _double(b):
    bb = b.clone()
    bb.x, bb.edge_attr = b.x.double(), b.edge_attr.double()
    return bb


@pytest.mark.parametrize("name", ["siren_nfn", "mlp_mixed", "cnn_zoo", "resnet"])
@pytest.mark.parametrize("backend, extra", VARIANTS)
@pytest.mark.parametrize("engine", ["dense", "sparse"])
def test_checkpoint_gives_the_same_outputs_and_gradients(batches, name, backend, extra, engine):
    b = _double(batches[name])
    for task in ("invariant", "equivariant"):
        torch.manual_seed(0)
        net = scalegmn.build(backend, task, spec=b, out_dim=2, engine=engine, **SMALL,
                             **extra).double()
        y0, g0 = _outputs_and_grads(net, b)
        net.set_execution(checkpoint=True, checkpoint_chunk=2)   # chunks of 2 of 3 networks
        y1, g1 = _outputs_and_grads(net, b)
        assert output_error(y1, y0) < 1e-10
        assert set(g1) == set(g0)
        for k in g0:
            assert float((g1[k] - g0[k]).abs().max()) <= 1e-10 * max(
                1.0, float(g0[k].abs().max())), k


@pytest.mark.parametrize("group", ["perm", "sign", "scale", "linear"])
def test_fused_scale_eq_matches_its_definition(group):
    from scalegmn.nn import ScaleEq
    torch.manual_seed(0)
    f = ScaleEq(6, 5, group, 7).double()
    with torch.no_grad():   # move phi away from its near-constant initialisation
        for p in f.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(9, 6, dtype=torch.float64)
    x[0] = 0.0                                      # exact zeros: finite, equal gradients
    outs = []
    for fn in (f, lambda x: f.gamma(x) * f.phi(f.inv(x))):
        xx = x.clone().requires_grad_(True)
        y = fn(xx)
        f.zero_grad()
        y.square().sum().backward()
        outs.append((y.detach(), xx.grad, [p.grad.clone() for p in f.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = outs
    assert torch.allclose(y0, y1, rtol=1e-12, atol=1e-13)
    assert torch.isfinite(gx0).all() and torch.allclose(gx0, gx1, rtol=1e-12, atol=1e-12)
    for a, c in zip(gp0, gp1):
        assert torch.allclose(a, c, rtol=1e-12, atol=1e-12)


def test_compile_flag_falls_back_to_eager(batches, monkeypatch):
    b = batches["siren_nfn"]
    torch.manual_seed(0)
    net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, **SMALL)
    with torch.no_grad():
        y0 = net(b)
    keys = set(net.state_dict())

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    def compiles_but_fails_to_run(module, **kwargs):
        def run(*args):
            raise RuntimeError("backend failed")
        return run

    for fake in (broken_compile, compiles_but_fails_to_run):
        net.set_execution(compile=True)
        net.__dict__.pop("_compile_failed", None)
        monkeypatch.setattr(torch, "compile", fake)
        with pytest.warns(RuntimeWarning, match="torch.compile failed"):
            with torch.no_grad():
                y1 = net(b)
        assert torch.equal(y1, y0)
        with torch.no_grad():   # stays eager afterwards, without warning again
            assert torch.equal(net(b), y0)
        assert set(net.state_dict()) == keys


@pytest.mark.parametrize("name", ["siren_nfn", "mlp_mixed", "cnn_zoo", "resnet"])
@pytest.mark.parametrize("backend, extra", VARIANTS)
@pytest.mark.parametrize("engine", ["dense", "sparse"])
def test_pruned_last_layer_gives_the_same_outputs_and_gradients(batches, name, backend, extra,
                                                                  engine):
    """readout last_layer reads only I/O nodes: the last layer's messages into other nodes are
    skipped. Same outputs and gradients; the skipped parameters get no gradient (they had 0)."""
    b = _double(batches[name])
    torch.manual_seed(0)
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=2, engine=engine, hidden=8,
                         layers=3, readout="last_layer", **extra).double()
    with torch.no_grad():   # move the gates away from their near-constant initialisation
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    y1, g1 = _outputs_and_grads(net, b)
    net.set_execution(prune_last_layer=False)
    y0, g0 = _outputs_and_grads(net, b)
    assert output_error(y1, y0) < 1e-12
    assert set(g1) <= set(g0)
    for k in g0:
        tol = 1e-12 * max(1.0, float(g0[k].abs().max()))
        assert float(((g1[k] if k in g1 else 0) - g0[k]).abs().max()) <= tol, k
    if extra.get("backward_edges") != "division_free":   # its backward pass is not pruned
        assert set(g0) - set(g1), "nothing was pruned"


def test_pruning_skips_work_and_keeps_states_when_asked(batches):
    """Control: the pruned last layer computes wrong states for hidden nodes (unread), so the
    pruning is real; with return_states every state is computed in full."""
    from torch.utils.flop_counter import FlopCounterMode
    b = _double(batches["siren_nfn"])
    torch.manual_seed(0)
    net = scalegmn.build("scalegmn", "invariant", spec=b, out_dim=2, engine="dense", hidden=8,
                         layers=2, readout="last_layer").double()
    flops = {}
    for prune in (True, False):
        net.set_execution(prune_last_layer=prune)
        with FlopCounterMode(display=False) as fc:
            net(b)
        flops[prune] = fc.get_total_flops()
    assert flops[True] < 0.8 * flops[False]
    net.set_execution(prune_last_layer=True)
    _, states = net(b, return_states=True)
    net.set_execution(prune_last_layer=False)
    _, full = net(b, return_states=True)
    assert torch.equal(states[-1][0], full[-1][0])
    eng = net.engine(b)
    io = io_nodes(tuple(b.arch))
    pruned = net.layers[-1](eng.toward(io), *full[-2])[0]
    hidden = ~io
    assert torch.allclose(pruned[io], full[-1][0][io], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(pruned[hidden], full[-1][0][hidden])


@pytest.mark.parametrize("backend", ["scalegmn", "scalegmn-b"])
def test_reference_evaluation_is_the_same_function(batches, backend):
    """``fused=False`` (the textbook ScaleEq, the benchmark's reference implementation) computes
    the same outputs and gradients as the fused default."""
    from scalegmn.nn import ScaleEq
    b = _double(batches["mlp_mixed"])
    torch.manual_seed(0)
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=2, engine="sparse",
                         **SMALL).double()
    y1, g1 = _outputs_and_grads(net, b)
    ref = scalegmn.build(backend, "invariant", spec=b, out_dim=2, engine="sparse", fused=False,
                         **SMALL).double()
    ref.load_state_dict(net.state_dict())
    eqs = [m for m in ref.modules() if isinstance(m, ScaleEq)]
    assert eqs and not any(m.fused for m in eqs)
    y0, g0 = _outputs_and_grads(ref, b)
    assert output_error(y1, y0) < 1e-12 and set(g1) == set(g0)
    for k in g0:
        assert float((g1[k] - g0[k]).abs().max()) <= 1e-11 * max(1.0, float(g0[k].abs().max()))


def test_repr_names_each_part_and_its_group():
    """``print(net)`` says what each part is: layer kind and groups, ScaleEq/ScaleInv groups."""
    b = batch_of("siren_nfn", 1)
    text = repr(scalegmn.build("scalegmn-b", "invariant", spec=b, out_dim=2,
                               backward_edges="division_free", **SMALL))
    assert "bidirectional, backward_edges=division_free, groups=['fixed', 'sign']" in text
    assert "ScaleEq(\n" in text and "group=sign, fused=True" in text
    assert "readout=full_graph" in text and "n_in=2, n_out=3" in text
