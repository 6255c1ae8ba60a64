"""lcad's diffusion stage in 2 CPU processes (DDP over gloo): the ranks train and validate on
disjoint halves of the data, and their metric counts (PSNR, SSIM, caption metrics of the DDIM
samples, each image with its own seeded generator) add up to a single process's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcad.cli import CONFIGS, run
from tests.ddp import (
    assert_partition,
    assert_summed_states,
    cli_command,
    importable_env,
    logged_args,
    read_ranks,
    recorder_args,
)
from tests.training import read_metrics, run_ddp

TINY_DIFFUSION = str(CONFIGS / "tiny-diffusion.yaml")
#: tiny-diffusion.yaml's data: 8 training and 4 validation scenes
TRAIN_SCENES, VAL_SCENES = 8, 4


def _command(*args: str) -> list[str]:
    return cli_command("lcad.cli")("--stage", "diffusion", *args)


def test_ddp_ranks_split_the_data_and_sum_their_counts(tmp_path: Path, monkeypatch) -> None:
    importable_env(monkeypatch)
    train = tmp_path / "train"
    run_ddp(
        _command, "fit", "--config", TINY_DIFFUSION, f"--trainer.default_root_dir={train}",
        *recorder_args(train / "samples"), cwd=tmp_path,
    )  # fmt: skip
    ranks = read_ranks(train / "samples", 2)
    # 2 steps x 2 scenes x 2 ranks: every training scene once, each on one rank
    assert_partition([r["train"] for r in ranks], range(TRAIN_SCENES))

    ckpt = sorted((train / "checkpoints").glob("*.ckpt"))[-1]
    common = ["validate", "--config", TINY_DIFFUSION, "--ckpt_path", str(ckpt)]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(["--stage", "diffusion", *common, *logged_args(single), *recorder_args(single / "samples")])
    run_ddp(_command, *common, *logged_args(ddp), *recorder_args(ddp / "samples"), cwd=tmp_path)
    [one] = read_ranks(single / "samples", 1)
    two = read_ranks(ddp / "samples", 2)
    assert sorted(one["val"]) == list(range(VAL_SCENES))
    assert_partition([r["val"] for r in two], range(VAL_SCENES))
    assert_summed_states(two, one, rel=1e-5)
    logged_one, logged_two = read_metrics(single), read_metrics(ddp)
    for key in ("val/psnr", "val/ssim", "val/caption_consistency", "val/manipulation_accuracy"):
        assert logged_two[key] == pytest.approx(logged_one[key], abs=1e-4), key
