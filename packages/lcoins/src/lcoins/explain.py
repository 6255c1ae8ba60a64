"""The hard group assignment of L-CoIns over the image (§3.6, Eq. 11): ``lcoins explain``.

Each image token is assigned to one group token (Eq. 11); :func:`group_maps` returns that
assignment on the token grid, :func:`group_overlay` paints it over the grey image (one colour
per group, nearest-neighbour upsampled so the patch borders stay visible), and
:func:`explain_images` writes, per image, the colorization and the group map::

    lcoins explain --ckpt model.ckpt --caption "a red car beside a blue car" photo.jpg -o groups/
    lcoins explain --ckpt model.ckpt --capshapes 4 -o groups/     # scenes with their own captions
"""

from __future__ import annotations

import argparse
import colorsys
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from chromalab.color import rgb_to_lab
from chromalab.io import recombine, save_image

__all__ = ["explain_images", "explain_main", "group_colors", "group_maps", "group_overlay"]


def group_colors(count: int) -> Tensor:
    """``count`` distinct RGB colours ``(count, 3)`` in ``[0, 1]``: hues spread evenly."""
    return torch.tensor(
        [colorsys.hsv_to_rgb(i / max(count, 1), 0.85, 0.95) for i in range(count)],
        dtype=torch.float32,
    )


@torch.no_grad()
def group_maps(module, l: Tensor, captions: Sequence[str]) -> Tensor:
    """The group of every image token, ``(B, H/P, W/P)`` long, for lightness ``l``
    ``(B, 1, H, W)`` and one caption per image (a model without group tokens: ValueError)."""
    out = module(l, list(captions))
    if out.assignment is None:
        raise ValueError("this model has no group tokens (the W/o GE ablation): nothing to show")
    return out.assignment.argmax(1).view(l.shape[0], *out.grid)


def group_overlay(gray: Tensor, groups: Tensor, count: int, alpha: float = 0.5) -> Tensor:
    """Group colours of ``groups`` ``(B, h, w)`` blended over ``gray`` ``(B, 1, H, W)`` in
    ``[0, 1]``; returns RGB ``(B, 3, H, W)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = group_colors(count).to(gray.device)[groups].permute(0, 3, 1, 2)  # (B, 3, h, w)
    colors = F.interpolate(colors, size=gray.shape[2:], mode="nearest")
    return (1 - alpha) * gray.expand(-1, 3, -1, -1) + alpha * colors


def explain_images(
    module,
    images: Sequence[tuple[str, Tensor]],
    captions: Sequence[str],
    out_dir: str | Path,
    size: int,
) -> list[Path]:
    """Write ``<name>_colorized.png`` and ``<name>_groups.png`` for every image.

    Args:
        module: an :class:`~lcoins.module.LCoInsModule` (eval mode is set here).
        images: ``(name, rgb)`` pairs, ``rgb`` ``(3, H, W)`` in ``[0, 1]`` (only L is used).
        captions: one caption per image.
        out_dir: output folder (created).
        size: network input side (a multiple of the ViT's patch size).
    """
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    module.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = module.network.num_groups
    written = []
    for (name, rgb), caption in zip(images, captions, strict=True):
        l_full = rgb_to_lab(rgb[None].to(module.device))[:, :1]
        l_small = F.interpolate(l_full, size=(size, size), mode="bilinear", antialias=True)
        with torch.no_grad():
            ab = module.colorize(l_small, [caption])
        ab = F.interpolate(ab, size=l_full.shape[2:], mode="bilinear", align_corners=False)
        written.append(save_image(recombine(l_full, ab)[0].cpu(), out / f"{name}_colorized.png"))
        groups = group_maps(module, l_small, [caption])
        image = group_overlay((l_full / 100.0).clamp(0, 1), groups, count)[0].cpu()
        written.append(save_image(image, out / f"{name}_groups.png"))
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcoins explain",
        description="The hard group assignment of image tokens (Eq. 11) painted over the image, "
        "plus the colorization.",
    )
    parser.add_argument("inputs", nargs="*", help="image files or folders")
    parser.add_argument(
        "--ckpt", required=True, help="an lcoins fit checkpoint or a save_pretrained folder"
    )
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--caption", default=None, help="caption used for every input image")
    parser.add_argument(
        "--capshapes", type=int, default=0, metavar="N",
        help="also explain the first N CapShapes validation scenes with their own captions",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=None, help="network input side")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parser


def explain_main(argv: Sequence[str]) -> int:
    """``lcoins explain ...``; returns the exit code."""
    from chromalab.data import CapShapes
    from chromalab.io import ImageLoadError, iter_image_files, load_image
    from chromalab.models import resolve_device
    from lcoins.module import LCoInsModule

    args = _parser().parse_args(list(argv))
    try:
        module = LCoInsModule.load_trained(args.ckpt, resolve_device(args.device))
        size = args.size or module.network_config.image_size
        images, captions = [], []
        for item in args.inputs:
            for path in iter_image_files(item):
                images.append((path.stem, load_image(path)))
                captions.append(args.caption)
        if images and args.caption is None:
            raise ValueError("L-CoIns colorizes from a caption: --caption")
        if args.capshapes > 0:
            scenes = CapShapes(length=args.capshapes, size=size, seed=1)  # validation scenes
            for i in range(args.capshapes):
                images.append((f"capshapes{i:04d}", scenes[i]["rgb"]))
                captions.append(scenes[i]["caption"])
        if not images:
            raise ValueError("nothing to explain: give image files/folders or --capshapes N")
        written = explain_images(module, images, captions, args.output, size)
    except (FileNotFoundError, ValueError, ImageLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} image(s) into {args.output}")
    return 0
