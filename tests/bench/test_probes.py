"""``scalegmn.bench.probes``: tensor memory and FLOPs of one call, time."""
import pytest
import torch

from scalegmn.bench import probes


def test_memory_view_and_flop_count():
    kept = []
    view = probes.memory_view(lambda: kept.append(torch.ones(1 << 20)))     # 4 MiB, kept
    assert view["alloc_net_mib"] == pytest.approx(4, abs=0.1)
    assert view["alloc_peak_mib"] >= 4 - 0.1
    assert view["allocator"] in ("glibc malloc default", "malloc default")   # not applied here

    def transient():
        a = torch.ones(1 << 21)         # 8 MiB, freed inside the step
        return float(a.sum())
    view = probes.memory_view(transient)
    assert view["alloc_peak_mib"] >= 8 - 0.1 and abs(view["alloc_net_mib"]) < 0.1

    lin, x = torch.nn.Linear(64, 32), torch.randn(16, 64)
    flops = probes.count_flops(lambda: lin(x).sum().backward())
    assert flops == 2 * (2 * 16 * 64 * 32)     # forward, grad weight (x needs no grad)
    x.requires_grad_(True)
    assert probes.count_flops(lambda: lin(x).sum().backward()) == 3 * (2 * 16 * 64 * 32)


def test_memory_events_agree_with_key_averages():
    from torch.profiler import ProfilerActivity, profile
    lin = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    x = torch.randn(512, 64)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        lin(x).sum().backward()
    peak, net = probes.memory_from_events(prof)
    op_peak, op_net = probes.memory_from_averages(prof)
    assert net == op_net > 0                      # gradients stay allocated
    assert peak >= op_peak > 0 and peak >= 512 * 256 * 4    # the hidden activation is live


def test_time_call_warms_up_and_stops_at_max_s():
    calls = []
    probes.time_call(lambda: calls.append(1), repeats=4)
    assert len(calls) == 5                        # one warm-up, four timed
    calls.clear()
    probes.time_call(lambda: calls.append(__import__("time").sleep(0.02)), repeats=50, max_s=0.05)
    assert 2 <= len(calls) <= 5                   # stopped once 0.05 s were spent


def test_op_profile_names_the_operators():
    lin, x = torch.nn.Linear(32, 8), torch.randn(4, 32)
    table = probes.op_profile(lambda: lin(x).sum().backward())
    assert "aten::" in table and "Self CPU" in table
