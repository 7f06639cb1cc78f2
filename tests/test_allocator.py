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
if sys.argv[1] != "default":
    assert allocator.apply(sys.argv[1])
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
    lean, applied_lean = _faults("lean")
    pages = 64 * 2**20 / 4096
    assert default > 0.5 * pages        # control: glibc unmaps the block, each round faults anew
    assert keep < 0.05 * pages          # kept: the heap's pages are reused
    assert lean > 0.5 * pages           # lean: returned to the OS on every free
    assert applied_default == "{}" and "'keep'" in applied_keep and "'lean'" in applied_lean


@needs_glibc
def test_lean_returns_freed_memory_that_keep_holds():
    probe = """
import sys, torch
from scalegmn import allocator
allocator.apply(sys.argv[1])
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss()
xs = [torch.ones(2**18) for _ in range(256)]     # 256 x 1 MiB, below glibc's mmap threshold
del xs
print(rss() - base)
"""
    held = {m: float(subprocess.run([sys.executable, "-c", probe, m], capture_output=True,
                                    text=True, check=True).stdout) for m in ("keep", "lean")}
    assert held["keep"] > 200 and held["lean"] < 50


def test_bad_choice_is_named():
    with pytest.raises(ValueError, match="'fast'"):
        allocator.apply("fast")
    with pytest.raises(ValueError, match="malloc"):
        TrainConfig(malloc="fast")
    assert TrainConfig().malloc == "auto"


def test_default_choice_changes_nothing():
    assert allocator.apply("default") is False


def test_training_picks_the_policy_of_its_mode():
    from scalegmn.train.config import load_config
    from scalegmn.train.loop import malloc_policy
    assert malloc_policy(load_config("mnist_inr_scalegmn")) == "keep"
    assert malloc_policy(load_config("mnist_inr_scalegmn", ["model.checkpoint=true"])) == "lean"
    assert malloc_policy(load_config("mnist_inr_scalegmn", ["train.malloc=default"])) == "default"
