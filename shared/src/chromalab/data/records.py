"""Importers for captioned-image collections.

Language-based colorization trains on photographs paired with free-form captions. The
papers distribute their captions in several layouts; each importer below turns one of
them into a list of :class:`CaptionRecord` (an image path with all of its captions):

* **COCO captions** (``captions_train2017.json``), the source of the extended COCO-Stuff
  data used by L-CoIns (Chang et al., CVPR 2023, Sec. 4.1) and of the captions of
  Manjunatha et al. (NAACL 2018): a JSON object with ``images`` (``{"id", "file_name"}``)
  and ``annotations`` (``{"image_id", "caption"}``) — :func:`load_coco_captions`;
* **JSON lines**, one ``{"image": ..., "caption": ...}`` (or ``"captions": [...]``) per
  line, the generic format for one's own data — :func:`load_jsonl`;
* **name to captions** (``"name-to-captions"``): one JSON object mapping each image file name
  to its list of captions, the layout of the L-CAD release (Chang et al., NeurIPS 2023) —
  :func:`load_name_to_captions`;
* **name-caption pairs** (``"name-caption-pairs"``): a JSON list of ``[file_name, caption]``
  pairs, the layout of the L-CoIns release (Chang et al., CVPR 2023) —
  :func:`load_name_caption_pairs`.

Formats are named by their layout. :func:`load_caption_records` recognises the layout from the
file's content. Every importer
raises :class:`ValueError` naming the file and the offending line or entry when the file
does not follow its layout. Image files are not opened here: a missing or broken image is
reported and skipped by the dataset that reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = [
    "CaptionFormat",
    "CaptionRecord",
    "DetectedCaptionFormat",
    "detect_caption_format",
    "load_caption_records",
    "load_coco_captions",
    "load_jsonl",
    "load_name_caption_pairs",
    "load_name_to_captions",
]

#: The layouts understood by :func:`load_caption_records` (``"auto"``: detect it).
CaptionFormat = Literal["auto", "coco", "jsonl", "name-to-captions", "name-caption-pairs"]

#: The layouts :func:`detect_caption_format` tells apart.
DetectedCaptionFormat = Literal["coco", "jsonl", "name-to-captions", "name-caption-pairs"]


@dataclass(frozen=True)
class CaptionRecord:
    """One image and all of its captions.

    Attributes:
        image: path of the image file (not checked for existence).
        captions: one or more non-empty captions, in the order of the source file.
    """

    image: Path
    captions: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.image, Path):
            raise TypeError(f"CaptionRecord.image must be a pathlib.Path, got {self.image!r}")
        if not isinstance(self.captions, tuple) or not self.captions:
            raise ValueError(
                f"CaptionRecord for {self.image} needs a non-empty tuple of captions, "
                f"got {self.captions!r}"
            )
        for caption in self.captions:
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"CaptionRecord for {self.image} has an empty caption {caption!r}")


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {path}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def _clean_caption(caption: Any, where: str) -> str:
    if not isinstance(caption, str):
        raise ValueError(f"{where}: caption must be a string, got {caption!r}")
    caption = caption.strip()
    if not caption:
        raise ValueError(f"{where}: empty caption")
    return caption


def _file_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: image file name must be a non-empty string, got {name!r}")
    return name.strip()


def _group(pairs: Iterable[tuple[Path, str]]) -> list[CaptionRecord]:
    """Merge ``(image, caption)`` pairs by image, keeping first-seen order everywhere."""
    grouped: dict[Path, list[str]] = {}
    for image, caption in pairs:
        grouped.setdefault(image, []).append(caption)
    return [CaptionRecord(image, tuple(captions)) for image, captions in grouped.items()]


def load_coco_captions(annotations_json: str | Path, image_root: str | Path) -> list[CaptionRecord]:
    """Read a COCO captions file (``captions_{train,val}2017.json``).

    Args:
        annotations_json: JSON object with ``images`` (list of ``{"id", "file_name"}``) and
            ``annotations`` (list of ``{"image_id", "caption"}``).
        image_root: folder the ``file_name`` entries are relative to.

    Returns:
        One record per image that has at least one caption, in the order of ``images``;
        each image's captions in the order of ``annotations``. Images without captions
        are left out.

    Raises:
        ValueError: the file is not in this layout, an entry lacks a field, an id repeats,
            or an annotation refers to an unknown image (the message names the entry).
    """
    path = Path(annotations_json)
    data = _read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: a COCO captions file needs top-level 'images' and 'annotations'")
    images, annotations = data["images"], data["annotations"]
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError(f"{path}: 'images' and 'annotations' must be lists")
    root = Path(image_root)
    by_id: dict[Any, Path] = {}
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise ValueError(f"{where}: needs 'id' and 'file_name', got {entry!r}")
        if entry["id"] in by_id:
            raise ValueError(f"{where}: duplicate image id {entry['id']!r}")
        by_id[entry["id"]] = root / _file_name(entry["file_name"], where)
    captions: dict[Any, list[str]] = {}
    for i, entry in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise ValueError(f"{where}: needs 'image_id' and 'caption', got {entry!r}")
        if entry["image_id"] not in by_id:
            raise ValueError(f"{where}: image_id {entry['image_id']!r} is not in 'images'")
        captions.setdefault(entry["image_id"], []).append(_clean_caption(entry["caption"], where))
    return [
        CaptionRecord(by_id[image_id], tuple(captions[image_id]))
        for image_id in by_id
        if image_id in captions
    ]


def load_jsonl(path: str | Path, image_root: str | Path | None = None) -> list[CaptionRecord]:
    """Read a JSON-lines caption file.

    Each non-blank line is an object ``{"image": "a.jpg", "caption": "..."}`` or
    ``{"image": "a.jpg", "captions": ["...", ...]}``; other keys are ignored.

    Args:
        path: the ``.jsonl`` file.
        image_root: folder relative image paths resolve against; by default the folder
            holding ``path``. Absolute paths are kept.

    Returns:
        One record per distinct image, in first-appearance order; lines naming the same
        image merge their captions in file order.

    Raises:
        ValueError: a line is not a JSON object with ``image`` and ``caption``/``captions``
            (the message gives the 1-based line number).
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {path}") from None
    pairs: list[tuple[Path, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{where}: expected an object with an 'image' key, got {line!r}")
        has_one, has_many = "caption" in entry, "captions" in entry
        if has_one == has_many:
            raise ValueError(f"{where}: expected exactly one of 'caption' or 'captions'")
        if has_many:
            if not isinstance(entry["captions"], list) or not entry["captions"]:
                raise ValueError(f"{where}: 'captions' must be a non-empty list of strings")
            captions = [_clean_caption(c, where) for c in entry["captions"]]
        else:
            captions = [_clean_caption(entry["caption"], where)]
        image = root / _file_name(entry["image"], where)
        pairs.extend((image, caption) for caption in captions)
    return _group(pairs)


def load_name_to_captions(path: str | Path, image_root: str | Path) -> list[CaptionRecord]:
    """Read a name-to-captions file, ``{"file.jpg": ["caption", ...], ...}`` (the L-CAD
    release's layout).

    Args:
        path: the JSON file.
        image_root: folder the file names are relative to.

    Returns:
        One record per key, in file order; keys with an empty caption list are left out.

    Raises:
        ValueError: the top level is not an object or a value is not a list of strings
            (the message names the key).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a name-to-captions file is a JSON object file -> [captions]")
    root = Path(image_root)
    records = []
    for name, captions in data.items():
        where = f"{path}: entry {name!r}"
        if not isinstance(captions, list):
            raise ValueError(f"{where}: value must be a list of captions, got {captions!r}")
        if captions:
            cleaned = tuple(_clean_caption(c, where) for c in captions)
            records.append(CaptionRecord(root / _file_name(name, where), cleaned))
    return records


def load_name_caption_pairs(path: str | Path, image_root: str | Path) -> list[CaptionRecord]:
    """Read a name-caption-pairs file, ``[["file.jpg", "caption"], ...]`` (the L-CoIns
    release's layout).

    Args:
        path: the JSON file.
        image_root: folder the file names are relative to.

    Returns:
        One record per distinct file, in first-appearance order; repeated files merge
        their captions in file order.

    Raises:
        ValueError: the top level is not a list or an entry is not a ``[file, caption]``
            pair of strings (the message gives the entry's index).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a name-caption-pairs file is a JSON list of [file, caption]")
    root = Path(image_root)
    pairs: list[tuple[Path, str]] = []
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"{where}: expected a [file, caption] pair, got {entry!r}")
        pairs.append((root / _file_name(entry[0], where), _clean_caption(entry[1], where)))
    return _group(pairs)


def detect_caption_format(path: str | Path) -> DetectedCaptionFormat:
    """Recognise the layout of a caption file from its content.

    A file that parses as one JSON document is COCO (an object with ``images`` and
    ``annotations``), name-caption pairs (a list), a one-line JSON-lines file (an object with
    an ``image`` key) or name to captions (any other object). Otherwise the first non-blank
    line must parse as a JSON object, and the file is JSON lines.

    Raises:
        ValueError: none of the layouts matches.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    else:
        if isinstance(data, list):
            return "name-caption-pairs"
        if isinstance(data, dict):
            if "images" in data and "annotations" in data:
                return "coco"
            if "image" in data and ("caption" in data or "captions" in data):
                return "jsonl"
            return "name-to-captions"
        kind = type(data).__name__
        raise ValueError(f"{path}: unrecognised caption file (top-level JSON {kind})")
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is not None:
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except json.JSONDecodeError:
            pass
    raise ValueError(
        f"{path}: unrecognised caption file: neither one JSON document (COCO, name to captions, "
        "name-caption pairs) nor JSON lines"
    )


def load_caption_records(
    path: str | Path, format: CaptionFormat = "auto", image_root: str | Path | None = None
) -> list[CaptionRecord]:
    """Load caption records from any supported layout.

    Args:
        path: the caption file.
        format: ``"coco"``, ``"jsonl"``, ``"name-to-captions"``, ``"name-caption-pairs"``,
            or ``"auto"`` to detect it with :func:`detect_caption_format`.
        image_root: folder the image names are relative to; by default the caption file's
            folder.

    Returns:
        The records, as the matching ``load_*`` function returns them.

    Raises:
        ValueError: unknown ``format``, undetectable layout, or a malformed file.
    """
    path = Path(path)
    if format == "auto":
        format = detect_caption_format(path)
    root = Path(image_root) if image_root is not None else path.parent
    if format == "coco":
        return load_coco_captions(path, root)
    if format == "jsonl":
        return load_jsonl(path, root)
    if format == "name-to-captions":
        return load_name_to_captions(path, root)
    if format == "name-caption-pairs":
        return load_name_caption_pairs(path, root)
    known = ", ".join(repr(f) for f in get_args(CaptionFormat))
    raise ValueError(f"unknown caption format {format!r}; expected one of {known}")
