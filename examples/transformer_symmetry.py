"""The symmetries of attention, by hand: convert a small GPT, then move its weights directly
(no converter involved) by a head permutation and a Q/K rescaling, and check that the function
is unchanged, while a broken rescaling (queries and keys scaled alike) changes it.

    python examples/transformer_symmetry.py

Why: in one head, the scores are ``q . k = sum_d q_d k_d``. Scaling query dimension ``d`` by
``s_d`` and key dimension ``d`` by ``1 / s_d`` keeps every product, hence the scores, the softmax
and the output. Swapping whole heads (their Q, K and V rows together, and the matching input
columns of the output projection) only reorders the concatenated head outputs, which the output
projection reads in the new order. Scaling queries and keys *alike* multiplies the scores by
``s_d ** 2`` in dimension ``d``: a different attention pattern.
"""
import copy

import torch

import converters

torch.manual_seed(0)
model = converters.models.gpt_tiny(vocab_size=32, block_size=8, dim=16, depth=2, heads=2)
model = model.double().eval()
with torch.no_grad():                        # weights large enough that attention is not flat
    for p in model.parameters():
        p.mul_(8.0)
ids = torch.randint(0, 32, (4, 8))
y = model(ids)

# -- the graph: queries and keys of each block share one permutation per head and take
#    reciprocal factors (an "inverse tie"); the round trip is exact
graph = converters.to_graph(model, ids)
print(graph)
groups = {ns["name"]: ns["group"] for ns in graph.arch.nodesets}
for name in ("blocks.0.attn.query", "blocks.0.attn.key", "blocks.0.attn.value"):
    print(f"{name:22s} group {groups[name]}")
assert torch.equal(converters.to_module(graph)(ids), y)


def rel_change(m: torch.nn.Module) -> float:
    """max |m(ids) - y| / max |y|."""
    return ((m(ids) - y).abs().max() / y.abs().max()).item()


attn = model.blocks[0].attn
H, D = attn.heads, attn.query.out_features // attn.heads


# -- 1. a head permutation, written on the torch weights ------------------------------------------
def permute_heads(model: torch.nn.Module, order: list) -> torch.nn.Module:
    """A copy of ``model`` whose block-0 heads are reordered: new head h is old head order[h]."""
    m = copy.deepcopy(model)
    a = m.blocks[0].attn
    rows = torch.cat([torch.arange(h * D, (h + 1) * D) for h in order])   # (H * D,)
    with torch.no_grad():
        for lin in (a.query, a.key, a.value):
            lin.weight.copy_(lin.weight[rows])            # (out, in): rows are the features
            lin.bias.copy_(lin.bias[rows])
        a.c_proj.weight.copy_(a.c_proj.weight[:, rows])  # its inputs follow the heads
    return m


swapped = permute_heads(model, [1, 0])
assert not torch.equal(swapped.blocks[0].attn.query.weight, attn.query.weight)
err = rel_change(swapped)
print(f"heads 0 and 1 swapped:                  relative change {err:.1e}")
assert err < 1e-12


# -- 2. a Q/K rescaling: s on query dimensions, 1/s on the same key dimensions --------------------
def rescale_qk(model: torch.nn.Module, s_query: torch.Tensor,
               s_key: torch.Tensor) -> torch.Tensor:
    """A copy of ``model`` whose block-0 query features are multiplied by ``s_query`` and key
    features by ``s_key`` (both (H * D,)), through the rows of their weights and biases."""
    m = copy.deepcopy(model)
    a = m.blocks[0].attn
    with torch.no_grad():
        for lin, s in ((a.query, s_query), (a.key, s_key)):
            lin.weight.mul_(s[:, None])
            lin.bias.mul_(s)
    return m


gen = torch.Generator().manual_seed(1)
s = torch.exp(torch.randn(H * D, generator=gen, dtype=torch.float64))    # positive
s = s * torch.where(torch.rand(H * D, generator=gen) < 0.5, -1.0, 1.0)    # and sign flips
err = rel_change(rescale_qk(model, s, 1 / s))
print(f"queries * s, keys / s:                  relative change {err:.1e}")
assert err < 1e-9

# both moves at once, with a permutation of dimensions inside head 0 for Q and K together
both = rescale_qk(permute_heads(model, [1, 0]), s, 1 / s)
inner = torch.cat([torch.tensor([1, 0]), torch.arange(2, H * D)])
with torch.no_grad():
    for lin in (both.blocks[0].attn.query, both.blocks[0].attn.key):
        lin.weight.copy_(lin.weight[inner])
        lin.bias.copy_(lin.bias[inner])
err = rel_change(both)
print(f"heads swapped, Q/K rescaled, Q/K dims 0 and 1 swapped in head 0: "
      f"relative change {err:.1e}")
assert err < 1e-9

# -- 3. broken: queries and keys scaled alike (scores scaled by s**2) -----------------------------
err = rel_change(rescale_qk(model, s, s))
print(f"queries * s, keys * s (broken):         relative change {err:.1e}")
assert err > 1e-3

# a Q dimension swapped between heads without its K dimension (broken too)
broken = copy.deepcopy(model)
with torch.no_grad():
    q = broken.blocks[0].attn.query
    rows = torch.arange(H * D)
    rows[0], rows[D] = D, 0
    q.weight.copy_(q.weight[rows])
    q.bias.copy_(q.bias[rows])
err = rel_change(broken)
print(f"one Q dimension moved across heads:     relative change {err:.1e}")
assert err > 1e-3

# -- 4. the converter's own actions agree: the moved models convert to graphs of the same
#    architecture, and sampled group actions keep the function
assert converters.to_graph(swapped, ids).arch == graph.arch
for _ in range(5):
    a = converters.sample_action(graph, generator=gen)
    assert rel_change(converters.to_module(a.apply(graph))) < 1e-9
print("function unchanged under the symmetries, changed by the broken rescalings")
