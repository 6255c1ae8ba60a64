"""Evaluation of CIC and its baselines, as in Table 1 of Zhang et al. 2016 (§4.1-4.2).

Predictors map a batch (``l``, ``ab``, ``rgb`` at full resolution) to a full-resolution ab:

* :func:`model_predictor` — a trained network, annealed mean at temperature ``T``, ab
  upsampled bilinearly to the input size (how the paper shows and scores results);
* :func:`gray_predictor` — "Gray": every pixel gets ab = 0;
* :func:`random_predictor` — "Random": the ab of another image of the evaluated set.

:func:`evaluate` runs a predictor over batches and returns AuC CMF (raw, rebalanced), the
colorfulness of the outputs and its gap to the ground truth, and optionally VGG-16 top-5
accuracy on the colorized images when class labels and local VGG weights are available.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from chromalab.color import lab_to_rgb, rgb_to_l_ab
from chromalab.metrics import AuCCMF, Colorfulness
from chromalab.metrics.perceptual import MissingWeightsError

__all__ = [
    "VGG16_WEIGHTS_FILE",
    "evaluate",
    "gray_predictor",
    "model_predictor",
    "random_predictor",
    "vgg16_classifier",
]

Predictor = Callable[[dict], Tensor]
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def model_predictor(module, temperature: float | None = None) -> Predictor:
    """Full-resolution ab from a :class:`~cic.module.CICModule` (or anything with
    ``colorize(l, temperature)``)."""

    @torch.inference_mode()
    def predict(batch: dict) -> Tensor:
        ab = module.colorize(batch["l"], temperature)
        return F.interpolate(ab, size=batch["l"].shape[2:], mode="bilinear", align_corners=False)

    return predict


def gray_predictor(batch: dict) -> Tensor:
    """The Gray baseline: ab = 0 everywhere."""
    return torch.zeros_like(batch["ab"])


def random_predictor(pool: Tensor, seed: int = 0) -> Predictor:
    """The Random baseline: each image gets the ab of a randomly chosen image of ``pool``.

    Args:
        pool: ``(N, 2, H, W)`` ab maps of the evaluated set (resized to each batch's size).
    """
    generator = torch.Generator().manual_seed(seed)

    def predict(batch: dict) -> Tensor:
        b = batch["ab"].shape[0]
        choice = torch.randint(0, pool.shape[0], (b,), generator=generator)
        ab = pool[choice].to(batch["ab"].device)
        return F.interpolate(ab, size=batch["ab"].shape[2:], mode="bilinear", align_corners=False)

    return predict


def vgg16_classifier(weights: str | Path | None, device: torch.device | str = "cpu"):
    """torchvision VGG-16 with ImageNet weights from a local file (``vgg16-397923af.pth``).

    Raises :class:`MissingWeightsError` naming the file when it is absent.
    """
    import torchvision

    if weights is None or not Path(weights).is_file():
        raise MissingWeightsError(
            f"VGG-16 classification needs local ImageNet weights '{VGG16_WEIGHTS_FILE}' "
            f"(got {weights}); chromalab never downloads weights"
        )
    model = torchvision.models.vgg16(weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def _vgg_input(rgb: Tensor) -> Tensor:
    x = F.interpolate(rgb, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(_IMAGENET_MEAN, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=rgb.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def evaluate(
    predict: Predictor,
    batches: Iterable[dict],
    classifier: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Score ``predict`` on ``batches`` (dicts with ``rgb``; ``l``/``ab`` are added if absent).

    Returns:
        ``auc_cmf``, ``auc_cmf_rebalanced`` (percent), ``colorfulness``,
        ``reference_colorfulness``, ``colorfulness_delta``, ``images``; and ``vgg_top5``
        (percent) when ``classifier`` is given and batches carry integer ``label`` tensors.
    """
    cmf, colorfulness = AuCCMF(), Colorfulness()
    top5_hits = total = images = 0
    for batch in batches:
        if batch is None:
            continue
        if "l" not in batch:
            batch = {**batch, **dict(zip(("l", "ab"), rgb_to_l_ab(batch["rgb"]), strict=True))}
        ab = predict(batch)
        cmf.update(ab, batch["ab"])
        rgb = lab_to_rgb(torch.cat([batch["l"], ab], dim=1))
        colorfulness.update(rgb, batch["rgb"])
        images += rgb.shape[0]
        if classifier is not None and "label" in batch:
            logits = classifier(_vgg_input(rgb))
            top5 = logits.topk(5, dim=1).indices
            top5_hits += (top5 == batch["label"].to(top5.device)[:, None]).any(1).sum().item()
            total += rgb.shape[0]
    out = {k: float(v) * 100 for k, v in cmf.compute().items() if k.startswith("auc")}
    out.update({k: float(v) for k, v in colorfulness.compute().items()})
    out["images"] = images
    if total:
        out["vgg_top5"] = 100.0 * top5_hits / total
    return out
