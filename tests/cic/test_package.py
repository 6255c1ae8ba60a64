"""cic through the checks every package passes (:mod:`tests.package_checks`): its CLI on
tiny.yaml, DDP, exact resume, the hub round trip and ``chromalab.colorize``."""

from __future__ import annotations

from pathlib import Path

import torch

from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.rebalance import empirical_prior, rebalance_weights
from cic import CICModule
from cic.module import subsample_targets
from tests.cic.components import TINY_CONFIG
from tests.package_checks import PackageChecks


class TestCIC(PackageChecks):
    cli = "cic.cli"
    tiny_config = TINY_CONFIG
    module_class = CICModule
    metric_keys = ("auc_cmf", "auc_cmf_rebalanced", "colorfulness")
    # ab at the network's 1/4 resolution
    prediction_shapes = {"rgb": (4, 3, 32, 32), "ab": (4, 2, 8, 8)}
    # tiny.yaml: 16 training and 8 validation scenes of 32 px (seed 0)
    train_scenes, val_scenes = 16, 8
    ddp_metric_keys = ("val/auc_cmf", "val/auc_cmf_rebalanced", "val/colorfulness")
    hub_overrides = {"init_from": "no/such/release.pth"}
    plugin = "cic"

    def module_colors(self, module, l, captions):
        return module.colorize(l)

    def check_ddp_checkpoint(self, ckpt: Path) -> None:
        # each rank reads its first prior_batches (2) batches of its own share and the counts
        # are gathered: the class weights are those of the prior of all 16 scenes
        module = CICModule.load_from_checkpoint(ckpt)
        assert bool(module.weights_ready)
        scenes = CapShapes(length=self.train_scenes, size=32, seed=0)
        rgb = torch.stack([scenes[i]["rgb"] for i in range(self.train_scenes)])
        prior = empirical_prior([subsample_targets(rgb_to_lab(rgb)[:, 1:], 4)], module.bins)
        expected = rebalance_weights(prior, lam=0.5, bins=module.bins, sigma=5.0)
        assert torch.allclose(module.class_weights, expected.float(), rtol=1e-5)

    def check_validation_counts(self, states):
        # the CMF histogram and the colourfulness sums behind the logged ratios
        assert "val_cmf.hits" in states and "val_colorfulness.count" in states
