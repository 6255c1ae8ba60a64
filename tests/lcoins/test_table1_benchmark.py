"""Smoke test of ``benchmarks/lcoins_table1.py`` with the tiny config: every row is trained
through the real CLI with its ablation switch, evaluated, and written beside the paper's
numbers (results redirected to the test's folder)."""

from __future__ import annotations

import pytest
import torch

from lcoins.module import LCoInsModule
from tests.lcoins.components import TINY_CONFIG
from tests.training import benchmark_module


def test_rows_are_the_ablations_with_the_papers_numbers(tmp_path, monkeypatch):
    written = {}
    with benchmark_module("lcoins_table1") as bench:
        monkeypatch.setattr(bench, "CAPSHAPES", TINY_CONFIG)
        monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
        monkeypatch.setattr(
            bench,
            "write_results",
            lambda name, rows, md: written.update(rows=rows, md=md) or ("", ""),
        )
        bench.main(
            ["--steps", "2", "--scenes", "4", "--rows", "W/o GE", "W/o CL", "--unseen-steps", "2"]
        )
    rows = {r["model"]: r for r in written["rows"]}
    assert list(rows) == ["W/o GE", "W/o CL", "no colour (ab = 0)"]
    grey = rows.pop("no colour (ab = 0)")
    assert 5 < grey["PSNR"] < 60 and 0 <= grey["caption consistency"] <= 1
    assert grey["train steps"] == "" and grey["paper PSNR"] == ""
    for label, row in rows.items():
        assert row["train steps"] == 2 and row["paper PSNR"] == bench.PAPER[label][0]
        assert 0 < row["PSNR"] < 60 and row["LPIPS"] == "no weights"
    assert rows["W/o CL"]["shared-noun consistency"] == ""
    assert isinstance(rows["W/o GE"]["shared-noun manipulation"], float)
    # each run is the ablation it names
    runs = tmp_path / "runs"
    wo_ge = LCoInsModule.load_from_checkpoint(runs / "wo-ge" / "checkpoints" / "last.ckpt")
    assert not wo_ge.network_config.group_tokens and wo_ge.hparams.beta != 0
    wo_cl = LCoInsModule.load_from_checkpoint(runs / "wo-cl" / "checkpoints" / "last.ckpt")
    assert wo_cl.hparams.beta == 0 and wo_cl.augmentation is not None
    assert "Table 1" in written["md"] and "Unseen colour-shape pairs" in written["md"]
    held = LCoInsModule.load_from_checkpoint(
        tmp_path / "runs" / "held-out-pairs" / "checkpoints" / "last.ckpt"
    )
    assert held.network_config.group_tokens  # the full model, on scenes without the held-out pairs
    blob = torch.load(
        tmp_path / "runs" / "held-out-pairs" / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert (
        blob["datamodule_hyper_parameters"]["capshapes_options"]["held_out_pairs"] == bench.HELD_OUT
    )
    with pytest.raises(SystemExit):
        bench.main(["--rows", "W/o XX"])


def test_rows_at_a_main_runs_scale(tmp_path, monkeypatch):
    """``--recipe``, ``--schedule-steps``, ``--full-checkpoint`` and ``--unseen-checkpoint``: the
    ablation trains the recipe's first steps on the longer run's schedule, the L-CoIns row and
    the unseen pairs score the given checkpoints, and nothing else is trained."""
    written = {}
    with benchmark_module("lcoins_table1") as bench:
        monkeypatch.setattr(bench, "CAPSHAPES", TINY_CONFIG)
        monkeypatch.setattr(
            bench,
            "write_results",
            lambda name, rows, md: written.update(rows=rows, md=md) or ("", ""),
        )
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text("model:\n  lr_schedule: cosine\n  warmup_steps: 1\n")
        runs = tmp_path / "runs"
        common = ["--scenes", "4", "--recipe", str(recipe), "--runs", str(runs)]
        bench.main([*common, "--steps", "3", "--rows", "W/o GE", "--unseen-steps", "0"])
        full = runs / "wo-ge" / "checkpoints" / "last.ckpt"
        bench.main(
            [*common, "--steps", "2", "--schedule-steps", "10", "--rows", "L-CoIns", "W/o CL",
             "--full-checkpoint", str(full), "--unseen-checkpoint", str(full)]
        )  # fmt: skip
    rows = {r["model"]: r for r in written["rows"]}
    assert rows["L-CoIns"]["train steps"] == 3  # the given checkpoint, not a new run
    assert not (runs / "full").exists() and not (runs / "held-out-pairs").exists()
    wo_cl = LCoInsModule.load_from_checkpoint(runs / "wo-cl" / "checkpoints" / "last.ckpt")
    assert wo_cl.hparams.schedule_steps == 10 and wo_cl.hparams.lr_schedule == "cosine"
    assert rows["W/o CL"]["train steps"] == 2
    assert str(full) in written["md"] or "wo-ge" in written["md"]
    assert "Unseen colour-shape pairs" in written["md"]
