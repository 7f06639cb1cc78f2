"""scalegmn.allocator: glibc keeps freed tensor memory (no page faults on reuse), opt-in only."""
import subprocess
import sys

import pytest

from scalegmn import allocator
from scalegmn.train.config import TrainConfig

needs_glibc = pytest.mark.skipif(allocator.glibc_version() is None, reason="needs glibc")

# allocate and free a 64 MiB tensor many times; print the minor page faults of the last rounds
# (with keep, the heap grows over the first rounds, small Python objects pinning freed blocks,
# then serves every round from memory it already has)
_PROBE = """
import resource, sys, torch
from scalegmn import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    torch.ones(16 * 2**20)        # 64 MiB, written (faulted in), freed at once
f0 = faults()
for _ in range(5):
    torch.ones(16 * 2**20)
print((faults() - f0) / 5, allocator.applied())
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    return float(out[0]), out[1].strip()


@needs_glibc
def test_keep_reuses_pages_that_default_malloc_faults_in_again():
    default, applied_default = _faults("default")
    keep, applied_keep = _faults("keep")
    pages = 64 * 2**20 / 4096
    assert default > 0.5 * pages        # control: glibc unmaps the block, each round faults anew
    assert keep < 0.05 * pages          # kept: the heap's pages are reused
    assert applied_default == "{}" and "M_MMAP_MAX" in applied_keep


def test_bad_choice_is_named():
    with pytest.raises(ValueError, match="'fast'"):
        allocator.apply("fast")
    with pytest.raises(ValueError, match="malloc"):
        TrainConfig(malloc="fast")


def test_default_choice_changes_nothing():
    assert allocator.apply("default") is False
