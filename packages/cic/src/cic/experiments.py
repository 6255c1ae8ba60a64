"""Reusable training runs for the demo and the benchmarks.

:func:`ensure_trained` runs ``cic fit`` with a config and overrides unless the run's
``last.ckpt`` already reached the requested number of steps; a shorter run is resumed from its
``last.ckpt`` (``--ckpt_path last``), so re-running ``make demo`` or ``make bench`` reuses
earlier work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["CONFIGS", "ensure_trained", "trained_steps"]

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def trained_steps(checkpoint: Path) -> int:
    """Global step stored in a Lightning checkpoint (0 if it does not exist)."""
    if not checkpoint.is_file():
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def ensure_trained(
    root: str | Path,
    steps: int,
    config: str | Path = CONFIGS / "capshapes.yaml",
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Train (or finish training) a run in ``root`` up to ``steps``; returns its last.ckpt.

    Args:
        root: the run's folder (checkpoints in ``root/checkpoints``, CSV logs in ``root/logs``).
        steps: optimizer steps to reach.
        config: the ``cic fit`` config.
        overrides: extra ``cic fit`` arguments, e.g. ``["--model.lam", "1.0"]``.
        progress: show Lightning's progress bar.
    """
    from cic.cli import run

    root = Path(root)
    last = root / "checkpoints" / "last.ckpt"
    done = trained_steps(last)
    if done >= steps:
        logger.info("reusing %s (%d steps)", last, done)
        return last
    args = [
        "fit",
        "--config", str(config),
        "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.logger.name=logs",
        "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={root / 'checkpoints'}",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.every_n_train_steps=100",
        f"--trainer.enable_progress_bar={str(progress).lower()}",
        *overrides,
    ]  # fmt: skip
    if done > 0:
        logger.info("resuming %s from step %d to %d", last, done, steps)
        args += ["--ckpt_path", str(last)]
    run(args)
    return last
