import sys

import pytest


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """LightningCLI(args=...) warns when pytest's own argv is present; give it a clean one."""
    monkeypatch.setattr(sys, "argv", ["lcad"])
