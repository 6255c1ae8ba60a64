"""The task base of every paper module (:mod:`chromalab.tasks`), on a boring task: the configure
hooks, nested configurations stored as plain data, the flat hyper-parameters of earlier versions,
initial vs restored weights, per-step seeds."""

from __future__ import annotations

import json
from dataclasses import dataclass

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from chromalab.tasks import ColorizationTask, as_config, nest_flat_hparams


@dataclass(frozen=True)
class BoringNetwork:
    width: int = 4
    depth: int = 1


class BoringTask(ColorizationTask):
    def __init__(
        self,
        network: BoringNetwork = BoringNetwork(),  # noqa: B008 (frozen)
        lr: float = 0.1,
        init_from: str | None = None,
        seed: int = 0,
        lpips_weights: str | None = None,
    ) -> None:
        self.calls: list[str] = []
        super().__init__(lpips_weights=lpips_weights)

    def configure_models(self) -> None:
        self.calls.append("models")
        config = as_config(BoringNetwork, self.hparams.network)
        self.layer = nn.Linear(config.width, config.width)

    def configure_losses(self) -> None:
        self.calls.append("losses")

    def configure_metrics(self) -> None:
        self.calls.append("metrics")

    def load_initial_weights(self) -> None:
        self.calls.append("initial weights")
        if self.hparams.init_from:
            self.layer.load_state_dict(torch.load(self.hparams.init_from, weights_only=True))

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def test_the_hooks_run_in_order_after_the_hyper_parameters():
    task = BoringTask(network=BoringNetwork(width=3), lr=0.5)
    assert task.calls == ["models", "losses", "metrics"]
    assert task.layer.in_features == 3 and task.hparams.lr == 0.5


def test_nested_configurations_are_stored_as_plain_dicts():
    task = BoringTask(network=BoringNetwork(width=3), lpips_weights="/local/alexnet.pth")
    assert task.hparams.network == {"width": 3, "depth": 1}
    assert "lpips_weights" not in task.hparams  # machine-local: not a hyper-parameter
    assert task.local_files == {"lpips_weights": "/local/alexnet.pth"}
    # a dict (as in a checkpoint or config.json) builds the same task, completed from the default
    partial = BoringTask(network={"width": 3})
    assert partial.layer.in_features == 3 and partial.hparams.network == {"width": 3, "depth": 1}


def test_as_config_names_unknown_fields_and_bad_values():
    assert as_config(BoringNetwork, None) == BoringNetwork()
    assert as_config(BoringNetwork, {"depth": 2}) == BoringNetwork(depth=2)
    assert as_config(BoringNetwork, {"depth": 2}, BoringNetwork(width=9)) == BoringNetwork(9, 2)
    with pytest.raises(ValueError, match=r"no field \['widht'\]"):
        as_config(BoringNetwork, {"widht": 3})
    with pytest.raises(TypeError, match="expected a BoringNetwork or a dict"):
        as_config(BoringNetwork, 3)


def _fit(task: BoringTask, root, steps: int = 1, ckpt_path=None) -> pl.Trainer:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 4)))
    trainer = pl.Trainer(
        max_steps=steps, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, data, ckpt_path=ckpt_path)
    return trainer


def test_fit_loads_the_initial_weights_only_into_a_module_not_restored(tmp_path):
    start = nn.Linear(4, 4)
    torch.save(start.state_dict(), tmp_path / "start.pt")
    fresh = BoringTask(init_from=str(tmp_path / "start.pt"), lr=0.0)
    _fit(fresh, tmp_path / "a")
    assert "initial weights" in fresh.calls and not fresh.restored
    torch.testing.assert_close(fresh.layer.weight, start.weight)  # lr 0: the initial weights

    trained = BoringTask(init_from=str(tmp_path / "start.pt"), lr=0.0)
    with torch.no_grad():
        trained.layer.weight.fill_(0.25)
    trained.mark_loaded()  # e.g. by a converter of released weights
    _fit(trained, tmp_path / "b")
    assert "initial weights" not in trained.calls and trained.restored
    assert bool((trained.layer.weight == 0.25).all())


def test_checkpoints_and_weights_folders_mark_the_module_restored(tmp_path):
    task = BoringTask(network=BoringNetwork(width=4))
    trainer = _fit(task, tmp_path)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    loaded = BoringTask.load_from_checkpoint(path)
    assert loaded.restored and loaded.hparams.network == {"width": 4, "depth": 1}
    task.save_pretrained(tmp_path / "folder")
    assert BoringTask.from_pretrained(tmp_path / "folder").restored
    assert not BoringTask().restored


def test_overrides_at_load_reach_one_field_of_a_nested_configuration(tmp_path):
    task = BoringTask(network=BoringNetwork(width=4, depth=3), lr=0.2)
    trainer = _fit(task, tmp_path)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    loaded = BoringTask.load_with_overrides(path, {"network.depth": 5, "lr": 0.3})
    assert loaded.hparams.network == {"width": 4, "depth": 5} and loaded.hparams.lr == 0.3
    with pytest.raises(ValueError, match="'lr' is not a configuration"):
        BoringTask.load_with_overrides(path, {"lr.x": 1})


class FlatBefore(BoringTask):
    """A boring task whose earlier version took the network's fields flat (``width``,
    ``depth``, and ``layers`` for today's ``network.depth``)."""

    moved_hparams = {"width": ("network", "width"), "layers": ("network", "depth")}


def test_flat_hyper_parameters_move_into_their_configurations():
    moved = FlatBefore.moved_hparams
    flat = {"width": 3, "layers": 2, "lr": 0.5}
    assert nest_flat_hparams(flat, moved) == {"network": {"width": 3, "depth": 2}, "lr": 0.5}
    nested = {"network": {"width": 3, "depth": 2}, "lr": 0.5}
    assert nest_flat_hparams(nested, moved) == nested  # today's form: unchanged
    assert nest_flat_hparams({"width": 3, "network": {"depth": 2}}, moved) == {
        "network": {"width": 3, "depth": 2}
    }
    with pytest.raises(ValueError, match="'width' and network.width are both given"):
        nest_flat_hparams({"width": 3, "network": {"width": 4}}, moved)
    with pytest.raises(ValueError, match="not a configuration"):
        nest_flat_hparams({"width": 3, "network": 4}, moved)
    assert FlatBefore.moved_arguments(flat) == {"network": {"width": 3, "depth": 2}}
    assert FlatBefore.moved_arguments(nested) == {}


def _flat_checkpoint(tmp_path):
    """A checkpoint of :class:`FlatBefore` as its earlier, flat version saved it."""
    task = FlatBefore(network=BoringNetwork(width=4, depth=2), lr=0.2)
    trainer = _fit(task, tmp_path)
    path = tmp_path / "flat.ckpt"
    trainer.save_checkpoint(path)
    blob = torch.load(path, weights_only=True)
    blob["hyper_parameters"] = {"width": 4, "layers": 2, "lr": 0.2, "init_from": None, "seed": 0}
    torch.save(blob, path)
    return task, path


def test_checkpoints_and_folders_of_the_flat_version_still_load(tmp_path):
    task, path = _flat_checkpoint(tmp_path)
    loaded = FlatBefore.load_from_checkpoint(path)
    assert loaded.hparams.network == {"width": 4, "depth": 2} and loaded.hparams.lr == 0.2
    torch.testing.assert_close(loaded.layer.weight, task.layer.weight)
    # arguments given to the load still win, and a dotted override reaches one field
    given = FlatBefore.load_from_checkpoint(path, network={"width": 4, "depth": 7}, lr=0.9)
    assert given.hparams.network == {"width": 4, "depth": 7} and given.hparams.lr == 0.9
    again = FlatBefore.load_with_overrides(path, {"network.depth": 5})
    assert again.hparams.network == {"width": 4, "depth": 5}
    # a save_pretrained folder whose config.json is flat
    task.save_pretrained(tmp_path / "folder")
    config = tmp_path / "folder" / "config.json"
    config.write_text(json.dumps({"width": 4, "layers": 2, "lr": 0.2, "seed": 0}))
    folder = FlatBefore.from_pretrained(tmp_path / "folder")
    assert folder.hparams.network == {"width": 4, "depth": 2} and folder.restored
    # without moved_hparams the flat keys would be dropped silently (depth back to 1)
    assert BoringTask.load_from_checkpoint(path).hparams.network == {"width": 4, "depth": 1}


def test_step_seeds_follow_the_step_batch_and_rank(monkeypatch):
    task = BoringTask()
    # a direct transcription of the mixing: ((seed * 1000003 + step) * 4099 + batch) * 1031 + rank
    for seed, step, batch, rank in ((0, 0, 0, 0), (7, 12, 3, 0), (7, 12, 3, 1), (2, 5, 0, 3)):
        monkeypatch.setattr(BoringTask, "global_step", property(lambda self, s=step: s))
        monkeypatch.setattr(BoringTask, "global_rank", property(lambda self, r=rank: r))
        expected = ((seed * 1_000_003 + step) * 4_099 + batch) * 1_031 + rank
        assert task.step_seed(batch, seed) == expected
        for purpose in (0, 1):
            drawn = torch.rand(3, generator=task.step_generator(batch, seed, purpose))
            reference = torch.rand(
                3, generator=torch.Generator().manual_seed(expected * 2 + purpose)
            )
            assert torch.equal(drawn, reference)
    with pytest.raises(ValueError, match="purpose must be 0 or 1"):
        task.step_generator(0, 0, purpose=2)
