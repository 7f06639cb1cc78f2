"""The distribution: every subpackage and shipped config is in the wheel, nothing installed reads
files of the repository, and the version is written in one place."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import scalegmn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a clean copy of the tracked and new files (no stale build/)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(out), str(src)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as z:
        return set(z.namelist())


def test_wheel_holds_every_subpackage_and_config(wheel):
    packages = [p.parent.relative_to(ROOT).as_posix() for top in ("converters", "scalegmn")
                for p in (ROOT / top).rglob("__init__.py")]
    assert len(packages) >= 6
    missing = [p for p in packages if f"{p}/__init__.py" not in wheel]
    assert not missing, f"subpackages left out of the wheel: {missing}"
    configs = [p.relative_to(ROOT).as_posix()
               for p in (ROOT / "scalegmn" / "configs").rglob("*.yaml")]
    assert configs and not [c for c in configs if c not in wheel]


def test_installed_code_reads_no_repository_file():
    """No module reads files that only a checkout has (examples/, tests/)."""
    bad = []
    for top in ("converters", "scalegmn"):
        for path in (ROOT / top).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"""["'](examples|tests)["'/]""", line):
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M), "pyproject must not repeat it"
    assert 'attr = "scalegmn.__version__"' in pyproject
    cff = re.search(r"^version: (\S+)", (ROOT / "CITATION.cff").read_text(), re.M).group(1)
    assert cff == scalegmn.__version__, "CITATION.cff and scalegmn.__version__ disagree"
