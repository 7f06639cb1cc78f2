"""How the C allocator treats the large, short-lived tensors of a training step.

A ScaleGMN step at the MNIST-INR workload creates and frees hundreds of per-edge tensors of
tens of MB each (batch 128 x 1,120 edges x 128 channels x 4 bytes = 73 MB). PyTorch's CPU
tensors come from the C allocator; glibc's ``malloc`` serves blocks above its mmap threshold
(adaptive, at most 32 MiB) with a fresh ``mmap`` and unmaps them on ``free``, and trims the top
of its heap. Every such tensor is then faulted in again, 4 KiB page by page, on its first write:
measured here, that doubles the step time (``docs/performance.md``).

``keep_freed_memory()`` tells glibc to serve every block from its heap and never hand freed
memory back to the OS (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, max)``). The
process then reuses its pages step after step; its peak RSS stays that of one step (measured
equal within 2 %), but it does not shrink after the peak. It changes no result.

It is process-wide and cannot be undone cleanly, so the library never calls it on import:
``scalegmn train`` applies it (``train.malloc: keep``, the default; ``default`` leaves malloc
alone) and so does ``scalegmn bench`` unless asked not to. Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1     # <malloc.h>
M_MMAP_MAX = -4
CHOICES = ("keep", "default")
_applied: dict = {}


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt          # glibc (and a few others) only
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def glibc_version() -> str | None:
    """The running glibc's version, or ``None`` when the C library is not glibc."""
    libc = _libc()
    return None if libc is None else libc.gnu_get_libc_version().decode()


def keep_freed_memory() -> bool:
    """Serve all blocks from the heap and keep freed memory in the process (see the module
    doc). Returns whether the settings took effect (``False`` without glibc)."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    if ok:
        _applied.update(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 ** 31 - 1)
    return ok


def apply(choice: str) -> bool:
    """``"keep"``: ``keep_freed_memory()``; ``"default"``: nothing. Returns whether malloc was
    changed. Raises ``ValueError`` naming the bad choice."""
    if choice not in CHOICES:
        raise ValueError(f"malloc must be one of {CHOICES}, got {choice!r}")
    return keep_freed_memory() if choice == "keep" else False


def applied() -> dict:
    """The ``mallopt`` settings this process has applied through this module (empty if none)."""
    return dict(_applied)
