"""Smoke test of ``benchmarks/lcad_speed.py`` on the tiny configs: a row per stage, each
measured; no timing asserted."""

from __future__ import annotations

import pytest

from tests.lcad.components import SD_LIKE_UNET
from tests.training import benchmark_module


def test_each_stage_of_the_tiny_config_is_measured():
    with benchmark_module("lcad_speed") as bench:
        rows = bench.measure("tiny", repeats=1)
        assert bench.repeats_per_model(["tiny=2", "capshapes=1"], ["tiny", "capshapes"]) == {
            "tiny": 2,
            "capshapes": 1,
        }
        with pytest.raises(SystemExit):
            bench.repeats_per_model(["tiny=2"], ["tiny", "capshapes"])
    assert [r["model"] for r in rows] == [
        "tiny-autoencoder",
        "tiny-compression",
        "tiny-diffusion",
    ]
    for row in rows:
        assert row["train steps/s"] > 0 and row["trained parameters (M)"] > 0
    assert rows[2]["sampling s/image"] > 0 and rows[2]["sampling steps"] == 2


def test_the_sd_sized_rows_compare_bf16_with_fp32(monkeypatch):
    with benchmark_module("lcad_speed") as bench:
        monkeypatch.setattr(bench, "SD_UNET", SD_LIKE_UNET)
        rows = bench.measure("sd-unet-256", repeats=1)
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert rows[0]["speed-up vs fp32"] == 1.0
    for row in rows:  # the paper's trainable set: the extension weights only
        assert 0 < row["trained parameters (M)"] < row["all parameters (M)"]
        assert row["train steps/s"] > 0 and row["sampling s/image"] > 0
