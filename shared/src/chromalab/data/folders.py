"""Photographs from disk: an image-folder dataset and a captioned-image dataset.

Both datasets share one image pipeline (:func:`resize_and_crop`): the shorter side is
resized to ``image_size`` with antialiased bilinear filtering, then a square
``image_size x image_size`` window is cut out, at random with an optional horizontal flip
during training and in the centre for evaluation. All random choices come from a generator
seeded by ``(seed, epoch, index)`` (:func:`derive_seed`), never from a global RNG, so two
runs see the same pixels, whatever the number of DataLoader workers.

Following Zhang et al. (ECCV 2016, Sec. 4.2: "We also filter out grayscale images"), a
photograph whose chroma ``sqrt(a^2 + b^2)`` does not exceed ``gray_threshold`` at any pixel
is treated as greyscale and skipped. Such an image, like a file that cannot be read
(:class:`chromalab.io.ImageLoadError`), is logged, counted per reason in the dataset's
:class:`~chromalab.data.collate.SkipCounter` and returned as ``None``, which
:func:`~chromalab.data.collate.collate_skip_bad` drops; one bad file never stops a run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from chromalab.color import ab_chroma, rgb_to_l_ab
from chromalab.data.collate import SkipCounter
from chromalab.data.records import CaptionRecord
from chromalab.io import DEFAULT_MAX_PIXELS, ImageLoadError, iter_image_files, load_image

__all__ = [
    "CaptionedImageDataset",
    "ImageFolderDataset",
    "derive_seed",
    "is_near_grayscale",
    "max_chroma",
    "resize_and_crop",
    "resize_shorter_side",
]

logger = logging.getLogger(__name__)


def derive_seed(*keys: int) -> int:
    """Mix non-negative integers into one 63-bit seed (NumPy ``SeedSequence`` hashing).

    Used to seed per-sample generators from ``(seed, epoch, index)``: nearby keys give
    unrelated streams, and the result depends only on the keys.

    Raises:
        ValueError: a key is negative or not an integer.
    """
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, int | np.integer) or key < 0:
            raise ValueError(f"seed keys must be non-negative integers, got {keys!r}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def resize_shorter_side(rgb: Tensor, size: int) -> Tensor:
    """Resize ``rgb (3, H, W)`` so that its shorter side is ``size``, keeping the aspect.

    Bilinear with antialiasing (``torch.nn.functional.interpolate(..., antialias=True)``),
    so downscaling does not alias; the longer side is rounded to the nearest pixel. The
    result is clamped to ``[0, 1]``; an image already at that size is returned as is.

    Raises:
        ValueError: ``rgb`` is not ``(3, H, W)`` or ``size`` is not positive.
    """
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must have shape (3, H, W), got {tuple(rgb.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    height, width = rgb.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new_size == (height, width):
        return rgb
    resized = F.interpolate(
        rgb[None], size=new_size, mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].clamp_(0.0, 1.0)


def resize_and_crop(
    rgb: Tensor,
    size: int | None,
    rng: np.random.Generator | None = None,
    horizontal_flip: bool = False,
) -> Tensor:
    """Resize the shorter side to ``size`` and cut a ``size x size`` square.

    Args:
        rgb: image ``(3, H, W)``, float, in ``[0, 1]``.
        size: output side; ``None`` returns ``rgb`` unchanged (no resize, no crop).
        rng: when given, the crop position is drawn uniformly from it and, with
            ``horizontal_flip``, the image is mirrored with probability 1/2 (training);
            when ``None``, the centre square is taken and nothing is flipped (evaluation).
        horizontal_flip: allow the random mirror (only used with ``rng``).

    Returns:
        Tensor ``(3, size, size)`` in ``[0, 1]`` (see :func:`resize_shorter_side`).

    Raises:
        ValueError: ``rgb`` is not ``(3, H, W)`` or ``size`` is not positive.
    """
    if size is None:
        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise ValueError(f"rgb must have shape (3, H, W), got {tuple(rgb.shape)}")
        return rgb
    rgb = resize_shorter_side(rgb, size)
    height, width = rgb.shape[-2:]
    if rng is None:
        top, left = (height - size) // 2, (width - size) // 2
        flip = False
    else:
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        flip = horizontal_flip and bool(rng.random() < 0.5)
    out = rgb[:, top : top + size, left : left + size]
    return out.flip(-1) if flip else out.contiguous()


def max_chroma(rgb: Tensor) -> float:
    """Largest CIE Lab chroma ``sqrt(a^2 + b^2)`` over the pixels of ``rgb (3, H, W)``."""
    _, ab = rgb_to_l_ab(rgb)
    return float(ab_chroma(ab).max())


def is_near_grayscale(rgb: Tensor, threshold: float = 5.0) -> bool:
    """Whether no pixel of ``rgb (3, H, W)`` has chroma above ``threshold`` (Lab units).

    This is the greyscale-photo filter of Zhang et al. (ECCV 2016, Sec. 4.2) applied to
    the ImageNet training set: such images carry no colour to learn from.
    """
    return max_chroma(rgb) <= threshold


class _PhotoDataset(Dataset):
    """Shared machinery: loading, filtering, resizing and the deterministic epoch RNG."""

    def __init__(
        self,
        paths: Sequence[Path],
        image_size: int | None,
        train: bool,
        seed: int,
        filter_grayscale: bool,
        gray_threshold: float,
        horizontal_flip: bool,
        max_pixels: int,
    ) -> None:
        if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
            raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if gray_threshold < 0:
            raise ValueError(f"gray_threshold must be >= 0, got {gray_threshold!r}")
        self.paths = list(paths)
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.filter_grayscale = filter_grayscale
        self.gray_threshold = gray_threshold
        self.horizontal_flip = horizontal_flip
        self.max_pixels = max_pixels
        self.skip_counter = SkipCounter(logger)
        # A shared-memory scalar: set_epoch in the main process is seen by DataLoader
        # worker processes, including persistent ones, which hold copies of the dataset.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def epoch(self) -> int:
        """The epoch that seeds the random crops, flips and caption choices."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices :meth:`__getitem__` makes.

        Raises:
            ValueError: ``epoch`` is negative.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch.fill_(epoch)

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped by this process so far, by reason (``unreadable``, ``grayscale``)."""
        return dict(self.skip_counter.counts)

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        return index % len(self)

    def _rng(self, index: int) -> np.random.Generator | None:
        if not self.train:
            return None
        return np.random.default_rng(derive_seed(self.seed, self.epoch, index))

    def _load(self, path: Path, rng: np.random.Generator | None) -> Tensor | None:
        """The prepared image, or ``None`` (logged and counted) when it cannot be used."""
        try:
            rgb = load_image(path, max_pixels=self.max_pixels)
        except ImageLoadError as error:
            self.skip_counter.record("unreadable", error.path, error.reason)
            return None
        if self.image_size is not None:
            # Resize before the grey check (cheap on large photos) and crop after it, so
            # the decision depends on the file only, not on the epoch's crop.
            rgb = resize_shorter_side(rgb, self.image_size)
        if self.filter_grayscale:
            chroma = max_chroma(rgb)
            if chroma <= self.gray_threshold:
                self.skip_counter.record(
                    "grayscale",
                    os.fspath(path),
                    f"near-greyscale photo (max chroma {chroma:.2f} <= {self.gray_threshold})",
                )
                return None
        return resize_and_crop(rgb, self.image_size, rng, self.horizontal_flip)


class ImageFolderDataset(_PhotoDataset):
    """Colour photographs found under a folder (ImageNet layout or flat).

    Every file with an image suffix (:data:`chromalab.io.IMAGE_EXTENSIONS`) under ``root``
    is a sample, in sorted path order, so class sub-folders (``n01440764/...``) and flat
    folders both work.

    Args:
        root: the folder (searched recursively).
        image_size: side of the square output; ``None`` keeps each image whole (then
            batches need ``batch_size=1`` or images of one size).
        train: random crops (and flips) seeded by ``(seed, epoch, index)``; otherwise
            centre crops.
        seed: non-negative base seed of the random choices.
        filter_grayscale: skip near-greyscale photos (Zhang et al., ECCV 2016, Sec. 4.2).
        gray_threshold: a photo is near-greyscale when its chroma never exceeds this value
            (CIE Lab units).
        horizontal_flip: mirror half of the training samples.
        max_pixels: largest accepted image, see :func:`chromalab.io.load_image`.

    Items are dicts with ``rgb`` ``(3, S, S)`` float32 in ``[0, 1]`` and ``path`` (``str``),
    or ``None`` for a skipped file (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` holds no image file, or an argument is out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int | None = 256,
        train: bool = False,
        seed: int = 0,
        filter_grayscale: bool = True,
        gray_threshold: float = 5.0,
        horizontal_flip: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        paths = iter_image_files(root, recursive=True)
        if not paths:
            raise ValueError(f"no image files under {os.fspath(root)!r}")
        super().__init__(
            paths,
            image_size,
            train,
            seed,
            filter_grayscale,
            gray_threshold,
            horizontal_flip,
            max_pixels,
        )
        self.root = Path(root)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = self._check_index(index)
        path = self.paths[index]
        rgb = self._load(path, self._rng(index))
        if rgb is None:
            return None
        return {"rgb": rgb, "path": os.fspath(path)}


class CaptionedImageDataset(_PhotoDataset):
    """Photographs with captions, from :class:`~chromalab.data.records.CaptionRecord` lists.

    Image handling is that of :class:`ImageFolderDataset`. During training one of the
    image's captions is drawn per step from the ``(seed, epoch, index)`` generator, so every
    caption is seen over the epochs; for evaluation the first caption is used.

    Args:
        records: the images and their captions (e.g. from
            :func:`~chromalab.data.records.load_caption_records`).
        image_size, train, seed, filter_grayscale, gray_threshold, max_pixels: as in
            :class:`ImageFolderDataset`.
        horizontal_flip: mirror half of the training samples. Off by default: captions may
            say "on the left".

    Items are dicts with ``rgb`` ``(3, S, S)`` float32 in ``[0, 1]``, ``caption`` (``str``)
    and ``path`` (``str``), or ``None`` for a skipped file.

    Raises:
        ValueError: ``records`` is empty, or an argument is out of range.
        TypeError: an entry of ``records`` is not a ``CaptionRecord``.
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        image_size: int | None = 256,
        train: bool = False,
        seed: int = 0,
        filter_grayscale: bool = True,
        gray_threshold: float = 5.0,
        horizontal_flip: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        records = list(records)
        if not records:
            raise ValueError("CaptionedImageDataset needs at least one CaptionRecord")
        for i, record in enumerate(records):
            if not isinstance(record, CaptionRecord):
                raise TypeError(f"records[{i}] is {type(record).__name__}, not a CaptionRecord")
        super().__init__(
            [r.image for r in records],
            image_size,
            train,
            seed,
            filter_grayscale,
            gray_threshold,
            horizontal_flip,
            max_pixels,
        )
        self.records = records

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = self._check_index(index)
        record = self.records[index]
        rng = self._rng(index)
        if rng is None:
            caption = record.captions[0]
        else:
            caption = record.captions[int(rng.integers(0, len(record.captions)))]
        rgb = self._load(record.image, rng)
        if rgb is None:
            return None
        return {"rgb": rgb, "caption": caption, "path": os.fspath(record.image)}
