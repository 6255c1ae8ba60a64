"""film_color in 2 CPU processes (DDP over gloo): the ranks train and validate on disjoint
halves of the data, build one vocabulary, estimate one prior from the samples of both, and their
metric counts add up to those of a single process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.rebalance import empirical_prior, rebalance_weights
from film_color.cli import run
from film_color.language import Vocabulary
from film_color.module import FilmColorModule
from tests.ddp import (
    assert_partition,
    assert_summed_states,
    cli_command,
    importable_env,
    logged_args,
    read_ranks,
    recorder_args,
)
from tests.film_color.components import TINY_CONFIG
from tests.training import read_metrics, run_ddp

#: tiny.yaml's data: 16 training and 8 validation scenes of 32 px (training seed 0)
TRAIN_SCENES, VAL_SCENES, SIZE = 16, 8, 32


_cli_command = cli_command("film_color.cli")


def test_ddp_ranks_split_the_data_and_sum_their_counts(tmp_path: Path, monkeypatch) -> None:
    """One DDP fit and one DDP validate (plus a single-process validate) checked for:

    * training: each rank's samples are its own, and together they are the training set (2
      steps x 4 samples x 2 ranks = 16 scenes);
    * one vocabulary, that of the training captions, on every rank;
    * the prior: each rank reads its first ``prior_batches`` (2) batches of its own share and
      the counts are gathered, so the class weights are those of the prior of all 16 scenes;
    * validation: disjoint halves of the 8 scenes, whose metric counts (pixels and hits of the
      top-k accuracy, judged objects of caption consistency and manipulation) add up to the
      single process's, so the synced ratios are equal too.
    """
    importable_env(monkeypatch)
    train = tmp_path / "train"
    run_ddp(
        _cli_command,
        "fit",
        "--config",
        TINY_CONFIG,
        f"--trainer.default_root_dir={train}",
        *recorder_args(train / "samples"),
        cwd=tmp_path,
    )
    ranks = read_ranks(train / "samples", 2)
    assert_partition([r["train"] for r in ranks], range(TRAIN_SCENES))

    ckpt = sorted((train / "checkpoints").glob("*.ckpt"))[-1]
    module = FilmColorModule.load_from_checkpoint(ckpt)
    scenes = CapShapes(length=TRAIN_SCENES, size=SIZE, seed=0)
    items = [scenes[i] for i in range(TRAIN_SCENES)]
    assert module.vocabulary == Vocabulary.build(item["caption"] for item in items)
    ab = rgb_to_lab(torch.stack([item["rgb"] for item in items]))[:, 1:]
    prior = empirical_prior([module.prior_targets(ab)], module.bins)
    expected = rebalance_weights(prior, lam=0.5, bins=module.bins, sigma=5.0)
    assert torch.allclose(module.class_weights, expected.float(), rtol=1e-5)

    common = ["validate", "--config", TINY_CONFIG, "--ckpt_path", str(ckpt)]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([*common, *logged_args(single), *recorder_args(single / "samples")])
    run_ddp(_cli_command, *common, *logged_args(ddp), *recorder_args(ddp / "samples"), cwd=tmp_path)
    [one] = read_ranks(single / "samples", 1)
    two = read_ranks(ddp / "samples", 2)
    assert sorted(one["val"]) == list(range(VAL_SCENES))
    assert_partition([r["val"] for r in two], range(VAL_SCENES))
    assert_summed_states(two, one)
    assert one["val_states"]["metrics.val_accuracy.total"][0] == VAL_SCENES * (SIZE // 4) ** 2
    logged_one, logged_two = read_metrics(single), read_metrics(ddp)
    for key in ("val/acc@1", "val/acc@5", "val/caption_consistency", "val/manipulation_accuracy"):
        assert logged_two[key] == pytest.approx(logged_one[key], abs=1e-5), key
