"""The layout shows the architecture: library code never depends on a command-line module."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_MODULES = {"scalegmn.cli", "scalegmn.data.cli", "scalegmn.bench.cli"}


def _imports(path: Path, package: str) -> set:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _module(path: Path, root: Path) -> tuple:
    """(module name, package it resolves relative imports in)."""
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return name.removesuffix(".__init__"), package.removesuffix(".__init__")


def library_modules_importing_a_cli(root: Path = ROOT) -> list:
    bad = []
    for top in ("converters", "scalegmn"):
        for path in sorted((root / top).rglob("*.py")):
            name, package = _module(path, root)
            if name in CLI_MODULES or name.endswith("__main__"):
                continue
            hit = _imports(path, package) & CLI_MODULES
            if path.name == "__init__.py":   # a package may re-export its own command
                hit = {c for c in hit if c.rpartition(".")[0] != name}
            if hit:
                bad.append(f"{name} imports {sorted(hit)}")
    return bad


def test_library_code_never_imports_a_cli_module():
    assert library_modules_importing_a_cli() == []


def test_the_check_sees_a_library_module_importing_the_cli(tmp_path):
    """Negative control: a planted library module that imports the CLI is reported."""
    pkg = tmp_path / "scalegmn" / "train"
    pkg.mkdir(parents=True)
    (tmp_path / "converters").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "loop.py").write_text("from ..cli import parse_arch\n")
    assert library_modules_importing_a_cli(tmp_path) == [
        "scalegmn.train.loop imports ['scalegmn.cli']"]
