"""Parameter-sharing backends (Monomial-NFN, MAGEP-NFN, NP, HNP, STATNN): each held to the groups
it claims (float64, coupled actions, scales in [1e-3, 1e3]) on ReLU, tanh and sine MLPs and ReLU
and tanh CNNs, with negative controls, broken-layer controls and training."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torch_geometric.data import Batch

import converters as C
import scalegmn
from scalegmn import nfn
from scalegmn.testing import assert_equivariant, assert_sensitive, sensitivity
from zoo import make, toy_sign_task

FAMILIES = ["mlp_relu", "mlp_tanh", "siren_nfn", "cnn_zoo", "cnn_zoo_tanh"]
BACKENDS = ["monomial-nfn", "magep-nfn", "np", "hnp", "statnn"]
CASES = [(b, t) for b in BACKENDS for t in ("invariant", "equivariant")
         if not (b == "statnn" and t == "equivariant")]
SMALL = dict(hidden=5, layers=2, out_dim=3)
EXPECTED_MODE = {"mlp_relu": "scale", "cnn_zoo": "scale", "mlp_tanh": "sign", "siren_nfn": "sign",
                 "cnn_zoo_tanh": "sign"}


def batch_of(name, n=3):
    return Batch.from_data_list([C.to_graph(*make(name, seed=s)) for s in range(n)])


@pytest.fixture(scope="module")
def batches():
    return {name: batch_of(name) for name in FAMILIES}


def build(backend, task, b, **kw):
    torch.manual_seed(0)
    return scalegmn.build(backend, task, spec=b, **{**SMALL, **kw})


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, task", CASES)
def test_claimed_groups_hold(batches, name, backend, task):
    b = batches[name]
    net = build(backend, task, b)
    claimed = set(net.claimed_groups())
    if backend in ("monomial-nfn", "magep-nfn"):
        assert claimed == {"fixed", "perm", EXPECTED_MODE[name]}
    else:
        assert claimed == {"fixed", "perm"}
    errors = assert_equivariant(net, b, n_actions=3)
    full = {"all"} if backend in ("monomial-nfn", "magep-nfn") else set()
    assert set(errors) == {"perm"} | full | (claimed & {"scale", "sign"})


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("backend, task", CASES)
def test_negative_controls(batches, name, backend, task):
    """Whatever the model does not claim changes its output: another network, factors outside the
    claimed group, swapped input/output neurons (STATNN reads no indices: exempt), uncoupled
    rescaling of rows (Monomial-NFN in scale mode is invariant to it by construction, 3.4)."""
    b = batches[name]
    net = build(backend, task, b)
    assert_sensitive(net, b, "different")
    assert_sensitive(net, b, "unclaimed")
    if backend != "statnn":
        assert_sensitive(net, b, "io_permutation")
    if backend == "monomial-nfn" and EXPECTED_MODE[name] == "scale" and task == "invariant":
        assert sensitivity(net, b, "uncoupled") < 1e-12
    else:
        assert_sensitive(net, b, "uncoupled")


@pytest.mark.parametrize("name", ["mlp_relu", "cnn_zoo"])
def test_monomial_layer_is_invariant_to_uncoupled_actions(batches, name):
    """docs/methods.md 3.3: no message passing between layers, so a coupled-action test cannot
    catch a wrongly coupled action; documented here as a property rather than a control."""
    net = build("monomial-nfn", "invariant", batches[name])
    assert sensitivity(net, batches[name], "uncoupled") < 1e-12


def _middle_edit_changes(net, b, factors, layers, n_edges=12, seed=0):
    """Largest relative output change of ``net`` when single weights of the node sets ``layers``
    are multiplied by ``factors()`` one at a time."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = net(b)
        edges = torch.isin(b.layer[b.edge_index[1]], torch.tensor(layers)).nonzero().squeeze(1)
        worst = 0.0
        for e in edges[torch.randperm(len(edges), generator=gen)[:n_edges]].tolist():
            other = b.clone()
            other.edge_attr = b.edge_attr.clone()
            other.edge_attr[e] *= factors(gen)
            worst = max(worst, float((net(other) - y).abs().max() / y.abs().max()))
    return worst


def test_monomial_nfn_is_blind_to_middle_weight_magnitude_or_sign():
    """A documented property of the published design (docs/methods.md 3.3; README), not a bug.
    Networks enter with one channel and no map mixes two hidden entries or two layers, so the
    features of a middle-layer entry (1 < l < L) are a function of that one weight: positively
    homogeneous in ReLU mode, odd in tanh mode, then normalised (with |.| in tanh mode) by the
    invariant layer. Hence on ReLU MLPs a middle-layer weight change that keeps its sign leaves
    the output unchanged, and on tanh MLPs flipping a middle-layer weight's sign does (measured:
    bitwise unchanged in float64). Controls: the other kind of change, and changes of first-layer
    weights, move the output; MAGEP-NFN, which mixes layers, sees both."""
    magnitude = lambda g: float(torch.exp(torch.empty(1, dtype=torch.float64).uniform_(
        -3, 3, generator=g)))
    flip = lambda g: -1.0
    for act, invisible, visible in (("relu", magnitude, flip), ("tanh", flip, magnitude)):
        torch.manual_seed(0)
        b = Batch.from_data_list([C.to_graph(C.models.mlp([3, 8, 8, 8, 2], act).double())
                                  for _ in range(3)])
        net = build("monomial-nfn", "invariant", b, hidden=6, layers=3, out_dim=4).double().eval()
        assert set(net.claimed_groups()) == {"fixed", "perm", EXPECTED_MODE[f"mlp_{act}"]}
        assert _middle_edit_changes(net, b, invisible, [2, 3]) < 1e-12, act
        assert _middle_edit_changes(net, b, visible, [2, 3]) > 1e-6, act
        assert _middle_edit_changes(net, b, lambda g: 3.0, [1]) > 1e-6, act
        magep = build("magep-nfn", "invariant", b).double().eval()
        assert _middle_edit_changes(magep, b, invisible, [2, 3]) > 1e-6, act


# -- broken layers are caught --------------------------------------------------------------------
class _ConstantOnHidden(torch.nn.Module):
    """A Monomial layer plus an additive constant on hidden weights (breaks scale equivariance)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ws):
        out = self.inner(ws)
        w = list(out.weights)
        w[1] = w[1] + 0.3
        return nfn.WeightSpace(tuple(w), out.biases)


def test_harness_catches_a_broken_monomial_layer(batches):
    b = batches["mlp_relu"]
    net = build("monomial-nfn", "equivariant", b)
    assert_equivariant(net, b, n_actions=2)
    net.layers[0] = _ConstantOnHidden(net.layers[0])
    with pytest.raises(AssertionError, match="scale"):
        assert_equivariant(net, b, n_actions=2)


def test_harness_catches_a_wrong_nonlinearity(batches):
    """MAGEP-NFN with ReLU between layers on tanh networks: not sign-equivariant."""
    b = batches["mlp_tanh"]
    net = build("magep-nfn", "invariant", b)
    assert_equivariant(net, b, n_actions=2)
    type(net).act = property(lambda self: torch.relu)
    try:
        with pytest.raises(AssertionError, match="sign"):
            assert_equivariant(net, b, n_actions=2)
    finally:
        del type(net).act


def test_harness_catches_a_missing_absolute_value(batches):
    """Monomial-NFN's sign-mode pool without |.| is not sign-invariant."""
    b = batches["mlp_tanh"]
    net = build("monomial-nfn", "invariant", b)
    net.pool.sign = False
    with pytest.raises(AssertionError, match="sign"):
        assert_equivariant(net, b, n_actions=2)


def test_np_and_hnp_are_not_scale_equivariant(batches):
    """The layers claim permutations only; forcing a scale claim must fail the harness."""
    b = batches["mlp_relu"]
    for backend in ("np", "hnp"):
        net = build(backend, "equivariant", b)
        net.claimed_groups = lambda: ("fixed", "perm", "scale")
        with pytest.raises(AssertionError, match="scale"):
            assert_equivariant(net, b, n_actions=2)


# -- MAGEP path products -------------------------------------------------------------------------
def _random_ws(widths, C=2, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = tuple(torch.randn(B, widths[l + 1], widths[l], C, generator=g, dtype=torch.float64)
              for l in range(len(widths) - 1))
    b = tuple(torch.randn(B, widths[l + 1], C, generator=g, dtype=torch.float64)
              for l in range(len(widths) - 1))
    return nfn.WeightSpace(W, b)


def test_path_products_match_brute_force():
    widths = [3, 5, 4, 6, 2]
    ws = _random_ws(widths)
    M, b, P, S, beta = nfn.path_products(ws)
    L = len(widths) - 1

    def prod(s, t):   # W_(s,t) by explicit multiplication
        out = M[t + 1]
        for r in range(t + 2, s + 1):
            out = M[r] @ out
        return out

    for s in range(1, L + 1):
        assert torch.allclose(P[s], prod(s, 0))
        ref = sum((prod(s, t) @ b[t].unsqueeze(-1)).squeeze(-1) for t in range(1, s)) \
            if s > 1 else torch.zeros_like(b[1])
        assert torch.allclose(beta[s], ref)
    for t in range(0, L):
        assert torch.allclose(S[t], prod(L, t))


def test_magep_layer_cost_is_linear_in_depth():
    """FLOPs of one PolyLinear forward at L = 3, 6, 12, 24 (width 16) grow by the same amount per
    added layer (the published all-pairs version adds more work per layer the deeper it is)."""
    flops = {}
    for L in (3, 6, 12, 24):
        ws = _random_ws([2] + [16] * (L - 1) + [3], C=4, B=2)
        layer = nfn.PolyLinear(2, 3, L, 4, 4).double()
        with FlopCounterMode(display=False) as fc:
            layer(ws)
        flops[L] = fc.get_total_flops()
    per_layer = [(flops[b] - flops[a]) / (b - a) for a, b in ((3, 6), (6, 12), (12, 24))]
    assert max(per_layer) / min(per_layer) < 1.1, flops


# -- plumbing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["monomial-nfn", "magep-nfn", "np", "hnp"])
def test_edits_are_networks(batches, backend):
    b = batches["cnn_zoo"]
    net = build(backend, "equivariant", b)
    out = net(b)
    assert (out.delta_edge_attr[~b.edge_mask] == 0).all()
    assert (out.delta_x[b.role == C.ROLES.index("input")] == 0).all()
    assert out.delta_edge_attr.abs().sum() > 0 and out.delta_x.abs().sum() > 0
    for g in out.to_data_list():
        C.to_module(g)


def test_hidden_widths_may_differ_but_not_the_chain():
    small = Batch.from_data_list([C.to_graph(C.models.mlp([3, 5, 7, 2], "relu"))
                                  for _ in range(2)])
    net = scalegmn.build("monomial-nfn", spec=C.arch.mlp([3, 8, 8, 2]), **SMALL)
    assert net(small).shape == (2, 3)
    deeper = Batch.from_data_list([C.to_graph(C.models.mlp([3, 5, 5, 5, 2], "relu"))])
    with pytest.raises(ValueError, match="built for chains"):
        net(deeper)
    with pytest.raises(ValueError, match="one architecture"):
        net(Batch.from_data_list([small[0], deeper[0]]))


@pytest.mark.parametrize("name", ["resnet", "layernorm", "cnn_grouped"])
def test_non_chains_are_refused_with_a_reason(name):
    g = C.to_graph(*make(name))
    with pytest.raises(ValueError, match="architecture .*(chain|ops|node features|plain)"):
        scalegmn.build("hnp", spec=g, **SMALL)


def test_statnn_has_no_equivariant_head(batches):
    with pytest.raises(ValueError, match="invariant task only"):
        scalegmn.build("statnn", "equivariant", spec=batches["mlp_relu"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_reduces_the_loss(backend):
    """The toy invariant task of the ScaleGMN tests: the sign of a ReLU net's output at a point."""
    b, y = toy_sign_task()
    net = scalegmn.build(backend, "invariant", spec=b, out_dim=1, hidden=16, layers=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(b).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::10]
