"""Smoke test of ``benchmarks/film_speed.py`` on tiny scenes: rows and numerics, no timing
asserted (speed is measured by the benchmark, never asserted in tests)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.training import benchmark_module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("film_speed") as module:
        yield module


def test_every_variant_is_measured_against_fp32(bench):
    rows = bench.measure(size=32, batch=2, repeats=1)
    assert [r["variant"] for r in rows] == [v.name for v in bench.VARIANTS]
    reference = rows[0]
    assert reference["variant"] == "fp32" and reference["train speed-up"] == 1.0
    assert reference["loss rel. change"] == 0.0 and reference["mean abs ab change"] == 0.0
    for row in rows:
        assert row["size"] == 32
        assert row["train steps/s"] > 0 and row["inference ms/scene"] > 0
        assert math.isfinite(row["train speed-up"])
    by_name = {r["variant"]: r for r in rows}
    # channels_last changes the layout only: float rounding; bf16 changes the numerics a little
    assert by_name["fp32 channels_last"]["loss rel. change"] < 1e-5
    assert by_name["fp32 channels_last"]["mean abs ab change"] < 1e-3
    assert 0 < by_name["bf16 autocast"]["loss rel. change"] < 0.05
    with pytest.raises(ValueError, match="repeats"):
        bench.measure(size=32, batch=2, repeats=0)


def test_variants_share_weights_and_batch(bench):
    data = bench.scene_batch(32, 2)
    first, second = (bench.VariantRun(v, data) for v in bench.VARIANTS[:2])
    for (name, a), (_, b) in zip(
        first.module.named_parameters(), second.module.named_parameters(), strict=True
    ):
        assert a.shape == b.shape and torch.equal(a, b), name
    assert len(data[2]) == 2 and data[0].shape == (2, 1, 32, 32)
