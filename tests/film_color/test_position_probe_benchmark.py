"""``benchmarks/film_position_probe.py``: the left/right/top/bottom labels and the probe rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from film_color.module import FilmColorModule
from tests.training import benchmark_module

WEIGHTS = Path(__file__).resolve().parents[2] / "benchmarks" / "weights" / "capshapes-film96.ckpt"


@pytest.fixture(scope="module")
def probe():
    with benchmark_module("film_position_probe") as module:
        yield module


def _square(masks, b, k, x, y):
    masks[b, k, y : y + 2, x : x + 2] = 1.0


def test_pair_labels_follow_the_axis_that_separates_the_pair_more(probe):
    masks = torch.zeros(2, 3, 20, 20)
    _square(masks, 0, 0, 14, 5)  # right of object 1 (far along x, a little along y)
    _square(masks, 0, 1, 2, 7)
    _square(masks, 0, 2, 8, 16)  # its shape is its own: not a pair member
    _square(masks, 1, 0, 5, 2)  # above object 2 (far along y)
    _square(masks, 1, 2, 6, 15)
    shapes = torch.tensor([[3, 3, 1], [4, -1, 4]])
    index, centroid, label = probe.pair_labels(masks, shapes)
    assert torch.equal(index[:, 2], label)
    found = {(b, k): probe.LABELS[lab] for b, k, lab in index.tolist()}
    assert found == {(0, 0): "right", (0, 1): "left", (1, 0): "top", (1, 2): "bottom"}
    assert torch.allclose(centroid[0], torch.tensor([14.5, 5.5]) / 19)
    # a shape three objects share is not a pair: nothing to label
    index, _, _ = probe.pair_labels(masks[:1], torch.tensor([[3, 3, 3]]))
    assert len(index) == 0


def test_probe_row_on_the_published_model(probe):
    module = FilmColorModule.load_from_checkpoint(WEIGHTS, map_location="cpu").eval()
    row = probe.relative_position_probe(module, size=96, scenes=100)
    assert row["objects"] > 100  # two thirds or more of the objects are pair members
    assert list(row)[2:] == [f"block {b} (%)" for b in range(1, 9)]
    assert all(0 <= v <= 100 for k, v in row.items() if k != "objects")
