"""The documentation stands on its own: no tracked file points outside the repository, and every
relative Markdown link and every ``docs/<name>.md`` mention resolves to a file in the tree."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cff", ".txt"}

# Notes that live outside the repository (a user of the repository does not have them). The
# patterns are assembled from pieces so that this file does not match itself.
_MD = r"\.md"
_EXTERNAL = re.compile("|".join([
    r"(?<![\w.-])" + "sha" + "red/",                     # the shared notes folder
    r"(?<![\w-])" + "DESIGN" + _MD,                     # the design notes
    r"(?<![\w-])" + "research" + "/",                   # research notes
    r"(?<![\w-])(?:" + "|".join(["scalegmn", "nfn", "converters", "data"]) + ")" + _MD,
    r"(?<![\w-])" + "seeds" + "/",                      # paper seed descriptions
]))
_PARENTS = re.compile(r"(?<![\w.])((?:\.\./)+)")        # a run of ../ segments


def tracked_text_files() -> list:
    """Repository-relative paths of the tracked text files the checks read."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):     # not a git checkout: walk the tree
        out = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
               and ".git" not in p.parts]
    files = []
    for rel in filter(None, out):
        path = ROOT / rel
        if path.suffix in TEXT_SUFFIXES and path.is_file():
            files.append(rel)
    return sorted(files)


def external_references(text: str, relpath: str) -> list:
    """``[(line number, line)]`` of the lines of ``text`` (the content of the repository file
    ``relpath``) that point outside the repository: to the shared notes, or through more ``../``
    segments than the file is deep."""
    depth = len(Path(relpath).parent.parts)
    bad = []
    for no, line in enumerate(text.splitlines(), start=1):
        if _EXTERNAL.search(line):
            bad.append((no, line.strip()))
            continue
        if any(m.group(1).count("../") > depth for m in _PARENTS.finditer(line)):
            bad.append((no, line.strip()))
    return bad


def _strip_code(markdown: str) -> str:
    """Markdown without fenced code blocks and inline code spans (which hold no links)."""
    markdown = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), markdown,
                      flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_DOCS_MENTION = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)\b")


def broken_links(text: str, relpath: str, exists=lambda p: p.exists()) -> list:
    """``[(line number, target)]`` of relative Markdown links in ``text`` (the Markdown file
    ``relpath``) whose target is not a file or folder of the repository."""
    base = (ROOT / relpath).parent
    stripped = _strip_code(text)
    bad = []
    for m in _LINK.finditer(stripped):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue                                    # a URL, mailto:, or an anchor
        path = (base / target.split("#", 1)[0]).resolve()
        if ROOT not in path.parents and path != ROOT or not exists(path):
            line = stripped.count("\n", 0, m.start()) + 1
            bad.append((line, target))
    return bad


def missing_docs_mentions(text: str, exists=lambda p: p.exists()) -> list:
    """``[(line number, mention)]`` of ``docs/<name>.md`` mentions whose file does not exist."""
    bad = []
    for no, line in enumerate(text.splitlines(), start=1):
        for m in _DOCS_MENTION.finditer(line):
            if not exists(ROOT / m.group(1)):
                bad.append((no, m.group(1)))
    return bad


# file names for the controls, assembled so that this file mentions no missing page itself
_PAGE, _MISSING = "docs/" + "page.md", "docs/" + "no_such_page.md"


def _read(rel):
    return (ROOT / rel).read_text(encoding="utf-8", errors="replace")


def test_the_file_list_covers_code_docs_and_configs():
    files = tracked_text_files()
    for expected in ("README.md", "docs/design.md", "docs/methods.md", "scalegmn/model.py",
                     "tests/test_docs.py", "pyproject.toml"):
        assert expected in files
    assert any(f.startswith("scalegmn/configs/") and f.endswith(".yaml") for f in files)


def test_no_reference_leaves_the_repository():
    bad = [f"{rel}:{no}: {line}" for rel in tracked_text_files()
           for no, line in external_references(_read(rel), rel)]
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)


@pytest.mark.parametrize("line", [
    "see `../" + "sha" + "red/" + "DESIGN" + ".md` for the architecture",
    "# Paper experiment (" + "research" + "/scalegmn" + ".md section 7)",
    "source: published config, " + "nfn" + ".md 3.7",
    "the per-layer conventions of " + "converters" + ".md",
    "formats in " + "data" + ".md 2.5",
    "the paper summaries in " + "seeds" + "/",
    "[notes](" + "../" * 2 + "elsewhere/notes.md)",
])
def test_control_the_checker_flags_a_planted_line(line):
    text = f"first line\n{line}\nlast line\n"
    assert external_references(text, _PAGE) == [(2, line.strip())]


def test_control_the_checker_passes_clean_lines():
    text = ("links inside the tree: [methods](methods.md), [readme](../README.md)\n"
            "metadata.md, my_data.md and docs/design.md are names, not the notes\n")
    assert external_references(text, _PAGE) == []
    assert external_references("[up](../README.md)", "README.md") == [(1, "[up](../README.md)")]


def test_markdown_links_resolve():
    bad = [f"{rel}:{no}: {target}" for rel in tracked_text_files() if rel.endswith(".md")
           for no, target in broken_links(_read(rel), rel)]
    assert not bad, "broken relative links:\n" + "\n".join(bad)


def test_docs_mentions_resolve():
    bad = [f"{rel}:{no}: {m}" for rel in tracked_text_files()
           for no, m in missing_docs_mentions(_read(rel))]
    assert not bad, "mentions of missing docs pages:\n" + "\n".join(bad)


def test_control_link_checkers_flag_missing_targets():
    text = ("[ok](design.md) [gone](no_such_page.md) ![img](benchmarks/sweep_depth.png)\n"
            "```\n[in code](also_missing.md)\n```\n[web](https://example.org/x.md) [a](#top)\n")
    assert broken_links(text, _PAGE) == [(1, "no_such_page.md")]
    assert missing_docs_mentions(f"read docs/design.md and {_MISSING}") == [(1, _MISSING)]
