"""Names a package exports but imports on first use (so that ``scalegmn --help`` never loads
torch): ``__getattr__, __dir__ = lazy_exports(__name__, {"name": ".module", ...}, globals())``."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, table: dict, namespace: dict) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``table`` maps each lazy
    name to the (relative) module defining it; a name is imported once, then kept in
    ``namespace`` (the package's globals)."""

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
