"""film_color through the checks every package passes (:mod:`tests.package_checks`): its CLI
on tiny.yaml (each conditioning), DDP, exact resume, the hub round trip and
``chromalab.colorize``."""

from __future__ import annotations

from pathlib import Path

import torch

from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.rebalance import empirical_prior, rebalance_weights
from film_color.language import Vocabulary
from film_color.module import FilmColorModule
from tests.film_color.components import TINY_CONFIG, tiny_vocabulary
from tests.package_checks import PackageChecks


class TestFilmColor(PackageChecks):
    cli = "film_color.cli"
    tiny_config = TINY_CONFIG
    module_class = FilmColorModule
    fast_dev_run_variants = {
        mode: ("--model.network.conditioning", mode) for mode in ("none", "concat", "film")
    }
    metric_keys = ("acc@1", "acc@5", "caption_consistency", "manipulation_accuracy")
    # ab at the network's 1/4 resolution
    prediction_shapes = {"rgb": (4, 3, 32, 32), "ab": (4, 2, 8, 8)}
    # tiny.yaml: 16 training and 8 validation scenes of 32 px (seed 0)
    train_scenes, val_scenes = 16, 8
    ddp_metric_keys = tuple(f"val/{key}" for key in metric_keys)
    plugin = "film_color"
    caption_pair = ("a red circle", "a blue circle")

    def check_metrics(self, metrics, stage):
        assert 0 <= metrics[f"{stage}/acc@1"] <= metrics[f"{stage}/acc@5"] <= 1

    def tiny_module(self):
        module = super().tiny_module()
        module.set_vocabulary(tiny_vocabulary())
        return module

    def check_ddp_checkpoint(self, ckpt: Path) -> None:
        # one vocabulary, that of the training captions, on every rank; each rank reads its
        # first prior_batches (2) batches of its own share and the counts are gathered: the
        # class weights are those of the prior of all 16 scenes
        module = FilmColorModule.load_from_checkpoint(ckpt)
        scenes = CapShapes(length=self.train_scenes, size=32, seed=0)
        items = [scenes[i] for i in range(self.train_scenes)]
        assert module.vocabulary == Vocabulary.build(item["caption"] for item in items)
        ab = rgb_to_lab(torch.stack([item["rgb"] for item in items]))[:, 1:]
        prior = empirical_prior([module.prior_targets(ab)], module.bins)
        expected = rebalance_weights(prior, lam=0.5, bins=module.bins, sigma=5.0)
        assert torch.allclose(module.class_weights, expected.float(), rtol=1e-5)

    def check_validation_counts(self, states):
        # every pixel of the 8 scenes' 8x8 ab grid judged once by the top-k accuracy
        assert states["metrics.val_accuracy.total"][0] == self.val_scenes * 8**2

    def check_resumed(self, final):
        assert final["film_color"]["vocabulary"]  # compared with the uninterrupted run's
