"""Settings of one ``scalegmn bench`` run, in one frozen dataclass, and the shipped presets.

``BenchSettings`` holds what every measurement of a run shares (workload, backends, engines,
sizes, threads, malloc policy, autocast, limits); the suites read it instead of module globals
or long argument lists. ``Size`` holds the sizes and repeats of a table or a sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

ENGINES = ("sparse", "dense", "lean", "reference")
READOUTS = ("last_layer", "full_graph")
AUTOCAST = ("bfloat16", "float16")
MALLOC = ("keep", "lean", "default")


@dataclass(frozen=True)
class Size:
    """Sizes and repeats of a table or sweep: ``batch`` graphs per step, metanetwork ``hidden``
    width and ``layers``, up to ``repeats`` timed calls after warm-up, fewer once ``max_s``
    seconds are spent (None: all of them)."""
    batch: int
    hidden: int
    layers: int
    repeats: int
    max_s: Optional[float]

    def override(self, **values: Optional[int]) -> "Size":
        """A copy with the given values that are not None."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


# sizes and repeats of the default table and of the sweeps; --batch etc. override them
QUICK = Size(batch=8, hidden=16, layers=2, repeats=2, max_s=0.5)
FULL = Size(batch=128, hidden=128, layers=4, repeats=3, max_s=5.0)
DOCS = Size(batch=32, hidden=64, layers=4, repeats=3, max_s=5.0)
SWEEP_QUICK = Size(batch=8, hidden=16, layers=2, repeats=1, max_s=0.5)
SWEEP_FULL = Size(batch=4, hidden=32, layers=2, repeats=3, max_s=1.5)


@dataclass(frozen=True)
class BenchSettings:
    """What every measurement of a ``scalegmn bench`` run shares.

    Args:
        workload: input networks of the default table (``siren``, ``cnn_zoo``, ``mlp:2-32-1``).
        backends: backends to measure (None: the registered ones that build).
        engines: engines of the message-passing backends (``ENGINES``).
        readout: readout of the message-passing backends in the default table (``READOUTS``).
        prune_last_layer: skip last-layer messages the readout never reads (default table).
        table: sizes of the default table; sweep: of the sweeps.
        threads: torch threads of the measuring processes (None: torch's default).
        malloc: malloc policy of the measuring processes (``scalegmn.allocator``); the ``lean``
            and ``reference`` engines use their own.
        autocast: ``torch.autocast`` dtype of the measured steps (None: none).
        timeout: seconds per measurement; max_mem_gib: address space a measurement may add
            (None: no cap).
        quick: small sizes and repeats (a smoke test of the same code).
    """
    workload: str = "siren"
    backends: Optional[tuple] = None
    engines: tuple = ("sparse", "dense")
    readout: str = "last_layer"
    prune_last_layer: bool = True
    table: Size = FULL
    sweep: Size = SWEEP_FULL
    threads: Optional[int] = None
    malloc: str = "keep"
    autocast: Optional[str] = None
    timeout: float = 300.0
    max_mem_gib: Optional[float] = 8.0
    quick: bool = False

    def __post_init__(self):
        for name, value, allowed in (("readout", self.readout, READOUTS),
                                     ("malloc", self.malloc, MALLOC),
                                     ("autocast", self.autocast, (None,) + AUTOCAST)):
            if value not in allowed:
                raise ValueError(f"BenchSettings.{name} must be one of {allowed}, got {value!r}")
        bad = [e for e in self.engines if e not in ENGINES]
        if bad:
            raise ValueError(f"BenchSettings.engines: unknown engine(s) {bad}; choose from "
                             f"{ENGINES}")
        if self.timeout <= 0:
            raise ValueError(f"BenchSettings.timeout must be positive, got {self.timeout}")


@dataclass(frozen=True)
class Preset:
    """A named selection of ``scalegmn bench``: backends, engines, workload, table size, the
    parts it runs (``table``, ``efficiency``, ...) and the timeout per measurement; options
    given on the command line override it."""
    name: str
    text: str
    backends: tuple
    engines: tuple
    workload: str
    size: Size
    parts: tuple = ("table",)
    timeout: float = 300.0


PRESETS = {
    "engine-speed": Preset(
        "engine-speed",
        "ScaleGMN's sparse against its dense engine at the MNIST-INR workload (SIREN 2-32-32-1, "
        "batch 128, hidden 128, 4 layers, readout last_layer): forward and forward+backward "
        "time, graphs/s, peak RSS, counted FLOPs and their fraction of the matmul peak "
        "measured in the same run; --profile adds torch.profiler operator tables",
        backends=("scalegmn",), engines=("sparse", "dense"), workload="siren",
        size=Size(batch=128, hidden=128, layers=4, repeats=5, max_s=None),
        parts=("table", "efficiency"), timeout=900.0),
}
