"""``chromalab colorize --model lcad``: the plug-in registered in ``chromalab.models``.

::

    chromalab colorize --model lcad --ckpt stage2.ckpt --caption "a red car" photos/ -o out/
    chromalab colorize --model lcad --weights lcad-pipeline/ --caption "..." --auto-masks \\
        --sam sam_vit_b.pth --scheduler dpm++ --steps 15 --seed 3 photos/ -o out/

Weights: ``--ckpt``, an ``lcad fit --stage diffusion`` checkpoint; or ``--weights``, a
``LCADDiffusionModule.save_pretrained`` folder, a folder written by
``LCADPipeline.save_pretrained`` (``python -m lcad.weights`` writes one from the
authors' release), or the release's checkpoint itself with ``--text-encoder`` (Stable Diffusion
v1.5's folder).

Instance-aware sampling (§3.4) takes one of: ``--masks DIR`` (``DIR/<image stem>/<phrase>.png``,
underscores for spaces: ``masks/photo/red_car.png``), ``--prompt "PHRASE=x,y"`` or
``"PHRASE=x0,y0,x1,y1"`` with ``--sam CKPT`` (points or boxes in the input image's pixels), or
``--auto-masks`` with ``--sam CKPT``.

The options are declared once, in :data:`OPTIONS` (the plug-in's schema,
:class:`chromalab.models.ColorizeOption`): ``chromalab colorize --model lcad --help`` lists them,
and ``chromalab app`` offers ``--scheduler``, ``--sam`` and ``--text-encoder`` as flags and the
steps, guidance scale and seed as controls on the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from chromalab.color import rgb_to_l_ab
from chromalab.io import iter_image_files
from chromalab.models import ColorizeOption, batch_captions, resolve_device, with_options
from lcad.pipeline import (
    DEFAULT_EDIT_STEP_SIZE,
    DEFAULT_GUIDANCE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    SCHEDULERS,
    check_one_mask_source,
)

__all__ = [
    "DEFAULT_SEED",
    "OPTIONS",
    "LCADColorizer",
    "load_colorizer",
    "parse_prompts",
    "read_masks",
]

#: Sampling defaults for weights that do not record their own (a checkpoint of ``lcad fit``
#: records its ``sampling`` steps and guidance): :mod:`lcad.pipeline`'s ``DEFAULT_STEPS``,
#: ``DEFAULT_GUIDANCE`` and ``DEFAULT_SCHEDULER`` (the paper's DDIM with 50 steps, §3.5, and the
#: release's guidance scale), imported above; and the seed.
DEFAULT_SEED = 0

#: The plug-in's options (``chromalab colorize --model lcad --help``; module notes).
OPTIONS = (
    ColorizeOption(
        "steps", int, DEFAULT_STEPS,
        f"sampling steps (default: the checkpoint's; {DEFAULT_STEPS} for other weights)",
        minimum=1, app="control",
    ),
    ColorizeOption(
        "scheduler", str, DEFAULT_SCHEDULER, f"sampler (default {DEFAULT_SCHEDULER})",
        choices=tuple(SCHEDULERS), app="flag",
    ),
    ColorizeOption(
        "guidance", float, DEFAULT_GUIDANCE,
        f"guidance scale (default: the checkpoint's; {DEFAULT_GUIDANCE} for other weights)",
        app="control",
    ),
    ColorizeOption(
        "seed", int, DEFAULT_SEED, f"seed of every image (default {DEFAULT_SEED})", app="control"
    ),
    ColorizeOption("masks", str, None, "instance masks: DIR/<image stem>/<phrase>.png",
                   metavar="DIR"),
    ColorizeOption(
        "prompts", str, None,
        "a SAM point or box for a phrase, in input pixels (repeatable; needs --sam)",
        flag="--prompt", multiple=True, metavar="PHRASE=x,y[,x1,y1]",
    ),
    ColorizeOption(
        "auto_masks", bool, False,
        "masks from SAM prompted by each colour word's attention peak (needs --sam)",
    ),
    ColorizeOption("sam", str, None, "Segment Anything checkpoint (local)", metavar="CKPT",
                   app="flag"),
    ColorizeOption("text_encoder", str, None, "text encoder folder, for released weights",
                   metavar="DIR", app="flag"),
)  # fmt: skip


def parse_prompts(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["red car=120,80", "sky=0,0,640,200"]`` -> ``{"red car": (120, 80), ...}``."""
    out = {}
    for item in items:
        phrase, sep, coords = item.rpartition("=")
        try:
            values = tuple(float(v) for v in coords.split(","))
        except ValueError:
            values = ()
        if not sep or not phrase.strip() or len(values) not in (2, 4):
            raise ValueError(f"--prompt {item!r}: give PHRASE=x,y or PHRASE=x0,y0,x1,y1")
        out[phrase.strip()] = values
    return out


def read_masks(folder: str | Path, stem: str) -> dict[str, Image.Image]:
    """``{phrase: mask image}`` from ``folder/<stem>/<phrase>.<ext>`` (underscores for
    spaces); empty when the image has no folder."""
    base = Path(folder) / stem
    if not base.is_dir():
        return {}
    files = iter_image_files(base, recursive=False)
    return {p.stem.replace("_", " "): Image.open(p).convert("L") for p in files}


class LCADColorizer:
    """An :class:`~lcad.pipeline.LCADPipeline` behind the :class:`chromalab.models.Colorizer`
    protocol, with the sampling and mask options of the command line.

    Args:
        pipeline: the pipeline.
        input_size: side of the square lightness the command feeds (the model's training size).
        steps, guidance, seed, scheduler: sampling (every image with its own generator seeded
            ``seed``: the same seed gives the same colours).
        masks_dir, prompts, auto_masks, segmenter: instance-aware sampling (module notes).
        edit_step_size, edit_steps: Algorithm 1's ``λ`` and how many steps it edits.
        progress: show the sampling steps.

    Prompts are in the input image's pixels; masks are of the whole input image.
    """

    uses_captions = True
    uses_source = True

    def __init__(
        self,
        pipeline,
        input_size: int,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int = DEFAULT_SEED,
        scheduler: str = DEFAULT_SCHEDULER,
        masks_dir: str | None = None,
        prompts: Mapping[str, Sequence[float]] | None = None,
        auto_masks: bool = False,
        segmenter: Any = None,
        edit_step_size: float = DEFAULT_EDIT_STEP_SIZE,
        edit_steps: int | None = None,
        progress: bool = False,
    ) -> None:
        check_one_mask_source(
            {"--masks": masks_dir, "--prompt": prompts, "--auto-masks": auto_masks}
        )
        if (prompts or auto_masks) and segmenter is None:
            raise ValueError("--prompt and --auto-masks need SAM weights: --sam CKPT")
        self.pipeline = pipeline.use_scheduler(scheduler)
        self.pipeline.set_progress_bar_config(disable=not progress, leave=False)
        self.input_size = input_size
        self.steps, self.guidance, self.seed = steps, guidance, seed
        self.masks_dir, self.prompts, self.auto_masks = masks_dir, dict(prompts or {}), auto_masks
        self.segmenter = segmenter
        self.edit = {"edit_step_size": edit_step_size, "edit_steps": edit_steps}

    @torch.inference_mode()
    def colorize(
        self,
        l: Tensor,
        captions: list[str] | None = None,
        source: Sequence[str | Path] | None = None,
        full_size: Sequence[tuple[int, int]] | None = None,
    ) -> Tensor:
        """ab ``(B, 2, S, S)`` for ``l`` ``(B, 1, S, S)`` (one caption for all, or one each).
        ``source``, ``full_size``: each image's file and size, for its masks and prompts; the
        image fills the top-left corner of the square ``l``, longer side first
        (:func:`chromalab.inference.canvas_region`)."""
        b, size = l.shape[0], l.shape[-1]
        captions = batch_captions(captions, b, "lcad")
        sizes = list(full_size) if full_size is not None else [tuple(l.shape[-2:])] * b
        options: dict[str, Any] = dict(self.edit)
        if self.masks_dir:
            if source is None:
                raise ValueError("--masks needs each image's file name")
            options["masks"] = [
                {
                    k: _on_canvas(m, hw, size)
                    for k, m in read_masks(self.masks_dir, Path(s).stem).items()
                }
                for s, hw in zip(source, sizes, strict=True)
            ]
        elif self.prompts:
            scales = [size / max(hw) for hw in sizes]
            options["prompts"] = [
                {phrase: tuple(c * k for c in v) for phrase, v in self.prompts.items()}
                for k in scales
            ]
            options["segmenter"] = self.segmenter
        elif self.auto_masks:
            options |= {"auto_masks": True, "segmenter": self.segmenter}
        return self._sample(l, captions, **options).images

    def _sample(self, l: Tensor, captions: list[str], **options: Any):
        generators = [torch.Generator().manual_seed(self.seed) for _ in range(l.shape[0])]
        out = self.pipeline(
            l.float(),
            captions,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            generator=generators,
            **options,
        )
        out.images = rgb_to_l_ab(out.images.float())[1]
        return out

    @torch.inference_mode()
    def explain(
        self, l: Tensor, captions: list[str] | None = None, **_: object
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """ab of a plain sampling (no masks) and, from the same sampling, each colour word's
        cross-attention summed over layers and steps, as a heatmap per word."""
        from chromalab.report import heatmap

        captions = batch_captions(captions, l.shape[0], "lcad")
        out = self._sample(l, captions, attention_maps=True)
        maps = [{word: heatmap(m[None])[0] for word, m in per.items()} for per in out.attention]
        return out.images, maps


def _on_canvas(mask: Image.Image, full_size: tuple[int, int], size: int) -> Tensor:
    """A mask of the full image placed as the image is on the square canvas."""
    from chromalab.inference import canvas_region

    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255)
    h, w = canvas_region(full_size, size)
    small = F.interpolate(m[None, None], size=(h, w), mode="area")[0, 0]
    return F.pad(small, (0, size - w, 0, size - h))


def _pipeline_from_weights(weights: str, text_encoder: str | None, device: torch.device):
    from chromalab.hub import is_hub_folder
    from lcad.pipeline import LCADPipeline
    from lcad.stages import LCADDiffusionModule
    from lcad.weights import load_released

    path = Path(weights).expanduser()
    if (path / "model_index.json").is_file():
        return LCADPipeline.from_pretrained(path).to(device), 256
    if is_hub_folder(path):
        module = LCADDiffusionModule.from_pretrained(path, map_location=str(device))
        return module.pipeline(), 256
    if not text_encoder:
        raise ValueError(
            "the release's checkpoint needs its text encoder: --text-encoder SD15_DIR (Stable "
            "Diffusion v1.5's folder), or convert it once with python -m lcad.weights"
        )
    sub = "text_encoder" if (Path(text_encoder) / "text_encoder").is_dir() else None
    module = load_released(path, text_encoder, text_subfolder=sub)
    return module.to(device).eval().pipeline(), 256


@with_options(*OPTIONS)
def load_colorizer(
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    scheduler: str | None = None,
    masks: str | None = None,
    prompts: Sequence[str] | None = None,
    auto_masks: bool = False,
    sam: str | None = None,
    text_encoder: str | None = None,
    progress: bool = False,
    **_: object,
) -> LCADColorizer:
    """Build the colorizer from an ``lcad fit --stage diffusion`` checkpoint (``ckpt``) or a
    pipeline folder / the authors' checkpoint (``weights``); the other arguments are
    :data:`OPTIONS` (``None``: the default)."""
    if (ckpt is None) == (weights is None):
        raise ValueError(
            "model lcad needs --ckpt (an lcad fit --stage diffusion checkpoint) or --weights "
            "(an LCADPipeline folder, or the authors' checkpoint with --text-encoder)"
        )
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULERS)}")
    dev = resolve_device(device)
    if ckpt is not None:
        from lcad.stages import LCADDiffusionModule

        blob = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
        data = blob.get("datamodule_hyper_parameters", {})
        size = int(data.get("image_size") or 256)
        module = LCADDiffusionModule.load_from_checkpoint(ckpt, map_location=dev).eval()
        pipe = module.pipeline()
        default_steps, default_guidance = module.sampling.steps, module.sampling.guidance
    else:
        pipe, size = _pipeline_from_weights(weights, text_encoder, dev)
        default_steps, default_guidance = DEFAULT_STEPS, DEFAULT_GUIDANCE
    segmenter = None
    if sam is not None:
        from lcad.segment import SamSegmenter

        segmenter = SamSegmenter.from_checkpoint(sam, device=dev)
    return LCADColorizer(
        pipe,
        size,
        steps=steps or default_steps,
        guidance=default_guidance if guidance is None else guidance,
        seed=DEFAULT_SEED if seed is None else seed,
        scheduler=scheduler or DEFAULT_SCHEDULER,
        masks_dir=masks,
        prompts=parse_prompts(prompts or []),
        auto_masks=auto_masks,
        segmenter=segmenter,
        progress=progress,
    )
