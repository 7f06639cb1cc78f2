"""``scalegmn.bench.measure``: one metanetwork measurement, in this process or its own."""
import torch

from scalegmn.bench.measure import Case, measure, measure_row, profile_row
from scalegmn.bench.settings import BenchSettings

CASE = {"backend": "scalegmn", "engine": "dense", "workload": "mlp:2-8-1", "batch_size": 2,
        "hidden": 8, "layers": 1, "repeats": 1, "threads": 1}


def test_autocast_rows_run_under_autocast(monkeypatch):
    """``autocast`` runs the step under torch.autocast (on the CPU with bfloat16 here) and the
    row says so; without it the row says None and autocast is never entered."""
    seen = []
    real = torch.autocast

    def spy(*a, **k):
        seen.append(k.get("dtype"))
        return real(*a, **k)
    monkeypatch.setattr(torch, "autocast", spy)
    row = measure(**CASE, memory=False, flops=False, autocast="bfloat16")
    assert row["autocast"] == "bfloat16" and seen and set(seen) == {torch.bfloat16}
    seen.clear()
    assert measure(**CASE, memory=False, flops=False)["autocast"] is None and not seen


def test_settings_reach_the_measuring_process():
    """``--autocast`` and ``--threads`` travel in the request, not in module globals."""
    case = Case("scalegmn", "dense", "mlp:2-8-1", 2, 8, 1)
    row = measure_row(case, BenchSettings(autocast="bfloat16", threads=1, timeout=120),
                      repeats=1, flops=False)
    assert row["autocast"] == "bfloat16" and row["threads"] == 1 and row["wall_s"] > 0
    row = measure_row(case, BenchSettings(threads=2, timeout=120), repeats=1, flops=False)
    assert row["autocast"] is None and row["threads"] == 2


def test_unpruned_last_layer_counts_more_flops():
    """``prune_last_layer=False`` (``--no-prune``) evaluates the last layer's messages into
    hidden nodes too: more FLOPs for the same parameters."""
    case = {**CASE, "workload": "mlp:2-8-8-1", "layers": 2}
    pruned = measure(**case, memory=False)
    full = measure(**case, memory=False, prune_last_layer=False)
    assert pruned["prune_last_layer"] is True and full["prune_last_layer"] is False
    assert full["flops_forward_backward"] > pruned["flops_forward_backward"]
    assert full["trainable"] == pruned["trainable"]


def test_profile_row_is_an_operator_table():
    row = profile_row(Case("scalegmn", "sparse", "mlp:2-8-1", 2, 8, 1),
                      BenchSettings(timeout=120))
    assert row["engine"] == "sparse" and "aten::" in row["table"]
