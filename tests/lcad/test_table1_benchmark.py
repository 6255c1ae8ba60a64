"""Smoke test of ``benchmarks/lcad_table1.py`` on the tiny configs: every stage trained through
the real CLI with its switch, the reconstruction table written first, every Table 1 row scored
beside the paper's numbers (results redirected to the test)."""

from __future__ import annotations

import torch

from lcad.cli import CONFIGS
from lcad.stages import LCADCompressionModule, LCADDiffusionModule
from tests.training import benchmark_module


def test_reconstruction_then_table_1(tmp_path, monkeypatch):
    written = {}
    with benchmark_module("lcad_table1") as bench:
        monkeypatch.setattr(bench, "config", lambda stage: CONFIGS / f"tiny-{stage}.yaml")
        monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
        monkeypatch.setattr(bench, "SIZE", 32)
        record = lambda name, rows, md: written.update({name: (rows, md)}) or ("", "")  # noqa: E731
        monkeypatch.setattr(bench, "write_results", record)
        steps = ["--autoencoder-steps", "2", "--compression-steps", "2", "--scenes", "4"]
        bench.main([*steps, "--reconstruction-only"])
        assert list(written) == ["lcad_reconstruction"]
        bench.main([*steps, "--steps", "3", "--ablation-steps", "2"])
    recon, md = written["lcad_reconstruction"]
    assert [r["reconstruction"].split(" (")[0] for r in recon] == [
        "VAE", "luminance-guided", "luminance-guided, L_rec only",
    ]  # fmt: skip
    assert all(5 < r["PSNR"] < 60 and r["train steps"] == 2 for r in recon)
    runs = tmp_path / "runs"
    rec_only = LCADCompressionModule.load_from_checkpoint(
        runs / "compression-rec-only" / "checkpoints" / "last.ckpt"
    )
    assert rec_only.discriminator_config.weight == 0 and "discriminator.weight 0" in md
    rows, md = written["lcad_table1"]
    by = {r["model"]: r for r in rows}
    assert list(by) == ["L-CAD", "W/o LIC", "L-CAD (2 steps)", "W/o LIC (2 steps)", "W/o SLR",
                        "no colour (ab = 0)"]  # fmt: skip
    assert by["L-CAD"]["train steps"] == 3 and by["L-CAD (2 steps)"]["train steps"] == 2
    assert by["W/o SLR"]["paper PSNR"] == bench.PAPER["W/o SLR"][0]
    for label in ("L-CAD", "W/o LIC", "W/o SLR"):
        assert 0 < by[label]["PSNR"] < 60 and 0 <= by[label]["consistency scarce"] <= 1
    assert by["W/o LIC"]["PSNR"] != by["L-CAD"]["PSNR"]  # sampled through the VAE's decoder
    wo_slr = LCADDiffusionModule.load_from_checkpoint(runs / "wo-slr" / "checkpoints" / "last.ckpt")
    assert wo_slr.hparams.cec == "none"
    assert (
        torch.load(runs / "full" / "checkpoints" / "step-2.ckpt", weights_only=False)["global_step"]
        == 2
    )
