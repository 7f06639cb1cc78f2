"""How the C allocator treats the large, short-lived tensors of a training step.

A ScaleGMN step at the MNIST-INR workload creates and frees hundreds of per-edge tensors of
tens of MB each (batch 128 x 1,120 edges x 128 channels x 4 bytes = 73 MB). PyTorch's CPU
tensors come from the C allocator; glibc's ``malloc`` serves blocks above its mmap threshold
(adaptive, at most 32 MiB) with a fresh ``mmap`` and unmaps them on ``free``, and trims the top
of its heap. Every such tensor is then faulted in again, 4 KiB page by page, on its first write:
measured here, that doubles the step time (``docs/performance.md``).

Two policies, chosen per process with ``apply``:

- ``keep`` (``keep_freed_memory()``): serve every block from the heap and never hand freed memory
  back to the OS (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, max)``). The process
  reuses its pages step after step: about 2x faster steps. Its RSS grows over the first steps
  (freed blocks pinned by small objects between them; measured +13-16 % over the first-step
  peak, then flat) and does not shrink after the peak.
- ``lean`` (``return_freed_memory()``): every block of 64 KiB or more is mapped on allocation and
  unmapped on free (``mallopt(M_MMAP_THRESHOLD, 64 KiB)``, which also stops glibc from raising
  the threshold): RSS follows the live tensors closely (no fragmentation), at the cost of page
  faults on every large tensor. The memory-lean mode (``ExecutionConfig.checkpoint``) uses it.

Neither changes a result. They are process-wide, so the library never applies one on import:
``scalegmn train`` does (``train.malloc: auto``: ``lean`` with ``model.checkpoint``, else
``keep``; ``default`` leaves malloc alone), and so does ``scalegmn bench``. Elsewhere than glibc
they do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1     # <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
CHOICES = ("keep", "lean", "default")
SETTINGS = ("auto",) + CHOICES   # what a config may say: auto picks by mode (``resolve``)
_GLIBC_MMAP_MAX = 65536     # glibc's defaults
_GLIBC_TRIM = 128 * 1024
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


def _mallopt(policy: str, **settings) -> bool:
    libc = _libc()
    if libc is None:
        return False
    names = {"M_MMAP_MAX": M_MMAP_MAX, "M_MMAP_THRESHOLD": M_MMAP_THRESHOLD,
             "M_TRIM_THRESHOLD": M_TRIM_THRESHOLD}
    ok = all(bool(libc.mallopt(names[k], v)) for k, v in settings.items())
    if ok:
        _applied.clear()
        _applied.update(policy=policy, **settings)
    return ok


def keep_freed_memory() -> bool:
    """Policy ``keep``: serve all blocks from the heap and keep freed memory in the process (see
    the module doc). Returns whether the settings took effect (``False`` without glibc)."""
    return _mallopt("keep", M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 ** 31 - 1)


def return_freed_memory(threshold: int = 64 * 1024) -> bool:
    """Policy ``lean``: map blocks of ``threshold`` bytes or more on their own and unmap them on
    free (see the module doc). Returns whether the settings took effect."""
    return _mallopt("lean", M_MMAP_MAX=_GLIBC_MMAP_MAX, M_MMAP_THRESHOLD=threshold,
                    M_TRIM_THRESHOLD=_GLIBC_TRIM)


def apply(choice: str) -> bool:
    """``"keep"``: ``keep_freed_memory()``; ``"lean"``: ``return_freed_memory()``;
    ``"default"``: nothing. Returns whether malloc was changed. Raises ``ValueError`` naming a
    bad choice."""
    if choice not in CHOICES:
        raise ValueError(f"malloc must be one of {CHOICES}, got {choice!r}")
    return {"keep": keep_freed_memory, "lean": return_freed_memory,
            "default": lambda: False}[choice]()


def resolve(setting: str, memory_lean: bool) -> str:
    """The policy a setting means: ``auto`` is ``lean`` for the memory-lean mode
    (``ExecutionConfig.checkpoint``) and ``keep`` otherwise; the others mean themselves."""
    if setting not in SETTINGS:
        raise ValueError(f"malloc must be one of {SETTINGS}, got {setting!r}")
    if setting != "auto":
        return setting
    return "lean" if memory_lean else "keep"


def policy() -> str:
    """The policy this process applied through this module: ``keep``, ``lean`` or ``default``."""
    return _applied.get("policy", "default")


def applied() -> dict:
    """The ``mallopt`` settings this process has applied through this module (empty if none)."""
    return dict(_applied)
