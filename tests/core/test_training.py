"""The packages' shared LightningCLI runner."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from chromalab.tasks import ColorizationTask, as_config
from chromalab.training import (
    AtomicCheckpointIO,
    RandomStates,
    command_line_model_keys,
    run_lightning_cli,
)


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


@dataclass(frozen=True)
class _Output:
    scale: float = 1.0
    shift: float = 0.0


class _NestedScaled(ColorizationTask):
    """:class:`_Scaled` with its scale in a nested configuration; its earlier version took
    ``scale`` and ``shift`` flat."""

    moved_hparams = {"scale": ("output", "scale"), "shift": ("output", "shift")}

    def __init__(self, features: int = 3, output: _Output = _Output()) -> None:  # noqa: B008
        super().__init__()

    def configure_models(self) -> None:
        self.layer = torch.nn.Linear(self.hparams.features, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).mean()

    def validation_step(self, batch, batch_idx):
        output = as_config(_Output, self.hparams.output)
        self.log("val/out", self.layer(batch[0]).mean() * output.scale + output.shift)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoints_of_a_flat_earlier_version_load_through_ckpt_path(tmp_path):
    common = ["--trainer.accelerator=cpu", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    fit = run_lightning_cli(
        _NestedScaled, _TrainData, ["fit", *common, "--trainer.max_steps=1",
                                    "--model.output.scale=4"]
    )  # fmt: skip
    assert fit.model.hparams.output == {"scale": 4.0, "shift": 0.0}
    ckpt = tmp_path / "flat.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    blob = torch.load(ckpt, weights_only=True)
    hparams = blob["hyper_parameters"]
    hparams.update(hparams.pop("output"))  # as the flat version saved them
    torch.save(blob, ckpt)

    def validate(*extra):
        args = ["validate", *common, f"--ckpt_path={ckpt}", *extra]
        return run_lightning_cli(_NestedScaled, _Data, args).model.hparams.output

    assert validate() == {"scale": 4.0, "shift": 0.0}
    # a field typed on the command line wins and keeps the checkpoint's other fields
    assert validate("--model.output.shift", "2") == {"scale": 4.0, "shift": 2.0}


def test_trainers_write_checkpoints_atomically(tmp_path):
    cli = run_lightning_cli(
        _Scaled,
        _TrainData,
        ["fit", "--trainer.accelerator=cpu", "--trainer.logger=false",
         "--trainer.enable_progress_bar=false", "--trainer.max_steps=1",
         f"--trainer.default_root_dir={tmp_path}"],
    )  # fmt: skip
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    [ckpt] = (tmp_path / "checkpoints").glob("*.ckpt")
    assert torch.load(ckpt, weights_only=False)["global_step"] == 1
    assert not list(tmp_path.rglob(".*.partial"))


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    stale = tmp_path / "ckpts" / ".epoch=0-step=3.ckpt.partial"  # as a killed write leaves it
    stale.write_bytes(b"half a checkpoint")
    with pytest.raises(Exception, match="pickle"):  # fails after part of the file is written
        io.save_checkpoint({"big": torch.zeros(100_000), "bad": lambda: 0}, target)
    assert torch.load(target)["step"] == 1
    assert not list(target.parent.glob(".*.partial"))  # its own and the stale one
    io.save_checkpoint({"step": torch.tensor(2)}, f"file://{target}")
    assert torch.load(target)["step"] == 2


_WRITER = """
import sys, torch
from chromalab.training import AtomicCheckpointIO
io, step, payload = AtomicCheckpointIO(), 0, torch.empty(2_000_000)
while True:  # nearly all the time in writes (a plain torch.save broke the file in 4 of 5 kills)
    step += 1
    io.save_checkpoint({"step": step, "payload": payload.fill_(step)}, sys.argv[1])
    print(step, flush=True)
"""


def test_a_killed_write_leaves_a_whole_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        while proc.stdout.readline().strip() != "3":  # three writes of 8 MB done
            pass
        time.sleep(random.uniform(0.0, 0.05))  # into one of the next writes
    finally:
        proc.kill()
        proc.wait()
    state = torch.load(target)
    assert state["step"] >= 3
    assert torch.equal(state["payload"], torch.full((2_000_000,), float(state["step"])))


class _Dropped(LightningModule):
    """A layer behind dropout: its training draws from torch's global generator."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        # one row repeated: a resumed epoch that starts again sees the same batches
        data = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)).expand(16, 8)
        # its own generator, as chromalab's loaders have: a loader without one draws its
        # iterator's seed from the global generator, again when a resumed run starts
        loader = torch.Generator().manual_seed(1)
        return DataLoader(TensorDataset(data), batch_size=2, generator=loader)


def _dropout_run(root, steps: int, keep_states: bool, resume=None) -> dict:
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    seed_everything(0)
    module = _Dropped()
    torch.manual_seed(123)  # what happened before the run: differs from the resumed process
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1)]
    if keep_states:
        callbacks.append(RandomStates())
    trainer = Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, default_root_dir=root,
    )  # fmt: skip
    if resume is None:
        torch.manual_seed(7)
    trainer.fit(module, ckpt_path=resume)
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("keep_states", [True, False])
def test_random_states_make_a_resumed_dropout_run_exact(tmp_path, keep_states):
    reference = _dropout_run(tmp_path / "a", 6, keep_states)
    _dropout_run(tmp_path / "b", 2, keep_states)
    [ckpt] = (tmp_path / "b").glob("*step=2.ckpt")
    states = torch.load(ckpt, weights_only=True).get("random_states")
    assert (states is not None and len(states) == 1) == keep_states
    resumed = _dropout_run(tmp_path / "b", 6, keep_states, resume=str(ckpt))
    same = all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert same == keep_states  # without the states, dropout draws other masks after a resume


def test_the_cli_adds_random_states(tmp_path):
    cli = run_lightning_cli(
        _Scaled, _TrainData,
        ["fit", "--trainer.accelerator=cpu", "--trainer.logger=false",
         "--trainer.enable_progress_bar=false", "--trainer.max_steps=1",
         f"--trainer.default_root_dir={tmp_path}"],
    )  # fmt: skip
    assert sum(isinstance(c, RandomStates) for c in cli.trainer.callbacks) == 1
