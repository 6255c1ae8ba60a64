"""Batch assembly: skipping bad samples, counting them, and adding L and ab.

The batch convention of every chromalab package is a dict with ``rgb`` ``(B, 3, H, W)`` in
``[0, 1]``, ``l`` ``(B, 1, H, W)`` in ``[0, 100]``, ``ab`` ``(B, 2, H, W)`` in about
``[-110, 110]``,
optionally ``caption`` (``list[str]``) and, for generated scenes, ``masks``, ``color_ids``,
``mentioned``, ``level`` and friends. This module adds one key: ``skipped`` (``int``), the
number of samples of that batch that were dropped because they could not be used.

Datasets signal an unusable sample (unreadable file, near-grey photograph) by returning
``None`` from ``__getitem__``; :func:`collate_skip_bad` drops those and records how many.
Because the count travels inside the batch, it reaches the main process from DataLoader
worker processes too, where the per-process :class:`SkipCounter` of a dataset copy cannot
be seen. Lab conversion happens after the batch reached its device (:func:`add_lab`), so in
training it runs on the GPU.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import default_collate

from chromalab.color import rgb_to_l_ab

__all__ = ["SkipCounter", "add_lab", "collate_skip_bad"]


class SkipCounter:
    """Tally of skipped samples by reason, logging one warning per skip.

    Each dataset owns one. In DataLoader worker processes every worker updates its own
    copy, so these numbers are complete only when loading in the main process
    (``num_workers=0``); the per-batch ``skipped`` count of :func:`collate_skip_bad` is
    complete in both cases.

    Args:
        logger: where skips are reported (the dataset module's logger).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.counts: Counter[str] = Counter()

    def record(self, reason: str, source: str, detail: str) -> None:
        """Count one skipped sample and log ``"skipping <source> (<reason>): <detail>"``.

        Args:
            reason: short category, e.g. ``"unreadable"`` or ``"grayscale"``.
            source: the file path (or shard member) of the sample.
            detail: human-readable explanation.
        """
        self.counts[reason] += 1
        self.logger.warning("skipping %s (%s): %s", source, reason, detail)

    @property
    def total(self) -> int:
        """Number of samples skipped for any reason."""
        return sum(self.counts.values())

    def __repr__(self) -> str:
        return f"SkipCounter({dict(self.counts)})"


def collate_skip_bad(
    samples: Sequence[Mapping[str, Any] | None], *, keep_empty: bool = False
) -> dict[str, Any] | None:
    """Collate dict samples, dropping the ``None`` placeholders of bad samples.

    The remaining samples are merged with :func:`torch.utils.data.default_collate`
    (tensors stacked along a new batch dimension, numbers to tensors, strings to
    ``list[str]``), and ``batch["skipped"]`` is set to the number of ``None`` entries.

    Args:
        samples: what the DataLoader gathered for one batch; each item a dict with the
            same keys, or ``None``.
        keep_empty: what to return when every sample was bad: ``None`` (default), or,
            when ``True``, ``{"skipped": len(samples)}`` so that the count still reaches
            the consumer (:class:`~chromalab.data.datamodule.ColorizationDataModule` uses
            this and turns such a batch into ``None`` after counting).

    Returns:
        The batch dict, or ``None`` / ``{"skipped": n}`` when no sample was usable.

    Raises:
        TypeError: a sample is neither a mapping nor ``None``.
    """
    good = []
    for sample in samples:
        if sample is None:
            continue
        if not isinstance(sample, Mapping):
            raise TypeError(
                f"collate_skip_bad expects dict samples or None, got {type(sample).__name__}"
            )
        good.append(sample)
    skipped = len(samples) - len(good)
    if not good:
        return {"skipped": skipped} if keep_empty else None
    batch = dict(default_collate(good))
    batch["skipped"] = skipped
    return batch


def add_lab(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``batch`` with ``l`` and ``ab`` computed from ``batch["rgb"]``.

    The conversion is :func:`chromalab.color.rgb_to_l_ab` and runs on the device and in
    the dtype of ``rgb``.

    Args:
        batch: dict with ``rgb`` ``(B, 3, H, W)``, floating point, in ``[0, 1]``.

    Returns:
        A new dict with every entry of ``batch`` plus ``l`` ``(B, 1, H, W)`` in ``[0, 100]``
        and ``ab`` ``(B, 2, H, W)`` in about ``[-110, 110]`` (existing ``l``/``ab`` are
        replaced).

    Raises:
        KeyError: ``batch`` has no ``rgb``.
        TypeError: ``rgb`` is not a floating-point tensor.
        ValueError: ``rgb`` is not shaped ``(B, 3, H, W)``.
    """
    if "rgb" not in batch:
        raise KeyError(f"add_lab needs an 'rgb' entry; the batch has keys {sorted(batch)}")
    rgb = batch["rgb"]
    if not isinstance(rgb, Tensor) or not rgb.is_floating_point():
        raise TypeError(
            f"batch['rgb'] must be a floating-point tensor, got "
            f"{rgb.dtype if isinstance(rgb, Tensor) else type(rgb).__name__}"
        )
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"batch['rgb'] must have shape (B, 3, H, W), got {tuple(rgb.shape)}")
    l, ab = rgb_to_l_ab(rgb)
    out = dict(batch)
    out["l"] = l
    out["ab"] = ab
    return out
