"""Activation maps after the FiLM layers (Manjunatha et al. 2018, §4 and Fig. 4).

"These activation maps correspond to the mean activation immediately after the FILM layers of
the sixth, seventh, and eighth blocks" and (footnote 4) "we compute the mean across the c
dimension and scale the resulting h x w feature map between the limits [0, 255]".

:func:`activation_maps` returns those maps (scaled to ``[0, 1]`` per image), :func:`heatmap`
colours them, and :func:`explain_images` writes, for each image, the colorization and one PNG
per block with the heatmap laid over the grey image (``film-color explain``). For CONCAT the
mean is taken over the image channels only (the tiled caption channels are constant); for the
FCNN the maps are the plain block outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from chromalab.color import rgb_to_lab
from chromalab.io import recombine, save_image
from chromalab.report import heatmap, unit_range

__all__ = ["EXPLAIN_BLOCKS", "activation_maps", "explain_images", "heatmap", "overlay"]

#: Blocks shown in Fig. 4 (1-based).
EXPLAIN_BLOCKS: tuple[int, ...] = (6, 7, 8)


@torch.no_grad()
def activation_maps(
    module, l: Tensor, captions: Sequence[str] | None, blocks: Sequence[int] = EXPLAIN_BLOCKS
) -> dict[int, Tensor]:
    """Channel-mean activation of the conditioned output of ``blocks`` (1-based).

    Args:
        module: a :class:`~film_color.module.FilmColorModule`.
        l: lightness ``(B, 1, H, W)`` in ``[0, 100]``.
        captions: ``B`` captions (ignored by the FCNN).
        blocks: block numbers in ``1..8``.

    Returns:
        ``{block: maps}`` with ``maps`` float ``(B, h, w)`` at the block's resolution, scaled
        to ``[0, 1]`` per image (min to 0, max to 1; a constant map gives zeros).
    """
    bad = [b for b in blocks if not 1 <= b <= 8]
    if bad:
        raise ValueError(f"blocks must be in 1..8, got {bad}")
    features = module.features(l, captions)
    channels = module.network.block_channels
    out = {}
    for block in blocks:
        mean = features[block - 1][:, : channels[block - 1]].float().mean(dim=1)
        out[block] = unit_range(mean)
    return out


def overlay(gray: Tensor, maps: Tensor, alpha: float = 0.55) -> Tensor:
    """Heatmap of ``maps`` ``(B, h, w)`` blended over a grey image.

    Args:
        gray: ``(B, 1, H, W)`` or ``(B, 3, H, W)`` in ``[0, 1]``.
        maps: ``(B, h, w)`` in ``[0, 1]``, upsampled bilinearly to ``(H, W)``.
        alpha: weight of the heatmap.

    Returns:
        RGB ``(B, 3, H, W)`` in ``[0, 1]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = F.interpolate(heatmap(maps), size=gray.shape[2:], mode="bilinear", align_corners=False)
    return (1 - alpha) * gray.expand(-1, 3, -1, -1) + alpha * colors.clamp(0, 1)


def explain_images(
    module,
    images: Sequence[tuple[str, Tensor]],
    captions: Sequence[str] | None,
    out_dir: str | Path,
    size: int,
    blocks: Sequence[int] = EXPLAIN_BLOCKS,
) -> list[Path]:
    """Write ``<name>_colorized.png`` and ``<name>_block<n>.png`` for every image.

    Args:
        module: a :class:`~film_color.module.FilmColorModule` (eval mode is set here).
        images: ``(name, rgb)`` pairs, ``rgb`` ``(3, H, W)`` in ``[0, 1]`` (only L is used).
        captions: one caption per image (``None`` for the FCNN).
        out_dir: output folder (created).
        size: network input side (multiple of 8); maps are shown at the image's own size.
        blocks: block numbers (1-based).

    Returns:
        the written paths.
    """
    if size % 8:
        raise ValueError(f"size must be a multiple of 8, got {size}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    module.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, rgb) in enumerate(images):
        l_full = rgb_to_lab(rgb[None].to(module.device))[:, :1]
        l_small = F.interpolate(l_full, size=(size, size), mode="bilinear", antialias=True)
        caption = None if captions is None else [captions[i]]
        with torch.no_grad():
            ab = module.colorize(l_small, caption)
        written.append(save_image(recombine(l_full, ab)[0].cpu(), out / f"{name}_colorized.png"))
        gray = (l_full / 100.0).clamp(0, 1)
        for block, maps in activation_maps(module, l_small, caption, blocks).items():
            image = overlay(gray, maps)[0].cpu()
            written.append(save_image(image, out / f"{name}_block{block}.png"))
    return written
