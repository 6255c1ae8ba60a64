"""lcoins through the checks every package passes (:mod:`tests.package_checks`): its CLI on
tiny.yaml (the model and each ablation), DDP, exact resume, the hub round trip and
``chromalab.colorize``."""

from __future__ import annotations

from lcoins.module import LCoInsModule
from tests.lcoins.components import TINY_CONFIG
from tests.package_checks import PackageChecks


class TestLCoIns(PackageChecks):
    cli = "lcoins.cli"
    tiny_config = TINY_CONFIG
    module_class = LCoInsModule
    fast_dev_run_variants = {
        "full": (),
        "wo_ge": ("--model.network.group_tokens", "false"),
        "wo_ga": ("--model.network.grouping_attention", "false"),
        "wo_la": ("--model.augmentation", "null"),
        "wo_cl": ("--model.beta", "0"),
    }
    metric_keys = ("psnr", "ssim", "caption_consistency", "manipulation_accuracy")
    # ab at the input resolution; each 8-pixel token's group (4 groups)
    prediction_shapes = {"rgb": (4, 3, 32, 32), "ab": (4, 2, 32, 32), "assignment": (4, 4, 4)}
    # tiny.yaml: 16 training and 8 validation scenes
    train_scenes, val_scenes = 16, 8
    ddp_metric_keys = tuple(f"val/{key}" for key in metric_keys)
    ddp_states_rel, ddp_metrics_abs = 1e-6, 1e-4  # PSNR's and SSIM's float32 sums
    plugin = "lcoins"
    caption_pair = ("a red circle", "a blue circle")

    def check_metrics(self, metrics, stage):
        assert 5 < metrics[f"{stage}/psnr"] < 60
        assert 0 <= metrics[f"{stage}/manipulation_accuracy"] <= 1

    def check_variant(self, module, variant):
        # each ablation switch reaches the module it names, and only that one
        name = {v: k for k, v in self.fast_dev_run_variants.items()}[variant]
        assert module.network_config.group_tokens == (name != "wo_ge")
        assert module.network_config.grouping_attention == (name != "wo_ga")
        assert (module.augmentation is None) == (name == "wo_la")
        assert (module.hparams.beta == 0) == (name == "wo_cl")

    def check_prediction(self, prediction):
        groups = prediction["assignment"]
        assert int(groups.min()) >= 0 and int(groups.max()) < 4
