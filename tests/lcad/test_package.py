"""lcad through the checks every package passes (:mod:`tests.package_checks`), one class per
training stage: each stage's CLI on its tiny config and its hub round trip; the diffusion stage,
the one that colorizes, also DDP, exact resume and ``chromalab.colorize``. The read-only checks
share the chained fits of ``conftest.stages`` with ``test_cli.py``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from lcad.cli import STAGES
from tests.lcad.components import tiny_config
from tests.package_checks import CLIChecks, HubChecks, PackageChecks


class LCADStage(HubChecks, CLIChecks):
    """What the three stages declare alike: their CLI is ``lcad --stage <stage>``."""

    cli = "lcad.cli"
    stage: ClassVar[str]
    prediction_shapes = {"rgb": (2, 3, 32, 32)}  # tiny configs: batches of 2 scenes of 32 px

    def __init_subclass__(cls, **kwargs):
        cls.cli_args = ("--stage", cls.stage)
        cls.tiny_config = tiny_config(cls.stage)
        cls.module_class = STAGES[cls.stage]
        super().__init_subclass__(**kwargs)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, stages: dict[str, Path]) -> Path:
        return stages[cls.stage]

    def check_metrics(self, metrics, stage):
        assert 0 < metrics[f"{stage}/psnr"] < 100


class TestAutoencoder(LCADStage):
    stage = "autoencoder"
    metric_keys = ("psnr", "ssim")

    def module_output(self, module, batch):
        return module(batch["rgb"])  # the VAE's reconstruction


class TestCompression(LCADStage):
    stage = "compression"
    metric_keys = ("psnr", "ssim")
    hub_overrides = {"vae_from": "no/such/stage0.ckpt"}

    def module_output(self, module, batch):
        return module(batch["rgb"], batch["l"])  # the luminance-guided reconstruction


class TestDiffusion(LCADStage, PackageChecks):
    stage = "diffusion"
    metric_keys = ("psnr", "ssim", "loss", "caption_consistency", "manipulation_accuracy")
    # tiny-diffusion.yaml: 8 training and 4 validation scenes
    train_scenes, val_scenes = 8, 4
    ddp_metric_keys = ("val/psnr", "val/ssim", "val/caption_consistency",
                       "val/manipulation_accuracy")  # fmt: skip
    # SSIM's float32 sums depend on the batches' composition; DDIM samples on each rank
    ddp_states_rel, ddp_metrics_abs = 1e-5, 1e-4
    hub_overrides = {"compression_from": "no/such/stage1.ckpt"}
    plugin = "lcad"
    colorize_options = {"steps": 2, "guidance": 3.0, "seed": 3}
    caption_pair = ("a red circle", "a blue circle")

    def module_output(self, module, batch):
        # the module's own sampling, each image with a generator seeded by its index
        generators = [torch.Generator().manual_seed(int(i)) for i in batch["index"]]
        return module.colorize_rgb(batch["l"], list(batch["caption"]), generators=generators)

    def module_colors(self, module, l, captions):
        # the plug-in's options: its steps and guidance, every image seeded alike
        options = self.colorize_options
        generators = [torch.Generator().manual_seed(options["seed"]) for _ in captions]
        return module.colorize(l, captions, steps=options["steps"],
                               guidance=options["guidance"], generators=generators)  # fmt: skip
