"""Bounded training runs that are reused: what the demos and the benchmarks train.

:func:`train_or_reuse` runs a package's ``fit`` command (``cic.cli.run``, ``film_color.cli.run``,
...) into a folder unless the folder's ``checkpoints/last.ckpt`` already reached the requested
number of steps; a shorter run is resumed exactly from it (``--ckpt_path``), so re-running
``make demo`` or ``make bench`` reuses earlier work and finishes interrupted work.

The run's layout, whatever the config says::

    root/checkpoints/last.ckpt   (ModelCheckpoint, save_last, every ``checkpoint_every`` steps)
    root/logs/version_N/         (CSVLogger)
    root/train_info.json         ({"steps": ..., "seconds": ...}: cumulated training time)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch

__all__ = ["RunResult", "last_checkpoint", "score", "train_or_reuse", "trained_steps"]

logger = logging.getLogger(__name__)

#: ``(last.ckpt, cumulated training seconds or None when unknown)``
RunResult = tuple[Path, float | None]


def trained_steps(checkpoint: str | Path) -> int:
    """The ``global_step`` stored in a Lightning checkpoint (0 if the file does not exist)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return 0
    # our own checkpoints: Lightning stores its loop state, which weights_only cannot read
    blob = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return int(blob["global_step"])


def last_checkpoint(root: str | Path) -> Path:
    """``root/checkpoints/last.ckpt``: where :func:`train_or_reuse` keeps a run's checkpoint."""
    return Path(root) / "checkpoints" / "last.ckpt"


def train_or_reuse(
    run: Callable[[list[str]], Any],
    root: str | Path,
    config: str | Path | Sequence[str | Path],
    steps: int,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    retrain: bool = False,
    checkpoint_every: int = 100,
) -> RunResult:
    """Train (or finish training) a run in ``root`` up to ``steps`` optimizer steps.

    Args:
        run: a package's LightningCLI entry point taking an argument list (``cic.cli.run``).
        root: the run's folder (see the module documentation for its layout).
        config: the ``fit`` config file, or several, applied in order (``--config`` each).
        steps: optimizer steps to reach.
        overrides: further ``fit`` arguments, e.g. ``["--model.init_from", path]``.
        progress: show Lightning's progress bar.
        retrain: start from scratch even when ``root`` holds a checkpoint.
        checkpoint_every: save ``last.ckpt`` every this many steps (and at the end).

    Returns:
        ``(last.ckpt, seconds)``: the cumulated training wall time over the runs that made the
        checkpoint, ``None`` when unknown (a checkpoint found without ``train_info.json``).
    """
    root = Path(root)
    last = last_checkpoint(root)
    info_path = root / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() and not retrain else {}
    done = 0 if retrain else trained_steps(last)
    if done >= steps:
        logger.info("reusing %s (%d steps)", last, done)
        return last, info.get("seconds")
    configs = [config] if isinstance(config, str | Path) else list(config)
    args = [
        "fit",
        *(arg for path in configs for arg in ("--config", str(path))),
        "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.logger.name=logs",
        "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={root / 'checkpoints'}",
        "--trainer.callbacks.save_last=true",
        f"--trainer.callbacks.every_n_train_steps={checkpoint_every}",
        f"--trainer.enable_progress_bar={str(progress).lower()}",
        *overrides,
    ]  # fmt: skip
    if done > 0:
        logger.info("resuming %s from step %d to %d", last, done, steps)
        args += ["--ckpt_path", str(last)]
    elif last.exists():  # retrain: Lightning would version the new file beside the old one
        last.unlink()
    argv, sys.argv = sys.argv, [sys.argv[0]]  # LightningCLI(args=...) must not see the caller's
    start = time.perf_counter()
    try:
        cli = run(args)
    finally:
        sys.argv = argv
    trainer = getattr(cli, "trainer", None)
    if trainer is not None and trained_steps(last) < trainer.global_step:
        # ModelCheckpoint saves every `checkpoint_every` steps and at epoch ends; a run whose
        # max_steps falls between them, mid-epoch, ends without saving its last steps
        trainer.save_checkpoint(last)
    earlier = (info.get("seconds") or 0.0) if done > 0 else 0.0
    seconds = time.perf_counter() - start + earlier
    if not last.is_file():
        raise RuntimeError(f"training into {root} wrote no {last}")
    root.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps({"steps": trained_steps(last), "seconds": seconds}))
    return last, seconds


def score(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    split: Literal["val", "test"] = "test",
    progress: bool = False,
) -> dict[str, float]:
    """A module's own metrics on the ``val`` or ``test`` split of ``datamodule``, through
    Lightning's ``validate``/``test`` loop on one device: ``{name: value}`` with the stage
    prefix removed (``"test/psnr"`` -> ``"psnr"``)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loop = trainer.validate if split == "val" else trainer.test
    (metrics,) = loop(module, datamodule=datamodule, verbose=False)
    return {k.split("/", 1)[1]: float(v) for k, v in metrics.items()}
