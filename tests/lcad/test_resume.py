"""A killed lcad diffusion run resumed with ``--ckpt_path last`` ends exactly where an
uninterrupted one ends, its noise, timesteps and any-level caption draws included (the shared
check: :func:`tests.training.check_exact_resume`)."""

from __future__ import annotations

import sys

import pytest

from lcad.cli import CONFIGS
from tests.training import check_exact_resume

TINY_DIFFUSION = str(CONFIGS / "tiny-diffusion.yaml")


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lcad.cli", "--stage", "diffusion", *args]


def test_exact_resume_after_kills_at_random_moments(tmp_path):
    check_exact_resume(_cli_command, TINY_DIFFUSION, tmp_path, kills=3)


@pytest.mark.slow
def test_exact_resume_after_kills_under_ddp(tmp_path):
    check_exact_resume(_cli_command, TINY_DIFFUSION, tmp_path, kills=3, ddp=True)
