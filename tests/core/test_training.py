"""The packages' shared LightningCLI runner."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from chromalab.training import run_lightning_cli


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
