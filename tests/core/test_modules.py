"""``chromalab.modules``: Adam with step decay, the ranks' shares of the prior's training
batches, and the staged evaluation hooks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from chromalab.data import ColorizationDataModule
from chromalab.modules import StepDecayAdam, adam_step_decay, rank_shard

ADAM = {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 1e-4, "step_size": 2, "gamma": 0.5}


def test_step_decay_adam_decays_every_step_size_steps() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    groups = [{"params": [weight]}, {"params": [torch.nn.Parameter(torch.ones(1))], "lr": 0.1}]
    configured = adam_step_decay(groups, StepDecayAdam(**ADAM))
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["weight_decay"] == 1e-4
    rates = []
    for _ in range(5):
        rates += [group["lr"] for group in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    expected = [1e-3, 0.1, 1e-3, 0.1, 5e-4, 0.05, 5e-4, 0.05, 2.5e-4, 0.025]
    assert rates == pytest.approx(expected)
    with pytest.raises(TypeError, match="StepDecayAdam"):
        adam_step_decay([weight], ADAM)


def test_step_decay_adam_checks_its_fields() -> None:
    assert StepDecayAdam(**{**ADAM, "betas": [0.5, 0.9]}).betas == (0.5, 0.9)  # from YAML
    for field, value, message in [
        ("lr", 0.0, "lr must be > 0"),
        ("lr", float("nan"), "lr must be > 0"),
        ("betas", (0.9, 1.0), r"betas must be two numbers in \[0, 1\)"),
        ("betas", (-0.1, 0.9), "betas must be two"),
        ("betas", (0.9,), "betas must be two"),
        ("weight_decay", -1e-3, "weight_decay must be >= 0"),
        ("step_size", 0, "step_size must be >= 1"),
        ("step_size", 2.5, "step_size must be an integer"),
        ("gamma", 0.0, "gamma must be > 0"),
    ]:
        with pytest.raises(ValueError, match=f"optimizer.{message}"):
            StepDecayAdam(**{**ADAM, field: value})


def test_rank_shard_splits_the_training_order_between_ranks() -> None:
    """Rank ``r`` of ``w`` reads every ``w``-th sample of the training order from the ``r``-th
    on, in batches of the loader's size: the shares are disjoint and cover the epoch."""
    data = ColorizationDataModule(batch_size=2, capshapes_size=16, capshapes_train_length=12)
    data.setup("fit")
    order = [int(i) for batch in data.train_dataloader() for i in batch["index"]]
    assert sorted(order) == list(range(12))
    for world in (2, 3):
        for rank in range(world):
            batches = list(rank_shard(data.train_dataloader(), world, rank))
            assert all(len(batch["index"]) == 2 for batch in batches)
            assert [int(i) for b in batches for i in b["index"]] == order[rank::world]


def test_rank_shard_leaves_streams_to_shard_themselves() -> None:
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(torch.arange(6))

    loader = DataLoader(Stream(), batch_size=2)
    assert rank_shard(loader, 2, 1) is loader


def test_staged_evaluation_routes_batches_by_stage_and_skips_empty_ones():
    from chromalab.modules import StagedEvaluation

    class Recorder(StagedEvaluation):
        def __init__(self):
            self.calls = []

        def evaluate_batch(self, batch, stage):
            self.calls.append(("batch", batch["x"], stage))

        def log_stage_metrics(self, stage):
            self.calls.append(("log", stage))

    module = Recorder()
    module.validation_step({"x": 1}, 0)
    module.validation_step(None, 1)  # every sample unreadable
    module.on_validation_epoch_end()
    module.test_step({"x": 2}, 0)
    module.on_test_epoch_end()
    assert module.calls == [
        ("batch", 1, "val"),
        ("log", "val"),
        ("batch", 2, "test"),
        ("log", "test"),
    ]
    with pytest.raises(NotImplementedError, match="evaluate_batch"):
        StagedEvaluation().validation_step({}, 0)
