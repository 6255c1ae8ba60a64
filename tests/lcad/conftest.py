import sys
from pathlib import Path

import pytest

from tests.lcad.components import fit_stages


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """LightningCLI(args=...) warns when pytest's own argv is present; give it a clean one."""
    monkeypatch.setattr(sys, "argv", ["lcad"])


@pytest.fixture(scope="session")
def stages(tmp_path_factory) -> dict[str, Path]:
    """The three stages chained on their tiny configs (:func:`fit_stages`), once a session:
    the checkpoints by stage."""
    argv, sys.argv = sys.argv, ["lcad"]  # session fixtures run before _clean_argv
    try:
        return fit_stages(tmp_path_factory.mktemp("lcad"))
    finally:
        sys.argv = argv
