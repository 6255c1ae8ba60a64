"""The packages' shared LightningCLI runner."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from chromalab.training import command_line_model_keys, run_lightning_cli


class _Probe(LightningModule):
    """Records whether a process group was up while it validated."""

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(features, 1)
        self.group_seen = False

    def validation_step(self, batch, batch_idx):
        self.group_seen = torch.distributed.is_initialized()
        self.log("val/out", self.layer(batch[0]).mean())


class _Data(LightningDataModule):
    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.features = features

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, self.features)), batch_size=2)


@pytest.fixture(autouse=True)
def _bare_argv_and_environment(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cli"])  # the CLI reads only ``args``
    # Lightning's DDP sets LOCAL_RANK, MASTER_PORT, ... in this process; left behind they
    # would make a later DDP subprocess believe it was already launched
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_ddp_run_destroys_its_process_group(tmp_path):
    cli = run_lightning_cli(
        _Probe,
        _Data,
        [
            "validate",
            "--trainer.accelerator=cpu",
            "--trainer.strategy=ddp",
            "--trainer.devices=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    assert cli.model.group_seen  # the command did run under a (Gloo) process group
    # ... and left none behind: an undestroyed Gloo group can abort the interpreter at exit
    assert not torch.distributed.is_initialized()


def test_single_process_run_returns_the_cli(tmp_path):
    cli = run_lightning_cli(
        _Probe,
        _Data,
        ["validate", "--trainer.accelerator=cpu", "--trainer.logger=false",
         "--model.features=5", "--data.features=5", f"--trainer.default_root_dir={tmp_path}"],
    )  # fmt: skip
    assert cli.model.layer.in_features == 5 and not cli.model.group_seen


class _Scaled(LightningModule):
    """Saves its hyperparameters, so a checkpoint rebuilds it with its own ``scale``."""

    def __init__(self, features: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(features, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).mean() * self.hparams.scale

    def validation_step(self, batch, batch_idx):
        self.log("val/out", self.layer(batch[0]).mean() * self.hparams.scale)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _TrainData(_Data):
    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, self.features)), batch_size=2)


def test_command_line_model_keys():
    args = ["test", "--config", "c.yaml", "--model.temperature", "0.1", "--model.lr=2",
            "--model.init_args.width", "1", "--data.batch_size", "4",
            "--model.lr", "3"]  # fmt: skip
    assert command_line_model_keys(args) == ["temperature", "lr", "width"]
    assert command_line_model_keys(["fit", "--model", "m.yaml"]) == []


def test_typed_model_options_win_over_the_checkpoint(tmp_path):
    common = ["--trainer.accelerator=cpu", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    fit = run_lightning_cli(
        _Scaled, _TrainData, ["fit", *common, "--trainer.max_steps=1", "--model.scale=4"]
    )
    ckpt = tmp_path / "m.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  scale: 7.0\n")

    def validate(*extra):
        args = ["validate", *common, f"--ckpt_path={ckpt}", *extra]
        return run_lightning_cli(_Scaled, _Data, args)

    assert validate().model.hparams.scale == 4.0  # the checkpoint's, not the default 1.0
    assert validate(f"--config={config}").model.hparams.scale == 4.0  # a config file yields
    typed = validate(f"--config={config}", "--model.scale", "2.5")
    assert typed.model.hparams.scale == 2.5  # typed on the command line: wins
    assert typed.trainer.callback_metrics["val/out"] is not None
