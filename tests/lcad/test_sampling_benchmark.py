"""Smoke test of ``benchmarks/lcad_sampling.py`` on the tiny config (random weights): every
table's rows are measured; the counts are the samplers' own, compared with the release's
DDIM, which batches the guided rows into one UNet call per step (ldm's ``p_sample_ddim``) as the
pipeline does; guidance split into two calls gives the batched result, and the edit raises the
attention inside the masks."""

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
    release = solvers["DDIM-8batched (release, ours)"]
    split = solvers["DDIM-8two calls"]
    dpm = solvers["DPM-Solver++-4batched (release, ours)"]
    assert (release["UNet calls per image"], split["UNet calls per image"]) == (8, 16)
    assert release["UNet evaluations per image"] == split["UNet evaluations per image"] == 16
    # DPM-Solver++ at 4 steps: 4 calls of 2 rows against the release's 8 of 2 rows
    assert (dpm["UNet calls per image"], dpm["UNet evaluations per image"]) == (4, 8)
    assert dpm["fewer evaluations than release"] == 2
    assert release["fewer evaluations than release"] == split["fewer evaluations than release"] == 1
    assert split["PSNR vs DDIM-8 (dB)"] > 60  # two calls compute what one batched call does
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
    assert [r["UNet calls per image"] for r in sd] == [50, 100, 10, 15, 20]
    assert [r["UNet evaluations per image"] for r in sd] == [100, 100, 20, 30, 40]
    assert all(r["s/image (extrapolated)"] > 0 for r in sd)
    assert "Instance-aware sampling" in written["md"]
