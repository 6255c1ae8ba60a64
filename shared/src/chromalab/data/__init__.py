"""Datasets and the shared data module.

* :class:`ColorizationDataModule` — one configurable LightningDataModule for every package
  (sources: ``capshapes``, ``folder``, ``captions``, ``webdataset``).
* :class:`ImageFolderDataset`, :class:`CaptionedImageDataset`, :func:`make_shard_dataset`.
* Caption importers: :func:`load_caption_records` (COCO, JSON lines, name to captions,
  name-caption pairs; :class:`CaptionFormat`).
* :class:`CapShapes` and :func:`export_capshapes` — the built-in captioned scenes.
* :func:`sample_photos` — real photographs shipped inside installed packages.
"""

from chromalab.data.capshapes import CapShapes, export_capshapes
from chromalab.data.collate import add_lab, collate_skip_bad
from chromalab.data.datamodule import ColorizationDataModule
from chromalab.data.folders import CaptionedImageDataset, ImageFolderDataset
from chromalab.data.photos import SAMPLE_PHOTO_NAMES, sample_photos
from chromalab.data.records import CaptionFormat, CaptionRecord, load_caption_records
from chromalab.data.shards import make_shard_dataset

__all__ = [
    "SAMPLE_PHOTO_NAMES",
    "CapShapes",
    "CaptionFormat",
    "CaptionRecord",
    "CaptionedImageDataset",
    "ColorizationDataModule",
    "ImageFolderDataset",
    "add_lab",
    "collate_skip_bad",
    "export_capshapes",
    "load_caption_records",
    "make_shard_dataset",
    "sample_photos",
]
