"""Colorize photos with any installed model: files and folder trees (``chromalab colorize``),
and in-memory images (:func:`colorize`, for notebooks). One code path for both, and for the app.

Every image keeps its aspect ratio and its full-resolution lightness: its L channel is resized
so that the longer side is the model's input size, placed in the top-left corner of a square
canvas of that size (the rest filled by repeating the edge), colorized, and the prediction of the
image's own region is upsampled and joined with the original L. Images of any sizes therefore
batch together, and an image gets the same colours whatever batch it is in.

Captions are checked the same way everywhere (:func:`clean_caption`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from chromalab.color import rgb_to_lab
from chromalab.io import (
    ImageLoadError,
    from_pil,
    iter_image_files,
    load_image,
    recombine,
    save_image,
    to_pil,
)
from chromalab.text import find_color_words

__all__ = [
    "MAX_CAPTION_CHARS",
    "OUTPUT_FORMATS",
    "PRECISIONS",
    "Job",
    "canvas_region",
    "clean_caption",
    "colorize",
    "colorize_jobs",
    "plan_jobs",
    "read_captions",
]

logger = logging.getLogger(__name__)

#: Longest caption kept (characters); longer ones are cut at a word boundary, with a warning.
MAX_CAPTION_CHARS = 1000
OUTPUT_FORMATS = ("png", "jpg")


def clean_caption(caption: str | None, required: bool) -> str | None:
    """A caption as every entry point uses it: whitespace collapsed; longer than
    :data:`MAX_CAPTION_CHARS`: cut at a word boundary (warning); no colour word: used as a
    scarce description (L-CAD's term), said at info level; non-ASCII text and emoji: kept.

    Raises:
        ValueError: ``required`` (a language model) and the caption is missing or empty.
    """
    if caption is None:
        if required:
            raise ValueError("this model colorizes from a caption: give one (--caption)")
        return None
    text = " ".join(str(caption).split())
    if not text:
        if required:
            raise ValueError("the caption is empty: describe the photo, e.g. 'a red car'")
        return None
    if len(text) > MAX_CAPTION_CHARS:
        cut = text[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0] or text[:MAX_CAPTION_CHARS]
        logger.warning(
            "caption of %d characters cut to %d (the limit is %d)",
            len(text), len(cut), MAX_CAPTION_CHARS,
        )  # fmt: skip
        text = cut
    if required and not find_color_words(text):
        logger.info("the caption names no colour: colorized as a scarce description")
    return text


def read_captions(path: str | Path) -> dict[str, str]:
    """Per-image captions from a file: JSON (``{"file": "caption", ...}`` or a list of
    ``{"file": ..., "caption": ...}``), JSON Lines (one such object per line) or CSV (a header
    with ``file`` and ``caption``). Keys are file names or paths relative to the input
    folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no captions file at {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    records: list[Mapping[str, Any]]
    try:
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, Mapping):
                return {str(k): str(v) for k, v in data.items()}
            records = list(data)
        elif suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            records = list(csv.DictReader(text.splitlines()))
        else:
            raise ValueError(f"captions file {path}: use .json, .jsonl or .csv")
    except json.JSONDecodeError as err:
        raise ValueError(f"captions file {path}: not valid JSON ({err})") from err
    out = {}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or "file" not in record or "caption" not in record:
            raise ValueError(f"captions file {path}: record {i + 1} needs 'file' and 'caption'")
        out[str(record["file"])] = str(record["caption"])
    return out


@dataclass
class Job:
    """One input file, where its result goes, and its caption."""

    source: Path
    target: Path
    caption: str | None = None


def plan_jobs(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    output_format: str = "png",
    caption: str | None = None,
    captions: Mapping[str, str] | None = None,
) -> list[Job]:
    """The files under ``inputs`` (files or folders, recursively), each with its output path
    (the folder tree kept under ``out_dir``, suffix ``output_format``) and its caption:
    ``captions[relative path]``, else ``captions[file name]``, else ``caption``."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    jobs = []
    for item in inputs:
        root = Path(item)
        for path in iter_image_files(root):
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            text = caption
            if captions:
                text = captions.get(relative.as_posix(), captions.get(path.name, caption))
            target = Path(out_dir) / relative.with_suffix(f".{output_format}")
            jobs.append(Job(path, target, text))
    return jobs


def canvas_region(full_size: tuple[int, int], size: int) -> tuple[int, int]:
    """``(h, w)`` of an image of ``full_size`` ``(H, W)`` on the square canvas of side ``size``
    (longer side ``size``, top-left corner)."""
    h, w = full_size
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _canvas(l_full: Tensor, size: int) -> Tensor:
    """``(1, size, size)`` canvas of lightness ``(1, H, W)``."""
    h, w = canvas_region(tuple(l_full.shape[-2:]), size)
    small = F.interpolate(l_full[None], size=(h, w), mode="bilinear", align_corners=False,
                          antialias=True)  # fmt: skip
    return F.pad(small, (0, size - w, 0, size - h), mode="replicate")[0]


class _Images(Dataset):
    """Decodes the jobs' images in DataLoader workers: full-resolution L and its canvas."""

    def __init__(self, jobs: Sequence[Job], size: int) -> None:
        self.jobs, self.size = list(jobs), size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        job = self.jobs[i]
        try:
            rgb = load_image(job.source)
        except ImageLoadError as err:
            return {"index": i, "error": err.reason}
        l_full = rgb_to_lab(rgb[None])[0, :1]
        return {"index": i, "l": l_full, "canvas": _canvas(l_full, self.size)}


def _first(items: list) -> list:
    return items


PRECISIONS = ("fp32", "bf16")


def _predict(
    model,
    canvases: Tensor,
    captions: list[str] | None,
    extra: Mapping[str, Any],
    precision: str = "fp32",
    method: str = "colorize",
) -> Any:
    """The model's ab for a batch (``method="explain"``: ab and the explanation maps);
    ``precision="bf16"``: under bfloat16 autocast (opt-in: it changes the numbers slightly)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    autocast = torch.autocast(canvases.device.type, torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        if method == "explain":
            ab, maps = model.explain(canvases, captions, **extra)
            return ab.float(), maps
        return model.colorize(canvases, captions, **extra).float()


def _region(full_size: tuple[int, int], size: int, side: int) -> tuple[int, int]:
    """``(h, w)`` of the image's region in a prediction of side ``side`` of its canvas."""
    h, w = canvas_region(full_size, size)
    scale = side / size
    return max(1, math.ceil(h * scale)), max(1, math.ceil(w * scale))


def _overlay(l_full: Tensor, colors: Tensor, size: int, alpha: float = 0.5) -> Tensor:
    """An explanation map ``(3, s, s)`` of the canvas, cropped to the image's region, enlarged
    to the image (nearest neighbour: the map's own resolution stays visible) and laid over its
    grey ``(1, H, W)`` lightness."""
    h, w = _region(tuple(l_full.shape[-2:]), size, colors.shape[-1])
    region = colors[None, :, :h, :w].cpu()
    big = F.interpolate(region, size=tuple(l_full.shape[-2:]), mode="nearest")[0]
    grey = (l_full.cpu() / 100).clamp(0, 1).expand(3, -1, -1)
    return ((1 - alpha) * grey + alpha * big.clamp(0, 1)).clamp(0, 1)


def _join(l_full: Tensor, ab: Tensor, size: int) -> Tensor:
    """RGB ``(3, H, W)``: the prediction ``ab`` ``(2, s, s)`` of the canvas, cropped to the
    image's region, upsampled and joined with the full-resolution L."""
    h, w = _region(tuple(l_full.shape[-2:]), size, ab.shape[-1])
    return recombine(l_full.cpu(), ab[:, :h, :w].cpu())


def colorize_jobs(
    model,
    jobs: Sequence[Job],
    size: int | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    side_by_side: bool = False,
    skip_existing: bool = False,
    progress: bool = True,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> tuple[int, list[tuple[Path, str]]]:
    """Colorize ``jobs`` in batches (images decoded in ``num_workers`` DataLoader workers) and
    write each result (``side_by_side``: the grey input on the left; ``precision``: ``"fp32"``
    or ``"bf16"`` autocast). Returns the number
    written and the ``(file, reason)`` of those skipped (unreadable files, missing captions)."""
    from tqdm import tqdm

    size = int(size or model.input_size)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    failed: list[tuple[Path, str]] = []
    todo = []
    for job in jobs:
        if skip_existing and job.target.is_file():
            continue
        if model.uses_captions and job.caption is None:
            failed.append((job.source, "no caption for this file"))
            continue
        todo.append(job)
    if model.uses_captions:
        for job in todo:
            job.caption = clean_caption(job.caption, required=True)
    loader = DataLoader(_Images(todo, size), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_first)  # fmt: skip
    written = 0
    bar = tqdm(total=len(todo), desc="colorize", unit="img", disable=not progress)
    for items in loader:
        good = []
        for item in items:
            if "error" in item:
                failed.append((todo[item["index"]].source, item["error"]))
                logger.warning("skipped %s: %s", todo[item["index"]].source, item["error"])
            else:
                good.append(item)
        bar.update(len(items) - len(good))
        if not good:
            continue
        batch_jobs = [todo[item["index"]] for item in good]
        canvases = torch.stack([item["canvas"] for item in good]).to(device)
        captions = [job.caption for job in batch_jobs] if model.uses_captions else None
        extra = {}
        if getattr(model, "uses_source", False):  # per-image inputs (masks, prompts)
            extra = {"source": [job.source for job in batch_jobs],
                     "full_size": [tuple(item["l"].shape[-2:]) for item in good]}  # fmt: skip
        ab = _predict(model, canvases, captions, extra, precision)
        for item, job, pred in zip(good, batch_jobs, ab, strict=True):
            rgb = _join(item["l"], pred, size)
            if side_by_side:
                grey = recombine(item["l"], torch.zeros(2, 1, 1))
                rgb = torch.cat((grey, rgb), dim=-1)
            save_image(rgb, job.target)
            written += 1
        bar.update(len(good))
    bar.close()
    return written, failed


def colorize(
    images: Any,
    model: str | Any,
    caption: str | None = None,
    captions: Sequence[str | None] | None = None,
    size: int | None = None,
    batch_size: int = 8,
    output: str = "pil",
    device: str | None = None,
    precision: str = "fp32",
    explain: bool = False,
    **options: Any,
) -> Any:
    """Colorize images in memory: ``images`` is a PIL image, a path, an RGB tensor
    ``(3, H, W)`` in ``[0, 1]``, or a list of them; ``model`` an installed model's name (built
    with ``options``: ``ckpt=``, ``weights=``, ... and the model's own options, as
    :func:`chromalab.models.load_colorizer` takes them) or a loaded colorizer. ``caption`` for all,
    or ``captions`` one per image. Returns PIL images (``output="pil"``) or RGB tensors
    ``(3, H, W)`` (``"pt"``), each at its input's size. ``explain=True`` (models with
    :class:`~chromalab.models.Explainer`): ``(result, {label: map})`` pairs instead, each map the
    model's own reading laid over the grey input at its size (FiLM activations, L-CoIns groups,
    L-CAD's attention per colour word).

    ::

        from chromalab import colorize
        out = colorize("photo.jpg", model="film_color", ckpt="film.ckpt", caption="a red bus")
    """
    from PIL import Image

    from chromalab.models import Explainer, load_colorizer, resolve_device

    if output not in ("pil", "pt"):
        raise ValueError(f"output must be 'pil' or 'pt', got {output!r}")
    target = resolve_device(device)
    if isinstance(model, str):
        model = load_colorizer(model, device=str(target), **options)
    if explain and not isinstance(model, Explainer):
        raise ValueError(f"{type(model).__name__} has no explanation maps (no explain method)")
    single = not isinstance(images, list | tuple)
    items = [images] if single else list(images)
    if captions is not None and len(captions) != len(items):
        raise ValueError(f"{len(items)} images but {len(captions)} captions")
    texts = list(captions) if captions is not None else [caption] * len(items)
    if model.uses_captions:
        texts = [clean_caption(t, required=True) for t in texts]
    size = int(size or model.input_size)
    rgbs = []
    for item in items:
        if isinstance(item, str | Path):
            item = load_image(item)
        elif isinstance(item, Image.Image):
            item = from_pil(item)
        if not isinstance(item, Tensor) or item.dim() != 3 or item.shape[0] != 3:
            raise ValueError("images: PIL images, paths or RGB tensors (3, H, W) in [0, 1]")
        rgbs.append(item.float())
    out, shown = [], []
    for start in range(0, len(rgbs), batch_size):
        chunk = rgbs[start : start + batch_size]
        ls = [rgb_to_lab(rgb[None])[0, :1] for rgb in chunk]
        canvases = torch.stack([_canvas(l, size) for l in ls]).to(target)
        words = texts[start : start + batch_size] if model.uses_captions else None
        if explain:
            ab, maps = _predict(model, canvases, words, {}, precision, method="explain")
            shown += [
                {label: _overlay(l, m.float(), size) for label, m in per.items()}
                for l, per in zip(ls, maps, strict=True)
            ]
        else:
            ab = _predict(model, canvases, words, {}, precision)
        out += [_join(l, pred, size) for l, pred in zip(ls, ab, strict=True)]

    def convert(rgb: Tensor) -> Any:
        return rgb if output == "pt" else to_pil(rgb)

    out = [convert(rgb) for rgb in out]
    if explain:
        out = [
            (rgb, {k: convert(v) for k, v in per.items()})
            for rgb, per in zip(out, shown, strict=True)
        ]
    return out[0] if single else out
