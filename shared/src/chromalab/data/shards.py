"""Streaming photographs (and captions) from WebDataset tar shards.

A shard is a tar file whose members sharing a basename form one sample: ``0001.jpg`` (or
``.jpeg``/``.png``/``.webp``/...), optionally ``0001.txt`` (the caption) and/or
``0001.json`` (with a ``caption`` string or a ``captions`` list). This is the layout that
``img2dataset`` writes for LAION/CC-style collections and that ``webdataset.TarWriter``
produces.

:func:`make_shard_dataset` builds a ``webdataset`` pipeline that

1. orders the shards (shuffled per epoch from ``(seed, epoch)`` when training, identical
   on every node), gives shard ``i`` to node ``i % world_size`` and, within a node, to
   DataLoader worker ``(i // world_size) % num_workers``, so every sample is read once
   per epoch across all processes;
2. reads samples with ``webdataset.tarfile_to_samples`` and optionally shuffles them in a
   buffer seeded from ``(seed, epoch, rank, worker)``;
3. decodes each image like :func:`chromalab.io.load_image` does for files and prepares it
   like the folder datasets (:func:`chromalab.data.folders.resize_and_crop`, random crop
   and flip seeded from ``(seed, epoch, key)``, near-grey filter).

A broken member (bytes that are not an image, a truncated image, a bad JSON caption) or
a broken shard goes to a webdataset exception handler that logs it, counts it in the
dataset's :class:`~chromalab.data.collate.SkipCounter` and lets the stream continue.
"""

from __future__ import annotations

import json
import logging
import os
import random
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from chromalab.data.collate import SkipCounter
from chromalab.data.folders import derive_seed, max_chroma, resize_and_crop, resize_shorter_side
from chromalab.io import DEFAULT_MAX_PIXELS, ImageLoadError, decode_image

__all__ = ["IMAGE_MEMBER_SUFFIXES", "ShardDataset", "make_shard_dataset"]

logger = logging.getLogger(__name__)

#: Member suffixes (lower case, without the dot) read as the sample's image, in this order.
IMAGE_MEMBER_SUFFIXES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")


class _GrayscaleSample(Exception):
    """Raised inside the pipeline for a near-greyscale photo, so the handler counts it."""

    def __init__(self, name: str, chroma: float, threshold: float) -> None:
        self.name, self.chroma, self.threshold = name, chroma, threshold
        super().__init__(f"{name}: near-greyscale photo (max chroma {chroma:.2f} <= {threshold})")


def _distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed, the environment, or ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


class ShardDataset(IterableDataset):
    """Iterable dataset over WebDataset shards; build it with :func:`make_shard_dataset`.

    Each ``iter()`` is one epoch. The epoch number seeds the shard order, the shuffle
    buffer and the crops: it starts at 0 (or the value given to :meth:`set_epoch`) and
    increases by one per ``iter()`` in each process. Persistent DataLoader workers and the
    main process therefore agree on it; with non-persistent workers call
    :meth:`set_epoch` before each epoch (each epoch then starts from fresh copies).

    Items are dicts with ``rgb`` ``(3, S, S)`` float32 in ``[0, 1]``, ``key`` (the sample's
    basename), ``url`` (its shard) and, unless ``caption_keys`` is empty, ``caption``
    (``str``; ``""`` for a sample without caption member). With ``emit_none_for_bad`` a
    bad sample is yielded as ``None`` instead of being dropped, so that
    :func:`~chromalab.data.collate.collate_skip_bad` counts it in the batch.
    """

    def __init__(
        self,
        urls: Sequence[str],
        image_size: int | None,
        train: bool,
        seed: int,
        shuffle_buffer: int,
        caption_keys: Sequence[str],
        rank: int | None,
        world_size: int | None,
        filter_grayscale: bool,
        gray_threshold: float,
        horizontal_flip: bool,
        max_pixels: int,
        emit_none_for_bad: bool,
    ) -> None:
        super().__init__()
        self.urls = list(urls)
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.caption_keys = tuple(caption_keys)
        self.rank = rank
        self.world_size = world_size
        self.filter_grayscale = filter_grayscale
        self.gray_threshold = gray_threshold
        self.horizontal_flip = horizontal_flip
        self.max_pixels = max_pixels
        self.emit_none_for_bad = emit_none_for_bad
        self.skip_counter = SkipCounter(logger)
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` run epoch ``epoch``.

        Raises:
            ValueError: ``epoch`` is negative.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._next_epoch = epoch

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped by this process so far, by reason."""
        return dict(self.skip_counter.counts)

    def _handle(self, error: Exception) -> bool:
        """webdataset exception handler: log, count, and continue with the stream."""
        if isinstance(error, ImageLoadError):
            self.skip_counter.record("unreadable", error.path, error.reason)
        elif isinstance(error, _GrayscaleSample):
            self.skip_counter.record("grayscale", error.name, str(error))
        else:
            detail = f"{type(error).__name__}: {error}"
            self.skip_counter.record("broken", "webdataset sample", detail)
        return True

    def _node(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return _distributed_rank()

    def _caption(self, sample: dict[str, Any], rng: np.random.Generator | None) -> str:
        name = f"{sample.get('__url__')}:{sample['__key__']}"
        for key in self.caption_keys:
            if key not in sample:
                continue
            try:
                text = sample[key].decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{name}.{key}: caption member is not UTF-8") from error
            if key == "json":
                try:
                    meta = json.loads(text)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{name}.json: invalid JSON ({error})") from error
                if not isinstance(meta, dict):
                    raise ValueError(f"{name}.json: expected a JSON object, got {meta!r}")
                captions = meta.get("captions", meta.get("caption"))
                if captions is None:
                    continue
                if isinstance(captions, str):
                    captions = [captions]
                if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                    raise ValueError(f"{name}.json: captions must be strings, got {captions!r}")
            else:
                captions = [text]
            captions = [c.strip() for c in captions if c.strip()]
            if captions:
                if rng is None:
                    return captions[0]
                return captions[int(rng.integers(0, len(captions)))]
        return ""

    def _decode(self, sample: dict[str, Any], epoch: int) -> dict[str, Any]:
        key = sample["__key__"]
        url = sample.get("__url__", "")
        suffix = next((s for s in IMAGE_MEMBER_SUFFIXES if s in sample), None)
        if suffix is None:
            raise ImageLoadError(f"{url}:{key}", f"no image member (found {sorted(sample)})")
        name = f"{url}:{key}.{suffix}"
        rng = None
        if self.train:
            rng = np.random.default_rng(derive_seed(self.seed, epoch, zlib.crc32(key.encode())))
        caption = self._caption(sample, rng) if self.caption_keys else None
        rgb = decode_image(sample[suffix], name, max_pixels=self.max_pixels)
        if self.image_size is not None:
            rgb = resize_shorter_side(rgb, self.image_size)
        if self.filter_grayscale:
            chroma = max_chroma(rgb)
            if chroma <= self.gray_threshold:
                raise _GrayscaleSample(name, chroma, self.gray_threshold)
        item: dict[str, Any] = {
            "rgb": resize_and_crop(rgb, self.image_size, rng, self.horizontal_flip),
            "key": key,
            "url": url,
        }
        if caption is not None:
            item["caption"] = caption
        return item

    def _decode_stage(self, source: Iterator[dict[str, Any]], epoch: int) -> Iterator[Any]:
        for sample in source:
            try:
                yield self._decode(sample, epoch)
            except Exception as error:
                if not self._handle(error):
                    break
                if self.emit_none_for_bad:
                    yield None

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        epoch = self._next_epoch
        self._next_epoch += 1
        rank, world_size = self._node()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        urls = list(self.urls)
        if self.train:
            random.Random(derive_seed(self.seed, epoch)).shuffle(urls)
        mine = urls[rank::world_size][worker::num_workers]
        if not mine:
            return iter(())
        stages: list[Any] = [
            wds.SimpleShardList(mine),
            wds.tarfile_to_samples(handler=self._handle),
        ]
        if self.train and self.shuffle_buffer > 1:
            rng = random.Random(derive_seed(self.seed, epoch, rank, worker))
            stages.append(wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 100), rng=rng))
        stages.append(lambda source: self._decode_stage(source, epoch))
        return iter(wds.DataPipeline(*stages))


def make_shard_dataset(
    urls: str | Sequence[str],
    image_size: int | None = 256,
    train: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 0,
    caption_keys: Sequence[str] = ("txt", "json"),
    rank: int | None = None,
    world_size: int | None = None,
    *,
    filter_grayscale: bool = True,
    gray_threshold: float = 5.0,
    horizontal_flip: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    emit_none_for_bad: bool = False,
) -> ShardDataset:
    """Build a streaming dataset over WebDataset shards.

    Args:
        urls: a brace pattern (``"data/train-{0000..0127}.tar"``, several joined with
            ``"::"``) or a list of shard paths/URLs that ``webdataset.gopen`` can open.
        image_size: side of the square output; ``None`` keeps each image whole.
        train: shuffle shards per epoch, random crops (and flips); otherwise shards in
            order and centre crops.
        seed: non-negative base seed of every random choice.
        shuffle_buffer: size of the sample shuffle buffer when training (0 or 1: off).
        caption_keys: member suffixes read as the caption, first match wins: ``"json"`` is
            an object with ``captions`` (list) or ``caption``; any other suffix (``"txt"``)
            is UTF-8 text. Empty: items carry no ``caption``.
        rank, world_size: this node's place among the training processes; by default
            taken from ``torch.distributed`` (when initialised) or ``RANK``/``WORLD_SIZE``.
        filter_grayscale: skip near-greyscale photos (Zhang et al., ECCV 2016, Sec. 4.2).
        gray_threshold: the chroma (Lab units) a photo must exceed somewhere to be kept.
        horizontal_flip: mirror half of the training samples (off: captions may say "left").
        max_pixels: largest accepted image, see :func:`chromalab.io.decode_image`.
        emit_none_for_bad: yield ``None`` for a bad sample instead of dropping it.

    Returns:
        A :class:`ShardDataset`. Give the node at least ``num_workers`` shards, and every
        node the same number of samples, or DDP ranks will run unequal epochs.

    Raises:
        ValueError: no shard, a bad rank/world size, or an argument out of range.
    """
    url_list = wds.shardlists.expand_urls(urls) if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError(f"no shard matches {urls!r}")
    if (rank is None) != (world_size is None):
        raise ValueError(f"give both rank and world_size or neither, got {rank=}, {world_size=}")
    if world_size is not None and (world_size < 1 or not 0 <= rank < world_size):
        raise ValueError(f"need 0 <= rank < world_size, got {rank=}, {world_size=}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer!r}")
    return ShardDataset(
        url_list,
        image_size,
        train,
        seed,
        shuffle_buffer,
        caption_keys,
        rank,
        world_size,
        filter_grayscale,
        gray_threshold,
        horizontal_flip,
        max_pixels,
        emit_none_for_bad,
    )
