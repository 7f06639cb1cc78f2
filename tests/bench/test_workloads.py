"""``scalegmn.bench.workloads``: input networks, batches and the metanetworks built for them."""
import pytest

from scalegmn.bench import workloads


def test_default_backends_follow_the_documented_order():
    names = workloads.default_backends()
    known = [b for b in names if b in workloads.DEFAULT_BACKENDS]
    assert known == [b for b in workloads.DEFAULT_BACKENDS if b in known]
    assert {"scalegmn", "scalegmn-b", "gmn", "mlp"} <= set(names)


def test_batches_and_unknown_workloads():
    batch = workloads.make_batch("mlp:2-8-1", 3)
    assert batch.num_graphs == 3 and batch.num_edges == 3 * (2 * 8 + 8)
    assert workloads.describe("mlp:2-8-1") == "ReLU MLPs 2-8-1"
    with pytest.raises(ValueError, match="'vgg'"):
        workloads.make_model("vgg")


def test_pseudo_engines_build_their_model_and_malloc():
    batch = workloads.make_batch("mlp:2-8-8-1", 2)
    ref = workloads.build_model("scalegmn", "reference", batch, hidden=8, layers=2)
    dense = workloads.build_model("scalegmn", "dense", batch, hidden=8, layers=2)
    rex, dex = ref.cfg.execution, dense.cfg.execution
    assert rex.engine == "sparse" and not rex.prune_last_layer and not rex.fused
    assert dex.prune_last_layer and dex.fused
    assert workloads.build_model("scalegmn", "lean", batch, hidden=8, layers=2
                                 ).cfg.execution.checkpoint
    assert [workloads.malloc_for(e, "keep") for e in ("dense", "lean", "reference")] == \
        ["keep", "lean", "default"]
    assert workloads.engines_for("mlp", ["dense", "sparse"]) == ["-"]
