"""What each DDP rank saw, recorded by a callback that the packages' CLIs take through
``--trainer.callbacks``, and the checks the DDP tests make of it.

A CLI run given ``--trainer.callbacks=tests.ddp.SampleRecorder`` and
``--trainer.callbacks.folder=DIR`` writes ``DIR/rank<r>.json`` per rank with the ``index`` of
every training and validation sample the rank was given and, at each validation epoch end, the
rank's own (not yet synchronized) sum-reduced states of every torchmetrics metric of the module:
the pixel and object counts behind the logged ratios. The subprocesses need the repository root
on ``PYTHONPATH`` to import this module (:func:`importable_env`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_sum

ROOT = Path(__file__).resolve().parents[1]


class SampleRecorder(pl.Callback):
    """Records the sample indices and the local metric counts of this rank (see the module).

    Args:
        folder: where ``rank<r>.json`` is written at the end of every stage.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.record: dict[str, Any] = {"train": [], "val": [], "val_states": {}}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch is not None:
            self.record["train"].extend(int(i) for i in batch["index"])

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch is not None and not trainer.sanity_checking:
            self.record["val"].extend(int(i) for i in batch["index"])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # callbacks run before the module's own hook, which computes (syncs) and resets
        if trainer.sanity_checking:
            return
        states = self.record["val_states"]
        for name, metric in pl_module.named_modules():
            if not isinstance(metric, Metric):
                continue
            for state, reduce in metric._reductions.items():
                value = getattr(metric, state)
                if reduce is dim_zero_sum and isinstance(value, Tensor):
                    key = f"{name}.{state}"
                    states[key] = _add(states.get(key), value.double().flatten().tolist())

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))


def _add(total: list[float] | None, value: list[float]) -> list[float]:
    """Element-wise sum of two lists of numbers (``total`` may be ``None``)."""
    if total is None:
        return value
    return [t + v for t, v in zip(total, value, strict=True)]


def recorder_args(folder: Path) -> list[str]:
    """CLI arguments that add a :class:`SampleRecorder` writing into ``folder``."""
    return [
        f"--trainer.callbacks+={SampleRecorder.__module__}.{SampleRecorder.__name__}",
        f"--trainer.callbacks.folder={folder}",
    ]


def logged_args(root: Path) -> list[str]:
    """CLI arguments that log metrics to a CSV file under ``root`` (read by ``read_metrics``)."""
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        f"--trainer.default_root_dir={root}",
    ]


def importable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the repository root on ``PYTHONPATH`` so that CLI subprocesses import ``tests``."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))


def read_ranks(folder: Path, world_size: int) -> list[dict[str, Any]]:
    """The records of ranks ``0 .. world_size - 1`` (each must have written one)."""
    paths = sorted(folder.glob("rank*.json"))
    assert [p.name for p in paths] == [f"rank{r}.json" for r in range(world_size)], paths
    return [json.loads(p.read_text()) for p in paths]


def assert_partition(shares: Iterable[list[int]], expected: Iterable[int]) -> None:
    """Every rank's indices are distinct, no index is on two ranks, and together they are
    ``expected``."""
    shares = [list(s) for s in shares]
    assert all(shares), f"a rank saw no samples: {shares}"
    flat = [i for share in shares for i in share]
    assert len(flat) == len(set(flat)), f"ranks read overlapping samples: {shares}"
    assert sorted(flat) == sorted(expected), f"ranks read {sorted(flat)}"


def assert_summed_states(
    ranks: list[dict[str, Any]], single: dict[str, Any], rel: float = 1e-9
) -> None:
    """The ranks' metric counts add up to the single process's, state by state (``rel``: the
    tolerance; float32 sums such as SSIM's depend on the batches' composition to about 1e-7)."""
    keys = set(single["val_states"])
    assert keys, "no metric states were recorded"
    assert all(set(r["val_states"]) == keys for r in ranks)
    for key in sorted(keys):
        total = None
        for rank in ranks:
            total = _add(total, rank["val_states"][key])
        assert total == pytest.approx(single["val_states"][key], rel=rel, abs=1e-9), key
