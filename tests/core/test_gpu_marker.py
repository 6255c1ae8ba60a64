"""The ``gpu`` marker skips its tests without CUDA and only then (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["pytester"]

MARKED = """
import pytest

@pytest.mark.gpu
def test_on_gpu():
    pass

def test_anywhere():
    pass
"""


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_marker_skips_exactly_without_cuda(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cuda: bool
) -> None:
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems  # noqa: F401")
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    pytester.makepyfile(test_marked=MARKED)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    result = pytester.inline_run("-rs", "--strict-markers")
    passed, skipped, failed = result.listoutcomes()
    assert not failed
    if cuda:
        assert len(passed) == 2 and not skipped
    else:
        assert [r.nodeid.split("::")[-1] for r in passed] == ["test_anywhere"]
        [report] = skipped
        assert report.nodeid.endswith("::test_on_gpu") and "needs CUDA" in report.longrepr[2]
