"""Colorization metrics as torchmetrics ``Metric`` objects (DDP-safe sum states).

* :class:`AuCCMF` — raw and class-rebalanced AuC of the ab-error CMF (CIC §4.1).
* :class:`ABAccuracy` — top-k accuracy in the quantized ab space (FiLM Table 1).
* :class:`Colorfulness` — Hasler & Süsstrunk colorfulness and its gap to the references.
* :func:`psnr_ssim_metrics`, :class:`LPIPS`, :class:`FID` — image-quality metrics; LPIPS and
  FID load backbones from local files only.
* :class:`CaptionConsistency` — language grounding on CapShapes; :func:`manipulation_accuracy`
  for the caption-manipulation study; :func:`output_grid_ceiling` for what a coarse output
  grid lets a model reach.
"""

from chromalab.metrics.accuracy import ABAccuracy
from chromalab.metrics.caption import (
    CaptionConsistency,
    manipulate_batch,
    manipulation_accuracy,
    output_grid_ceiling,
)
from chromalab.metrics.cmf import AuCCMF, auc_cmf_curve
from chromalab.metrics.colorfulness import Colorfulness, colorfulness
from chromalab.metrics.perceptual import (
    FID,
    LPIPS,
    MissingWeightsError,
    psnr_ssim_metrics,
)

__all__ = [
    "FID",
    "LPIPS",
    "ABAccuracy",
    "AuCCMF",
    "CaptionConsistency",
    "Colorfulness",
    "MissingWeightsError",
    "auc_cmf_curve",
    "colorfulness",
    "manipulate_batch",
    "manipulation_accuracy",
    "output_grid_ceiling",
    "psnr_ssim_metrics",
]
