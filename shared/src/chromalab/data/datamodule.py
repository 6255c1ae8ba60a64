"""The one configurable Lightning DataModule that every chromalab package trains on.

:class:`ColorizationDataModule` serves four sources behind one set of typed arguments, so
a package's YAML config picks its data with a couple of keys and LightningCLI (through
jsonargparse) validates them:

* ``capshapes`` — generated captioned scenes (:class:`chromalab.data.capshapes.CapShapes`),
  the CPU-minutes dataset; needs no path;
* ``folder`` — photographs in a folder tree, ImageNet layout
  (:class:`~chromalab.data.folders.ImageFolderDataset`);
* ``captions`` — photographs with captions from a COCO / JSON-lines / name-to-captions /
  name-caption-pairs file (:class:`~chromalab.data.folders.CaptionedImageDataset`);
* ``webdataset`` — tar shards streamed with ``webdataset``
  (:func:`~chromalab.data.shards.make_shard_dataset`).

Batches follow the chromalab convention: ``rgb`` ``(B, 3, H, W)`` in ``[0, 1]``,
``l`` ``(B, 1, H, W)`` in
``[0, 100]`` and ``ab`` ``(B, 2, H, W)`` (computed on the device by
:meth:`ColorizationDataModule.on_after_batch_transfer`, hence on the GPU in training),
``caption`` (``list[str]``) where the source has captions, the CapShapes annotations
(``masks``, ``color_ids``, ``mentioned``, ``level``, ...), ``path``/``key`` identifying
photos, and ``skipped`` (``int``), the number of bad samples dropped from the batch.

Reproducibility: training order comes from :class:`EpochShuffleSampler`, a permutation
drawn from a ``torch.Generator`` seeded by ``(seed, epoch)``; random crops come from
``(seed, epoch, index)``. Two runs with the same ``seed`` therefore see identical batches,
with any number of workers.

Resuming: the training loader (:class:`ResumableDataLoader`) is checkpointed with its epoch and
the number of batches it yielded, so a run resumed from a mid-epoch checkpoint
(``--ckpt_path last``) goes on with the next unseen batch of that epoch's order, on every DDP
rank, instead of starting the epoch again (map-style sources; a ``webdataset`` stream restarts
its epoch). Training batches are whole (``drop_last``) whenever the data allows one per rank,
which makes the resumed batches exactly those of an uninterrupted run. Under DDP rank ``r`` takes
items ``r, r + world, ...`` of the epoch's order (Lightning's position shuffle is undone, see
:class:`ResumableDataLoader`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sized
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from chromalab.data.capshapes import CapShapes
from chromalab.data.collate import add_lab, collate_skip_bad
from chromalab.data.folders import CaptionedImageDataset, ImageFolderDataset, derive_seed
from chromalab.data.records import CaptionFormat, load_caption_records
from chromalab.data.shards import make_shard_dataset

__all__ = ["ColorizationDataModule", "EpochShuffleSampler", "ResumableDataLoader"]

Source = Literal["capshapes", "folder", "captions", "webdataset"]
_SOURCES = ("capshapes", "folder", "captions", "webdataset")
_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


class EpochShuffleSampler(Sampler[int]):
    """Sampler whose order depends only on ``(seed, epoch)``, and which tells the dataset.

    Lightning calls :meth:`set_epoch` at the start of every training epoch (directly, or
    through its ``DistributedSamplerWrapper`` under DDP, which forwards it). The sampler
    then forwards the epoch to ``data_source.set_epoch`` when the dataset has one, so
    per-sample random choices (crops, flips, captions) change with the epoch too.

    Resuming mid-epoch: with ``start = s`` a pass yields the epoch's order rotated to begin at
    its ``s``-th index (``order[s:] + order[:s]``). The pass keeps all ``n`` indices, as
    Lightning's ``DistributedSamplerWrapper`` needs (it shards ``range(len(sampler))``), and the
    rotation commutes with its strided sharding and end padding: with ``s`` = batches consumed
    per rank x batch size x world size, every rank's next ``drop_last`` batches are exactly the
    ones it would have drawn next without the interruption (the training loop stops at the
    epoch's length, before the rotated-in head comes round). ``start`` only applies to the
    epoch it was set for: :meth:`set_epoch` with another epoch resets it to 0.

    Args:
        data_source: the map-style dataset (only its length and ``set_epoch`` are used).
        seed: non-negative base seed of the permutation.
        shuffle: draw a permutation; ``False`` gives ``0, 1, ..., n-1``.
        start: position in the epoch's order at which passes begin (see above).
        group: consecutive indices that stay together, in order (``0, 1`` then ``6, 7``, ...
            for 2): the permutation moves whole groups (a last, shorter group keeps its place
            in the draw). For datasets whose neighbouring items belong together, such as
            :class:`~chromalab.data.CapShapes` with ``counterfactual_pairs``.
    """

    def __init__(
        self,
        data_source: Sized,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
        group: int = 1,
    ) -> None:
        for name, value, low in (("seed", seed, 0), ("start", start, 0), ("group", group, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.data_source = data_source
        self.seed = seed
        self.shuffle = shuffle
        self.start = start
        self.group = group
        self.epoch = 0
        #: the epoch number last given to :meth:`set_epoch` (by the trainer); :attr:`epoch` is
        #: the epoch whose order is drawn, which :class:`ResumableDataLoader` may set otherwise
        self.requested_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration and forward it to the dataset.

        A different epoch than the current one resets :attr:`start` to 0.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.requested_epoch = epoch
        self.place(epoch, self.start if epoch == self.epoch else 0)

    def place(self, epoch: int, start: int) -> None:
        """Draw the next passes from ``epoch``'s order rotated by ``start`` (see above), and tell
        the dataset the epoch; unlike :meth:`set_epoch`, :attr:`requested_epoch` is kept."""
        self.epoch, self.start = epoch, start
        set_dataset_epoch = getattr(self.data_source, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(epoch)

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            groups = -(-n // self.group)
            blocks = torch.randperm(groups, generator=generator)
            order_t = (blocks[:, None] * self.group + torch.arange(self.group)).flatten()
            order = order_t[order_t < n].tolist()
        else:
            order = list(range(n))
        start = self.start % n if n else 0
        return iter(order[start:] + order[:start])


class ResumableDataLoader(DataLoader):
    """Training loader that keeps its own place in the epochs, which Lightning checkpoints.

    Lightning saves the ``state_dict`` of every training loader that has one with each
    checkpoint and hands it back, before the first batch is drawn, when a run resumes. The
    state is the epoch and the number of batches this loader has yielded in it; the next pass
    after :meth:`load_state_dict` draws that epoch's order rotated past the samples all ranks had
    consumed (:class:`EpochShuffleSampler`), so a run resumed from a mid-epoch checkpoint goes on
    with the next unseen batch instead of starting the epoch again.

    The loader counts the epochs itself. The trainer's :meth:`EpochShuffleSampler.set_epoch`
    before each pass only says that a new epoch begins (by how much its number changed), not
    which one: Lightning 2.6 numbers them from a progress counter that a run resumed from a
    checkpoint written at an epoch's last batch leaves one behind in the checkpoints it writes
    next, so a second resume used to replay the previous epoch's order under the next epoch's
    number (tests/core/test_datamodule.py, ``test_resume_twice``). The first pass of a new loader
    follows the sampler's epoch and ``start``; a pass whose epoch number did not change replays
    that epoch from its beginning.

    Why not torchdata's ``StatefulDataLoader``: measured in its place (torchdata 0.11.0, same
    sampler, Lightning 2.6.6, the 26-step run of ``TestResumePosition``), the resumed runs saw
    other batches than the uninterrupted one: 7 of 26 after a resume inside an epoch, 6 after
    one at an epoch's end, 16 after two resumes, with 0 or 1 workers. Making it exact would
    take a sampler with a state of its own (the same epoch and position as here) and this epoch
    count anyway, for a dependency.

    Args:
        order: the :class:`EpochShuffleSampler` behind ``sampler``: ``sampler`` itself, or the
            sampler Lightning wrapped in its ``DistributedSamplerWrapper`` (Lightning
            re-creates the loader with the wrapper and passes ``order`` on unchanged; a
            wrapper that shuffles is replaced by one that keeps the order, rank ``r`` taking
            items ``r, r + world, ...``).
        args, kwargs: those of :class:`torch.utils.data.DataLoader`; use ``drop_last=True``
            for exact resumes (a partial last batch would shift the rotated batches).
    """

    def __init__(self, *args: Any, order: EpochShuffleSampler, **kwargs: Any) -> None:
        shard = kwargs.get("sampler")
        if isinstance(shard, DistributedSampler) and shard.shuffle:
            # Lightning shards every training sampler with a DistributedSamplerWrapper that
            # shuffles the positions (seeded by its own epoch): the rotated order of a resumed
            # epoch would reach the ranks in another arrangement (measured: a 2-process run
            # resumed mid-epoch trained on other batches). The same shards, unshuffled, keep it.
            kwargs["sampler"] = DistributedSamplerWrapper(
                order,
                num_replicas=shard.num_replicas,
                rank=shard.rank,
                shuffle=False,
                drop_last=shard.drop_last,
            )
        super().__init__(*args, **kwargs)
        self.order = order
        self._epoch = order.epoch
        self._batches = 0
        self._resumed = False
        self._requested: int | None = None  # the trainer's epoch number of the last pass

    def _samples_per_batch(self) -> int:
        """Samples one batch index of this loader advances the global order by."""
        world = self.sampler.num_replicas if isinstance(self.sampler, DistributedSampler) else 1
        return int(self.batch_size or 1) * world

    def __iter__(self) -> Iterator[Any]:
        requested = self.order.requested_epoch
        if self._requested is None:  # the first pass
            if not self._resumed:
                self._epoch = self.order.epoch
                self._batches = self.order.start // self._samples_per_batch()
        elif requested != self._requested:  # the trainer began another epoch
            self._epoch, self._batches = max(0, self._epoch + requested - self._requested), 0
        else:
            self._batches = 0
        self._requested, self._resumed = requested, False
        self.order.place(self._epoch, self._batches * self._samples_per_batch())
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": k}``: ``k`` batches of epoch ``e`` were yielded."""
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Go on after the checkpoint's last batch (the next epoch if none is left)."""
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if batches >= len(self):  # the checkpoint closed its epoch
            epoch, batches = epoch + 1, 0
        self._epoch, self._batches = epoch, batches
        self._resumed, self._requested = True, None
        self.order.place(epoch, batches * self._samples_per_batch())


_CAPSHAPES_OPTIONS = (
    "max_objects",
    "min_objects",
    "shared_noun_prob",
    "level_probs",
    "canonical_prob",
    "canonical_colors",
    "counterfactual_pairs",
    "held_out_pairs",
    "held_out",
)


def _capshapes_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Checked copy of CapShapes keyword arguments (values are checked by a trial scene set)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_CAPSHAPES_OPTIONS))
    if unknown:
        raise ValueError(f"{name}: unknown CapShapes options {unknown}; use {_CAPSHAPES_OPTIONS}")
    if "level_probs" in options:
        options["level_probs"] = tuple(float(p) for p in options["level_probs"])
    try:
        CapShapes(length=1, size=16, **options)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    return options


class ColorizationDataModule(pl.LightningDataModule):
    """Data for every chromalab model: generated scenes, photo folders, captions, shards.

    Args:
        source: where samples come from: ``"capshapes"`` (generated, no path needed),
            ``"folder"``, ``"captions"`` or ``"webdataset"``.
        train_path: training data: a directory (folder), a caption file (captions) or a
            shard pattern such as ``"train-{0000..0099}.tar"`` (webdataset).
        val_path: validation data, same kinds as ``train_path``; without it (and not
            capshapes) there is no validation.
        test_path: test data, same kinds as ``train_path``.
        predict_path: data for ``predict``, same kinds as ``train_path``; for capshapes the
            test scenes are used.
        image_root: folder the image names of a caption file are relative to (default: the
            caption file's folder), or one such folder per split, a mapping with keys among
            ``train``, ``val``, ``test``, ``predict`` (MSCOCO keeps ``train2014/`` and
            ``val2014/`` apart from ``annotations/``); a split it leaves out uses the
            caption file's folder.
        caption_format: layout of the caption files: ``"auto"`` (detect), ``"coco"``,
            ``"jsonl"``, ``"name-to-captions"`` or ``"name-caption-pairs"``
            (:data:`~chromalab.data.records.CaptionFormat`).
        image_size: side of the square training crops (photo sources).
        eval_image_size: side of the centre crops for validation/test/predict (default:
            ``image_size``).
        batch_size: training batch size.
        eval_batch_size: batch size for validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (persistent when > 0).
        seed: non-negative seed of the training order, crops, flips and caption choice,
            and of the CapShapes scenes (validation and test scenes use ``seed + 1`` and
            ``seed + 2``, so they differ from the training scenes).
        filter_grayscale: skip near-greyscale photos (Zhang et al., ECCV 2016, Sec. 4.2).
        gray_threshold: a photo is near-greyscale when its Lab chroma never exceeds this.
        horizontal_flip: mirror half of the training photos; default (``None``): on for
            ``folder``, off for sources with captions (they may say "left"/"right").
        shuffle_buffer: sample shuffle buffer of the webdataset training stream.
        capshapes_train_length: number of generated training scenes.
        capshapes_val_length: number of generated validation (and test) scenes.
        capshapes_size: side of the generated scenes.
        capshapes_options: further :class:`CapShapes` arguments for every split
            (``max_objects``, ``min_objects``, ``shared_noun_prob``, ``level_probs``,
            ``canonical_prob``, ``canonical_colors``, ``counterfactual_pairs``,
            ``held_out_pairs``, ``held_out``).
        capshapes_train_options: :class:`CapShapes` arguments for the training split only,
            over ``capshapes_options``: a training distribution that differs from the one
            evaluated on (e.g. fewer objects per scene, more colour words per caption).
        pin_memory: pin host memory of batches (faster host-to-GPU copies).

    Attributes:
        skipped_samples: bad samples dropped from the batches this module has delivered
            (counted in :meth:`on_after_batch_transfer`, so it includes samples skipped in
            worker processes; per process under DDP).
    """

    def __init__(
        self,
        source: Source = "capshapes",
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        image_root: str | dict[str, str] | None = None,
        caption_format: CaptionFormat = "auto",
        image_size: int = 176,
        eval_image_size: int | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        filter_grayscale: bool = True,
        gray_threshold: float = 5.0,
        horizontal_flip: bool | None = None,
        shuffle_buffer: int = 1000,
        capshapes_train_length: int = 20_000,
        capshapes_val_length: int = 512,
        capshapes_size: int = 64,
        capshapes_options: dict[str, Any] | None = None,
        capshapes_train_options: dict[str, Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
        for name, value in (
            ("image_size", image_size),
            ("batch_size", batch_size),
            ("capshapes_train_length", capshapes_train_length),
            ("capshapes_val_length", capshapes_val_length),
            ("capshapes_size", capshapes_size),
            ("eval_image_size", eval_image_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
        self.capshapes_options = _capshapes_options("capshapes_options", capshapes_options)
        self.capshapes_train_options = _capshapes_options(
            "capshapes_train_options", capshapes_train_options
        )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.save_hyperparameters()
        self.source = source
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        self.predict_path = predict_path
        if isinstance(image_root, dict):
            unknown = sorted(set(image_root) - {"train", "val", "test", "predict"})
            if unknown:
                raise ValueError(
                    f"image_root keys must be among train, val, test, predict; got {unknown}"
                )
        self.image_root = image_root
        self.caption_format = caption_format
        self.image_size = image_size
        self.eval_image_size = eval_image_size if eval_image_size is not None else image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.filter_grayscale = filter_grayscale
        self.gray_threshold = gray_threshold
        self.horizontal_flip = source == "folder" if horizontal_flip is None else horizontal_flip
        self.shuffle_buffer = shuffle_buffer
        self.capshapes_train_length = capshapes_train_length
        self.capshapes_val_length = capshapes_val_length
        self.capshapes_size = capshapes_size
        self.pin_memory = pin_memory
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None
        self.skipped_samples = 0

    # ------------------------------------------------------------------ datasets
    def _build(self, split: str, path: str | None, stage: str | None = None) -> Dataset | None:
        """Dataset of one split (``train``/``val``/``test``) read from ``path``; ``stage``
        ``"predict"`` picks the predict entry of a per-split ``image_root``."""
        train = split == "train"
        if self.source == "capshapes":
            length = self.capshapes_train_length if train else self.capshapes_val_length
            seed = self.seed + _SPLIT_OFFSETS[split]
            options = dict(self.capshapes_options)
            if train:
                options.update(self.capshapes_train_options)
            return CapShapes(length=length, size=self.capshapes_size, seed=seed, **options)
        if path is None:
            return None
        size = self.image_size if train else self.eval_image_size
        common: dict[str, Any] = {
            "image_size": size,
            "train": train,
            "seed": self.seed,
            "filter_grayscale": self.filter_grayscale,
            "gray_threshold": self.gray_threshold,
            "horizontal_flip": self.horizontal_flip,
        }
        if self.source == "folder":
            return ImageFolderDataset(path, **common)
        if self.source == "captions":
            records = load_caption_records(
                path,
                self.caption_format,
                self._image_root("predict" if stage == "predict" else split),
            )
            return CaptionedImageDataset(records, **common)
        return make_shard_dataset(
            path,
            shuffle_buffer=self.shuffle_buffer if train else 0,
            emit_none_for_bad=True,
            **common,
        )

    def _image_root(self, split: str) -> str | None:
        if isinstance(self.image_root, dict):
            return self.image_root.get(split)
        return self.image_root

    def _require(self, split: str, stage: str, path: str | None) -> Dataset:
        dataset = self._build(split, path, stage)
        if dataset is None:
            argument = "predict_path" if stage == "predict" else f"{split}_path"
            raise ValueError(
                f"ColorizationDataModule(source={self.source!r}) needs {argument} for "
                f"stage {stage!r}"
            )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test``, ``predict``).

        Raises:
            ValueError: a path the stage needs was not given (``val_path`` is optional for
                ``fit``), or ``stage`` is unknown.
        """
        if stage not in (None, "fit", "validate", "test", "predict"):
            raise ValueError(f"unknown stage {stage!r}")
        capshapes = self.source == "capshapes"
        if stage in (None, "fit"):
            self.train_dataset = self._require("train", "fit", self.paths["train"])
            self.val_dataset = self._build("val", self.paths["val"])
        if stage == "validate":
            self.val_dataset = self._require("val", "validate", self.paths["val"])
        if stage == "test" or (stage is None and (capshapes or self.paths["test"] is not None)):
            self.test_dataset = self._require("test", "test", self.paths["test"])
        if stage == "predict" or (stage is None and (capshapes or self.predict_path is not None)):
            self.predict_dataset = self._require("test", "predict", self.predict_path)

    # --------------------------------------------------------------- dataloaders
    def _loader(self, dataset: Dataset | None, split: str) -> DataLoader | list:
        if dataset is None:
            return []
        train = split == "train"
        loader_args: dict[str, Any] = {
            "batch_size": self.batch_size if train else self.eval_batch_size,
            "num_workers": self.num_workers,
            "collate_fn": functools.partial(collate_skip_bad, keep_empty=True),
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "generator": torch.Generator().manual_seed(derive_seed(self.seed, 1)),
        }
        if isinstance(dataset, IterableDataset):
            if train and self.trainer is not None and hasattr(dataset, "set_epoch"):
                dataset.set_epoch(self.trainer.current_epoch)
            return DataLoader(dataset, **loader_args)
        if train:
            # Whole batches when every rank gets at least one: a last, smaller batch would move
            # the batch boundaries of a resumed epoch (and a batch of one breaks BatchNorm).
            world = self.trainer.world_size if self.trainer is not None else 1
            group = int(getattr(dataset, "group_size", 1))
            if self.batch_size % group:
                raise ValueError(
                    f"the training set keeps groups of {group} items together (e.g. CapShapes' "
                    f"counterfactual_pairs): batch_size must be a multiple of {group}, got "
                    f"{self.batch_size}"
                )
            order = EpochShuffleSampler(dataset, seed=self.seed, shuffle=True, group=group)
            return ResumableDataLoader(
                dataset,
                sampler=order,
                order=order,
                drop_last=-(-len(dataset) // world) >= self.batch_size,  # type: ignore[arg-type]
                **loader_args,
            )
        return DataLoader(dataset, shuffle=False, **loader_args)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches; call :meth:`setup` first."""
        if self.train_dataset is None:
            raise RuntimeError("train_dataloader() called before setup('fit')")
        return self._loader(self.train_dataset, "train")

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in order; an empty list when there is no validation set."""
        return self._loader(self.val_dataset, "val")

    def test_dataloader(self) -> DataLoader | list:
        """Test batches in order."""
        return self._loader(self.test_dataset, "test")

    def predict_dataloader(self) -> DataLoader | list:
        """Prediction batches in order, from ``predict_path`` (capshapes: the test scenes)."""
        return self._loader(self.predict_dataset, "predict")

    # ------------------------------------------------------------------- batches
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count skipped samples and add ``l`` and ``ab`` on the batch's device.

        Returns:
            The batch with ``l`` ``(B, 1, H, W)`` and ``ab`` ``(B, 2, H, W)`` added (see
            :func:`~chromalab.data.collate.add_lab`), or ``None`` when every sample of the
            batch was bad: a model's ``training_step`` returns ``None`` for it, which makes
            Lightning skip the optimizer step.
        """
        if batch is None:
            return None
        self.skipped_samples += int(batch.get("skipped", 0))
        if "rgb" not in batch:
            return None
        return add_lab(batch)

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed state: the count of skipped samples (the training loader's position is
        checkpointed by Lightning from :class:`ResumableDataLoader`)."""
        return {"skipped_samples": self.skipped_samples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.skipped_samples = int(state_dict.get("skipped_samples", 0))

    def __repr__(self) -> str:
        paths = {k: v for k, v in self.paths.items() if v is not None}
        where = f", paths={paths}" if paths else ""
        return f"{type(self).__name__}(source={self.source!r}{where}, seed={self.seed})"
