"""Smoke test of ``benchmarks/lcad_sampling.py`` on the tiny config (random weights): every
table's rows are measured; the counts are the samplers' own, the paper's two-call guidance
gives the batched result, and the edit raises the attention inside the masks."""

from __future__ import annotations

from tests.lcad.components import SD_LIKE_UNET
from tests.training import benchmark_module


def test_every_table_is_measured(monkeypatch):
    written = {}
    with benchmark_module("lcad_sampling") as bench:
        monkeypatch.setattr(bench, "SD_UNET", SD_LIKE_UNET)
        monkeypatch.setattr(
            bench,
            "write_results",
            lambda name, rows, md: written.update(rows=rows, md=md) or ("", ""),
        )
        bench.main(["--models", "tiny", "sd-unet-256", "--scenes", "3", "--batch", "2",
                    "--ddim-steps", "8", "--dpm-steps", "4", "--edit-steps", "2",
                    "--sd-calls", "1"])  # fmt: skip
    rows = written["rows"]
    solvers = {r["sampler"] + r["guidance"]: r for r in rows if r["table"] == "solvers"}
    paper = solvers["DDIM-8two calls (paper)"]
    ours = solvers["DDIM-8batched (ours)"]
    dpm = solvers["DPM-Solver++-4batched (ours)"]
    assert (paper["UNet calls per image"], ours["UNet calls per image"]) == (16, 8)
    assert dpm["UNet calls per image"] == 4 and dpm["fewer calls than paper"] == 4
    assert paper["UNet evaluations per image"] == ours["UNet evaluations per image"] == 16
    assert ours["PSNR vs DDIM-8 (dB)"] > 60  # one batched call computes what two calls do
    assert 10 < dpm["PSNR vs DDIM-8 (dB)"] < 100
    instances = [r for r in rows if r["table"] == "instance"]
    assert len(instances) == 4 and instances[0]["time vs plain"] == 1
    plain, every, early, auto = instances
    assert every["UNet evaluations per image"] == 24  # one conditional pass more per step
    assert early["UNet evaluations per image"] == 18
    for row in (every, early, auto):
        assert row["mask mass after edit"] > row["mask mass before edit"]
        assert 0 <= row["caption consistency"] <= 1
    sd = [r for r in rows if r["table"] == "sd-unet"]
    assert [r["UNet calls per image"] for r in sd] == [100, 50, 10, 15, 20]
    assert all(r["s/image (extrapolated)"] > 0 for r in sd)
    assert "Instance-aware sampling" in written["md"]
