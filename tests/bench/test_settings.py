"""``scalegmn.bench.settings``: one frozen dataclass for a run; bad values name the field."""
import dataclasses

import pytest

from scalegmn.bench.settings import FULL, PRESETS, BenchSettings, Size


def test_settings_are_frozen_and_checked():
    s = BenchSettings()
    assert (s.malloc, s.autocast, s.table, s.engines) == ("keep", None, FULL, ("sparse", "dense"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.malloc = "lean"
    for field, value in (("malloc", "jemalloc"), ("autocast", "float64"), ("readout", "mean")):
        with pytest.raises(ValueError, match=f"BenchSettings.{field}.*{value}"):
            BenchSettings(**{field: value})
    with pytest.raises(ValueError, match="engines.*'fast'"):
        BenchSettings(engines=("dense", "fast"))
    with pytest.raises(ValueError, match="timeout"):
        BenchSettings(timeout=0)


def test_size_override_keeps_what_is_not_given():
    size = Size(batch=8, hidden=16, layers=2, repeats=2, max_s=0.5)
    assert size.override(batch=None, hidden=32) == Size(8, 32, 2, 2, 0.5)


def test_engine_speed_preset_is_the_mnist_inr_config():
    p = PRESETS["engine-speed"]
    assert (p.backends, p.engines, p.workload) == (("scalegmn",), ("sparse", "dense"), "siren")
    assert (p.size.batch, p.size.hidden, p.size.layers, p.size.max_s) == (128, 128, 4, None)
    assert "efficiency" in p.parts and "table" in p.parts
