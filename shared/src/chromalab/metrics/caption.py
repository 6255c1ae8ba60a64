"""Does a colorization follow its caption? Object colour accuracy on CapShapes scenes.

:class:`CaptionConsistency` names the colour of each object of a colorized scene: the mean
predicted ab inside the object's mask, classified by its nearest lexicon centre among the
CapShapes chromatic colours (:data:`chromalab.text.CHROMATIC_COLORS`). Accuracies are reported
for objects the caption mentions, per description level of L-CAD (Chang et al., NeurIPS 2023,
arXiv:2305.15217: complete, partial, scarce), and for
unmentioned objects whose colour is their shape's canonical one (what a colour prior can get).

:func:`manipulate_batch` and :func:`manipulation_accuracy` automate the caption-manipulation
study of FiLM (Manjunatha et al., NAACL 2018, Sec. 3 "Caption manipulation",
arXiv:1804.06026): swap the colour words of the captions,
colorize again, and measure how often the objects take the NEW colours.

:func:`output_grid_ceiling` is the best consistency a network can be measured at when its
output grid is coarser than the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from chromalab.bins import ABBins
from chromalab.color import rgb_to_l_ab
from chromalab.text import (
    CHROMATIC_COLORS,
    COLOR_LEXICON,
    DESCRIPTION_LEVELS,
    RandomSource,
    ab_centers,
    random_color_swap,
)

__all__ = [
    "CaptionConsistency",
    "manipulate_batch",
    "manipulation_accuracy",
    "output_grid_ceiling",
]

# Order of the counters: all mentioned, mentioned per level, unmentioned canonical.
_GROUPS = ("accuracy", *(f"accuracy_{level}" for level in DESCRIPTION_LEVELS))
_GROUPS = (*_GROUPS, "unmentioned_canonical_accuracy")


class CaptionConsistency(Metric):
    """Fraction of objects whose colorized mean ab is nearest to their caption colour's centre.

    For every real object (``color_ids >= 0``) with a non-empty mask, the mean predicted ab
    inside the mask is compared (Euclidean distance in ab) with the centres of
    ``candidate_ids``; the object is correct when the nearest one is its own colour.

    ``compute()`` returns a dict of float32 scalars, NaN where no object counts:

    * ``accuracy``: mentioned objects, all levels;
    * ``accuracy_complete``, ``accuracy_partial``, ``accuracy_scarce``: mentioned objects of
      captions of that level;
    * ``unmentioned_canonical_accuracy``: objects not mentioned whose colour is canonical.

    The states are sums only (``dist_reduce_fx="sum"``), so the metric is exact under DDP.

    Args:
        candidate_ids: lexicon ids the colours are classified among.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, candidate_ids: Sequence[int] = CHROMATIC_COLORS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(candidate_ids) < 2:
            raise ValueError(f"need at least 2 candidate colours, got {tuple(candidate_ids)}")
        self.register_buffer("centers", ab_centers(candidate_ids), persistent=False)
        self.register_buffer("candidate_ids", torch.tensor(candidate_ids), persistent=False)
        self.add_state("correct", torch.zeros(len(_GROUPS), dtype=torch.long), "sum")
        self.add_state("total", torch.zeros(len(_GROUPS), dtype=torch.long), "sum")

    def update(
        self,
        pred_ab: Tensor,
        masks: Tensor,
        color_ids: Tensor,
        mentioned: Tensor,
        levels: Sequence[str],
        canonical: Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            pred_ab: float ``(B, 2, H, W)``, predicted ab in Lab units (about ``[-110, 110]``;
                denormalize network outputs first with :func:`chromalab.color.denormalize_ab`).
            masks: bool ``(B, K, H', W')``; resized (nearest) to ``(H, W)`` when they differ.
            color_ids: long ``(B, K)`` lexicon ids, ``-1`` for padding.
            mentioned: bool ``(B, K)``, the caption names the object.
            levels: ``B`` description levels from :data:`chromalab.text.DESCRIPTION_LEVELS`.
            canonical: bool ``(B, K)``, the object has its canonical colour (optional).
        """
        if pred_ab.dim() != 4 or pred_ab.shape[1] != 2:
            raise ValueError(f"pred_ab must have shape (B, 2, H, W), got {tuple(pred_ab.shape)}")
        batch = pred_ab.shape[0]
        if masks.dim() != 4 or masks.shape[0] != batch or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be bool (B={batch}, K, H, W), got {masks.dtype} {tuple(masks.shape)}"
            )
        objects = masks.shape[:2]
        for name, value in (("color_ids", color_ids), ("mentioned", mentioned)):
            if value.shape != objects:
                raise ValueError(
                    f"{name} must have shape {tuple(objects)}, got {tuple(value.shape)}"
                )
        if canonical is not None and canonical.shape != objects:
            raise ValueError(
                f"canonical must have shape {tuple(objects)}, got {tuple(canonical.shape)}"
            )
        if len(levels) != batch or any(level not in DESCRIPTION_LEVELS for level in levels):
            raise ValueError(
                f"levels must be {batch} values from {DESCRIPTION_LEVELS}, got {levels}"
            )

        device = pred_ab.device
        masks, color_ids, mentioned = masks.to(device), color_ids.to(device), mentioned.to(device)
        if masks.shape[-2:] != pred_ab.shape[-2:]:
            resized = F.interpolate(masks.float(), size=pred_ab.shape[-2:], mode="nearest")
            masks = resized > 0.5
        weights = masks.to(pred_ab.dtype)
        area = weights.sum(dim=(-2, -1))
        mean_ab = torch.einsum("bkhw,bchw->bkc", weights, pred_ab) / area.clamp(min=1)[..., None]
        distances = ((mean_ab.unsqueeze(-2) - self.centers.to(pred_ab.dtype)) ** 2).sum(-1)
        predicted = self.candidate_ids[distances.argmin(-1)]

        valid = (color_ids >= 0) & (area > 0)
        unknown = valid & ~torch.isin(color_ids, self.candidate_ids)
        if unknown.any():
            bad = sorted(set(color_ids[unknown].tolist()))
            raise ValueError(f"color_ids {bad} are not among the candidates {self.candidate_ids}")
        correct = valid & (predicted == color_ids)

        level_index = torch.tensor([DESCRIPTION_LEVELS.index(lv) for lv in levels], device=device)
        per_level = level_index.view(1, batch, 1) == torch.arange(3, device=device).view(3, 1, 1)
        said = valid & mentioned
        if canonical is None:
            canonical = torch.zeros_like(mentioned)
        unsaid = valid & ~mentioned & canonical.to(device)
        groups = torch.cat([said.unsqueeze(0), said.unsqueeze(0) & per_level, unsaid.unsqueeze(0)])
        self.correct += (groups & correct).sum(dim=(1, 2))
        self.total += groups.sum(dim=(1, 2))

    def compute(self) -> dict[str, Tensor]:
        """Accuracies as float32 scalars (NaN when no object counts)."""
        ratio = self.correct.double() / self.total.double()
        ratio = torch.where(self.total > 0, ratio, torch.full_like(ratio, float("nan"))).float()
        return {name: ratio[i] for i, name in enumerate(_GROUPS)}


def manipulate_batch(
    batch: dict[str, Any], generator: RandomSource | Sequence[RandomSource]
) -> dict[str, Any]:
    """Swap every caption's colour words for other colours (FiLM's caption manipulation).

    Each caption goes through :func:`chromalab.text.random_color_swap`; the ``color_ids`` of
    mentioned objects follow the swap, and so does ``background_color_id`` (when present) for
    complete-level captions, the only level that names the background's colour. Scarce
    captions have no colour word and are left as they are.

    Args:
        batch: a CapShapes batch with ``caption`` (list of str), ``color_ids`` (long ``(B, K)``),
            ``mentioned`` (bool ``(B, K)``) and ``level`` (list of str).
        generator: source of randomness for the new colours: one for the whole batch, or one
            per caption (e.g. seeded by the scene's index, so that a scene's swap does not
            depend on the batch it falls in, hence on the batch size or the number of ranks).

    Returns:
        A shallow copy of ``batch`` with new ``caption``, ``color_ids`` (and
        ``background_color_id``), plus ``color_swaps``: the ``{old id: new id}`` of each caption.
    """
    for key in ("caption", "color_ids", "mentioned", "level"):
        if key not in batch:
            raise KeyError(f"batch lacks {key!r}; it has {sorted(batch)}")
    captions, color_ids = list(batch["caption"]), batch["color_ids"]
    if color_ids.dim() != 2 or len(captions) != color_ids.shape[0]:
        raise ValueError(
            f"color_ids must be (B, K) with B = {len(captions)} captions, "
            f"got {tuple(color_ids.shape)}"
        )
    if isinstance(generator, Sequence):
        if len(generator) != len(captions):
            raise ValueError(f"{len(generator)} generators for {len(captions)} captions")
        generators = list(generator)
    else:
        generators = [generator] * len(captions)
    new_captions, swaps, tables = [], [], []
    for caption, source in zip(captions, generators, strict=True):
        new_caption, mapping = random_color_swap(caption, source)
        table = torch.arange(len(COLOR_LEXICON))
        if mapping:
            table[list(mapping)] = torch.tensor(list(mapping.values()))
        new_captions.append(new_caption)
        swaps.append(mapping)
        tables.append(table)
    table = torch.stack(tables).to(color_ids.device)  # (B, lexicon size)
    follows = batch["mentioned"].to(color_ids.device) & (color_ids >= 0)
    remapped = table.gather(1, color_ids.clamp(min=0))
    out = dict(batch)
    out["caption"] = new_captions
    out["color_ids"] = torch.where(follows, remapped, color_ids)
    out["color_swaps"] = swaps
    if "background_color_id" in batch:
        background = batch["background_color_id"]
        complete = torch.tensor(
            [lv == "complete" for lv in batch["level"]], device=background.device
        )
        swapped = table.to(background.device).gather(1, background.view(-1, 1)).view(-1)
        out["background_color_id"] = torch.where(complete, swapped, background)
    return out


def manipulation_accuracy(
    colorize: Callable[[dict[str, Any]], Tensor],
    batch: dict[str, Any],
    generator: RandomSource | Sequence[RandomSource],
) -> Tensor:
    """Accuracy of a colorizer against swapped caption colours.

    The batch's captions are manipulated with :func:`manipulate_batch`, ``colorize`` maps the
    manipulated batch to predicted ab ``(B, 2, H, W)`` in Lab units, and the result is the
    :class:`CaptionConsistency` accuracy over the objects whose colour word was swapped, judged
    against their NEW colours. NaN when no object had a colour word (e.g. only scarce captions).
    """
    if "masks" not in batch:
        raise KeyError(f"batch lacks 'masks'; it has {sorted(batch)}")
    manipulated = manipulate_batch(batch, generator)
    with torch.no_grad():
        pred_ab = colorize(manipulated)
    swapped = manipulated["color_ids"] != batch["color_ids"]
    metric = CaptionConsistency().to(pred_ab.device)
    metric.update(
        pred_ab, manipulated["masks"], manipulated["color_ids"], swapped, manipulated["level"]
    )
    return metric.compute()["accuracy"]


def output_grid_ceiling(
    batches: Iterable[dict[str, Any]], stride: int, bins: ABBins | None = None
) -> Tensor:
    """Caption consistency of the true colours seen through a ``stride`` times coarser grid.

    A network predicting ab on a grid ``stride`` times coarser than the scene (CIC and FiLM: 4)
    can at best give each output cell the mean ab of its ``stride x stride`` pixels; thin or
    small objects then borrow colour from their neighbours once the prediction is upsampled.
    This scores exactly that ideal prediction: the ground-truth ab average-pooled by
    ``stride``, snapped to the nearest centre of ``bins`` when given (the classes a
    classification network chooses among), bilinearly upsampled back to the scene as the
    colorizers' predictions are, and judged by :class:`CaptionConsistency` against every real
    object's true colour. It bounds the caption consistency and manipulation accuracy that
    any model with that output grid can be measured at.

    Args:
        batches: CapShapes batches with ``rgb`` ``(B, 3, H, W)``, ``masks``, ``color_ids`` and
            ``level``; ``H`` and ``W`` multiples of ``stride``.
        stride: scene pixels per output cell along each side (1: the scene's own grid).
        bins: ab classes to snap to, or ``None`` for the exact cell means.

    Returns:
        float32 scalar accuracy (NaN when no object counts).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    metric: CaptionConsistency | None = None
    for batch in batches:
        _, ab = rgb_to_l_ab(batch["rgb"])
        size = ab.shape[-2:]
        if size[0] % stride or size[1] % stride:
            raise ValueError(f"scene size {tuple(size)} is not a multiple of stride {stride}")
        cells = F.avg_pool2d(ab, stride)
        if bins is not None:
            bins = bins.to(cells.device)
            cells = bins.centers[bins.encode_hard(cells)].permute(0, 3, 1, 2).to(cells.dtype)
        seen = F.interpolate(cells, size=tuple(size), mode="bilinear", align_corners=False)
        if metric is None:
            metric = CaptionConsistency().to(ab.device)
        everything = torch.ones_like(batch["color_ids"], dtype=torch.bool)
        metric.update(seen, batch["masks"], batch["color_ids"], everything, batch["level"])
    if metric is None:
        raise ValueError("no batches")
    return metric.compute()["accuracy"]
