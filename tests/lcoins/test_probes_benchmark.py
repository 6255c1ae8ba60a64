"""Smoke test of ``benchmarks/lcoins_probes.py`` with the tiny config, and its code changes:
the former Eq. 12 merge and ViLT's initial scale, applied for one probe and then undone."""

from __future__ import annotations

import csv

import torch

from lcoins import grouping
from tests.lcoins.components import TINY_CONFIG, tiny_network
from tests.training import benchmark_module


def _empty_group_gradient(layer: grouping.GroupingLayer) -> float:
    """The largest gradient reaching a group token that no image token chose (8 groups, 4
    image tokens: at least 4 groups are empty)."""
    torch.manual_seed(0)
    images = torch.randn(1, 4, 16)
    groups = torch.randn(1, 8, 16, requires_grad=True)
    merged, assignment = layer(images, groups)
    empty = assignment[0].sum(-1) == 0
    assert empty.sum() >= 4
    merged.sum().backward()
    return float(groups.grad[0, empty].abs().max())


def test_the_code_changes_apply_for_one_probe_only():
    with benchmark_module("lcoins_probes") as bench:
        layer = grouping.GroupingLayer(16)
        fixed = _empty_group_gradient(layer)
        with bench.code_change("eps-merge+modal-0.02"):
            former = _empty_group_gradient(layer)
            assert tiny_network().modal_type.weight.std() < 0.05
        assert former > 1e3 * fixed  # the 1/eps gradient of the former merge
        assert _empty_group_gradient(layer) == fixed
        assert tiny_network().modal_type.weight.std() > 0.5  # PyTorch's N(0, 1) again


def test_a_probe_trains_scores_and_appends_its_row(tmp_path, monkeypatch):
    with benchmark_module("lcoins_probes") as bench:
        monkeypatch.setattr(bench, "CAPSHAPES", TINY_CONFIG)
        monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
        monkeypatch.setattr(bench, "RESULTS", tmp_path / "probes.csv")
        args = ["--probes", "wo-ge", "--steps", "2", "--size", "32", "--scenes", "4",
                "--batch-size", "4"]  # fmt: skip
        bench.main(args)
        bench.main(args)  # already there: not run again
    rows = list(csv.DictReader((tmp_path / "probes.csv").open()))
    assert len(rows) == 1 and rows[0]["probe"] == "wo-ge" and rows[0]["steps"] == "2"
    assert rows[0]["patch"] == "4" and float(rows[0]["train_cpu_s"]) > 0
    assert 0 <= float(rows[0]["manipulation_accuracy"]) <= 1
