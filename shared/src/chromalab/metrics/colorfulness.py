"""Colorfulness of Hasler & Süsstrunk, "Measuring colorfulness in natural images" (2003).

On sRGB in ``[0, 255]``: ``rg = R - G``, ``yb = (R + G) / 2 - B`` and
``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)``
(population statistics over the pixels of one image). L-CAD (Table 3) reports the mean ``M``
over a test set ("colorful") and its absolute difference to the mean of the ground-truth images
("Δcolorful").
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["Colorfulness", "colorfulness"]


def colorfulness(rgb: Tensor) -> Tensor:
    """Per-image colorfulness ``M`` of sRGB ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B,)``."""
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must have shape (B, 3, H, W), got {tuple(rgb.shape)}")
    x = rgb.double() * 255.0
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1).square() + yb.mean(dim=1).square())
    return (std + 0.3 * mean).to(rgb.dtype if rgb.is_floating_point() else torch.float32)


class Colorfulness(Metric):
    """Mean colorfulness of predictions, and of references when they are given.

    ``update(preds, target=None)`` with sRGB ``(B, 3, H, W)`` in ``[0, 1]``. ``compute()``
    returns ``colorfulness`` and, if references were seen, ``reference_colorfulness`` and
    ``colorfulness_delta = |colorfulness - reference_colorfulness|`` (L-CAD's Δcolorful).
    """

    full_state_update = False
    higher_is_better = True
    pred_sum: Tensor
    ref_sum: Tensor
    count: Tensor
    ref_count: Tensor

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("pred_sum", "ref_sum", "count", "ref_count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor | None = None) -> None:
        self.pred_sum += colorfulness(preds).double().sum()
        self.count += preds.shape[0]
        if target is not None:
            if target.shape != preds.shape:
                raise ValueError(
                    f"target shape {tuple(target.shape)} differs from preds {tuple(preds.shape)}"
                )
            self.ref_sum += colorfulness(target).double().sum()
            self.ref_count += target.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if self.count == 0:
            raise ValueError("Colorfulness.compute() called before any images were seen")
        out = {"colorfulness": (self.pred_sum / self.count).float()}
        if self.ref_count > 0:
            ref = self.ref_sum / self.ref_count
            out["reference_colorfulness"] = ref.float()
            out["colorfulness_delta"] = (out["colorfulness"].double() - ref).abs().float()
        return out
