"""A killed lcoins run resumed with ``--ckpt_path last`` ends exactly where an uninterrupted one
ends, the augmentation and colour-swap draws included (the shared check:
:func:`tests.training.check_exact_resume`)."""

from __future__ import annotations

import sys

import pytest

from tests.lcoins.components import TINY_CONFIG
from tests.training import check_exact_resume


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lcoins.cli", *args]


def test_exact_resume_after_kills_at_random_moments(tmp_path):
    # one kill of each moment (random steps, logged with the seed), workers 0 and 2
    check_exact_resume(_cli_command, TINY_CONFIG, tmp_path, kills=3)


@pytest.mark.slow
def test_exact_resume_after_kills_under_ddp(tmp_path):
    check_exact_resume(_cli_command, TINY_CONFIG, tmp_path, kills=3, ddp=True)
