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
    for expected in ("README.md", "docs/design.md", "docs/methods.md", "scalegmn/gmn/model.py",
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
            "metadata" + ".md, my_data" + ".md and docs/design.md are names, not the notes\n")
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


# -- docs/parameter_counts.md: generated, and its explanations add up ----------------------------
@pytest.fixture(scope="module")
def counts_page():
    from scalegmn import paper_configs
    return paper_configs.markdown()


def _count_rows(page):
    rows = []
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1] in ("scalegmn", "scalegmn-b", "gmn", "monomial-nfn",
                                            "magep-nfn", "np", "hnp", "statnn", "mlp"):
            rows.append(dict(zip(("config", "backend", "task", "trainable", "frozen", "buffers",
                                  "paper", "source"), cells)))
    return rows


def _differences(source):
    """The first signed number of every parenthesised group of a source string."""
    out = []
    for group in re.findall(r"\(([^()]*)\)", source):
        m = re.search(r"(?<![\w,])[+-]\d[\d,]*", group)
        if m:
            out.append(int(m.group(0).replace(",", "")))
    return out


def test_parameter_counts_page_is_regenerated(counts_page):
    """docs/parameter_counts.md is what `python -m scalegmn.paper_configs --markdown` writes now."""
    assert (ROOT / "docs" / "parameter_counts.md").read_text() == counts_page, (
        "stale: run python -m scalegmn.paper_configs --markdown docs/parameter_counts.md")


def test_scalegmn_count_differences_add_up(counts_page):
    """Every ScaleGMN row: ours minus the listed differences is the published count (exact), or
    the stated prediction, which matches the rounded published count unless the row says what is
    not broken down."""
    checked = 0
    for r in _count_rows(counts_page):
        if r["backend"] not in ("scalegmn", "scalegmn-b") or not r["paper"]:
            continue
        ours = int(r["trainable"].replace(",", ""))
        rest = ours - sum(_differences(r["source"]))
        predicted = re.search(r"predicted(?: from ours)?:? ([\d,]+)", r["source"])
        if predicted:
            assert rest == int(predicted.group(1).replace(",", "")), r["config"]
            if "not broken down" not in r["source"]:
                published = float(r["paper"].strip("~ M")) * 1e6
                assert abs(rest - published) <= 0.005e6, (r["config"], rest, r["paper"])
        else:
            assert rest == int(r["paper"].replace(",", "")), (r["config"], rest, r["paper"])
        checked += 1
    assert checked >= 14


def test_control_differences_parser():
    assert _differences("Ours +5: a (+3, 1 per layer), b (-2), c (no number), d (x: +4)") == [3, -2, 4]


def test_mnist_cls_module_table_matches_the_model(counts_page):
    """The per-module table of mnist_cls_scalegmn reads the model's own modules; its published
    column adds up to the published count."""
    from scalegmn import paper_configs
    from scalegmn.registry import build
    cfg, arch = paper_configs.load("mnist_cls_scalegmn")
    net = build(cfg.backend, cfg.task, spec=arch, config=cfg)
    n = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())
    first = net.layers[0]
    ours = {
        "bias and weight embeddings": n(net.embedding.embed_x, net.embedding.embed_e),
        "positional embeddings and data scales": sum(
            getattr(net.embedding, k).numel() for k in ("pe_in", "pe_out", "pe_layer", "pe_edge",
                                              "x_scale", "e_scale", "eb_scale")),
        "per iteration (x4): `A_v`, `A_e`": n(first.A_v, first.A_e),
        "per iteration (x4): message `ScaleEq`": n(first.msg["sign"]),
        "per iteration (x4): message MLP": n(first.msg["fixed"]),
        "per iteration (x4): update `ScaleEq`": n(first.upd["sign"]),
        "per iteration (x4): update MLP": n(first.upd["fixed"]),
        "per iteration (x4): skip connection": n(first.skip),
        "per iteration but the last (x3): edge update": n(first.edge),
        "readout MLP": n(net.readout.head),
        "total": n(net),
    }
    assert len(net.layers) == 4 and net.layers[-1].edge is None
    table = {}
    for line in counts_page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1][:1].isdigit():
            table[cells[0]] = [int(c.replace(",", "").replace("+", "")) for c in cells[1:]]
    pub_total, our_total = 0, 0
    for label, value in ours.items():
        row = [v for k, v in table.items() if k.startswith(label)]
        assert len(row) == 1, label
        mine, published, diff = row[0]
        assert mine == value and diff == mine - published, (label, row[0], value)
        if label != "total":
            mult = 4 if "(x4)" in label else 3 if "(x3)" in label else 1
            pub_total, our_total = pub_total + mult * published, our_total + mult * mine
    assert our_total == ours["total"]
    assert pub_total == table["total"][1] == 1772042
