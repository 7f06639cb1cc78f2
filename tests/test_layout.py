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


# -- no import cycle ---------------------------------------------------------------------------
def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported: everything outside function
    bodies (class bodies, ``if``/``try`` blocks included; ``if TYPE_CHECKING:`` blocks not)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = ROOT) -> dict:
    """{module: the modules of converters/ and scalegmn/ it imports at module level}, built from
    the source with ast. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
    module, else to ``pkg``; a package's ``__init__`` is an edge only where it is named."""
    paths = {}
    for top in ("converters", "scalegmn"):
        for path in sorted((root / top).rglob("*.py")):
            paths[_module(path, root)] = path
    known = {name for name, _ in paths}
    graph = {}
    for (name, package), path in paths.items():
        targets = set()
        for node in _module_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                        for a in node.names}
        graph[name] = sorted(t for t in targets if t in known and t != name)
    return graph


def import_cycles(graph: dict) -> list:
    """Each cycle found by a depth-first search, as ``[a, b, ..., a]``."""
    cycles, state = [], {}           # state: 1 on the current path, 2 finished

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert {"scalegmn.data.base", "scalegmn.data.datasets", "scalegmn.data.zoo",
            "converters.graph"} <= set(graph)
    assert "scalegmn.data.base" in graph["scalegmn.data.zoo"]          # the edges are seen
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_planted_cycle(tmp_path):
    """Negative control: a -> b -> c -> a at module level (relative and absolute imports) is
    reported; the same imports inside functions are not."""
    pkg = tmp_path / "scalegmn" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "converters").mkdir()
    for d in (tmp_path / "scalegmn", pkg, tmp_path / "converters"):
        (d / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("try:\n    from scalegmn.data import c\nexcept ImportError:\n"
                              "    c = None\n")
    (pkg / "c.py").write_text("import converters\nfrom . import a\n")
    assert import_cycles(import_graph(tmp_path)) == [
        ["scalegmn.data.a", "scalegmn.data.b", "scalegmn.data.c", "scalegmn.data.a"]]
    (pkg / "c.py").write_text("def later():\n    from . import a\n")
    assert import_cycles(import_graph(tmp_path)) == []


MAX_LINES = 600


def long_modules(root: Path = ROOT, limit: int = MAX_LINES) -> list:
    """Library modules longer than ``limit`` lines."""
    return [f"{p.relative_to(root)}: {n} lines" for top in ("converters", "scalegmn")
            for p in sorted((root / top).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]


def test_no_library_module_is_over_600_lines(tmp_path):
    assert long_modules() == []
    (tmp_path / "scalegmn").mkdir()                      # control: a planted long module
    (tmp_path / "scalegmn" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_modules(tmp_path) == [f"scalegmn/big.py: {MAX_LINES + 1} lines"]


def test_every_op_kind_is_described_by_its_rule():
    # the ArchSpec doc points to ``ops.describe()`` instead of a table that fell behind
    from converters import ops
    text = ops.describe().splitlines()
    assert [line.split()[0] for line in text] == list(ops.RULES)
    missing = [kind for kind, rule in ops.RULES.items() if not (rule.doc or "").strip()]
    assert not missing, f"op rules without a doc: {missing}"
