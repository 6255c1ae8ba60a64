"""Perceptual metrics that need pretrained backbones: LPIPS and FID, from local weight files.

Both wrap torchmetrics' implementations; only the weight loading differs. torchmetrics would
download the ImageNet backbones at construction; chromalab never downloads, so the backbone
weights are given as local files and a missing file raises :class:`MissingWeightsError` naming
the file to fetch. PSNR and SSIM need no weights: use :func:`psnr_ssim_metrics`.

* LPIPS (Zhang et al. 2018): the linear calibration layers ship inside torchmetrics; the
  backbone is torchvision's AlexNet / VGG16 / SqueezeNet 1.1 ImageNet state_dict (e.g.
  ``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``, ``squeezenet1_1-b8a52dc0.pth``).
* FID (Heusel et al. 2017): the InceptionV3 port of torch-fidelity,
  ``weights-inception-2015-12-05-6726825d.pth`` (the TF-FID graph weights in PyTorch format).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance

__all__ = [
    "FID",
    "FID_WEIGHTS_FILE",
    "LPIPS",
    "LPIPS_BACKBONE_FILES",
    "MissingWeightsError",
    "psnr_ssim_metrics",
]

LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
FID_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights needed by a metric are not available locally."""


def _require_file(path: str | Path | None, expected: str, what: str) -> Path:
    if path is None:
        raise MissingWeightsError(
            f"{what} needs pretrained weights, which chromalab never downloads: download "
            f"'{expected}' yourself and pass its local path"
        )
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"{what}: weights file not found: {path} (expected a local copy of '{expected}')"
        )
    return path


def psnr_ssim_metrics() -> MetricCollection:
    """PSNR and SSIM on sRGB in ``[0, 1]`` (torchmetrics, ``data_range=1``)."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        }
    )


class LPIPS(Metric):
    """Mean LPIPS distance between predictions and references (lower is better).

    Args:
        backbone_weights: local torchvision ImageNet state_dict of the backbone
            (see :data:`LPIPS_BACKBONE_FILES`). Required: :class:`MissingWeightsError` if absent.
        net: ``"alex"`` (the LPIPS default, used by L-CoIns and L-CAD), ``"vgg"`` or ``"squeeze"``.

    ``update(preds, target)`` with sRGB ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    full_state_update = False
    higher_is_better = False
    total: Tensor
    count: Tensor

    def __init__(self, backbone_weights: str | Path | None, net: str = "alex", **kwargs):
        super().__init__(**kwargs)
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        path = _require_file(backbone_weights, LPIPS_BACKBONE_FILES[net], f"LPIPS ({net})")
        from torchmetrics.functional.image.lpips import _LPIPS

        # pnet_rand=True builds the backbone without downloading; the calibrated linear layers
        # are loaded from the file torchmetrics ships, then the backbone from `path`.
        self.net = _LPIPS(pretrained=True, net=net, pnet_rand=True)
        self._load_backbone(path)
        self.net.eval().requires_grad_(False)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _load_backbone(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        own = self.net.net.state_dict()
        # our keys are "slice<N>.<layer index>.<param>"; torchvision's "features.<index>.<param>"
        mapped = {}
        for key in own:
            source = "features." + key.split(".", 1)[1]
            if source not in state:
                raise ValueError(f"{path}: missing backbone parameter '{source}'")
            if state[source].shape != own[key].shape:
                raise ValueError(
                    f"{path}: '{source}' has shape {tuple(state[source].shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
            mapped[key] = state[source]
        self.net.net.load_state_dict(mapped)

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape or preds.dim() != 4 or preds.shape[1] != 3:
            raise ValueError(
                f"preds and target must both be (B, 3, H, W), got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        dist = self.net(preds.float() * 2 - 1, target.float() * 2 - 1)  # LPIPS expects [-1, 1]
        self.total += dist.double().sum()
        self.count += preds.shape[0]

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class _FidelityInception(nn.Module):
    """torch-fidelity's InceptionV3 as a torchmetrics FID feature extractor (2048-d pool)."""

    def __init__(self, weights: Path):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        )
        self.num_features = 2048

    def forward(self, images: Tensor) -> Tensor:
        # torchmetrics hands custom extractors the float images in [0, 1]; torch-fidelity's
        # network takes uint8 in [0, 255], as in the original TF-FID graph.
        if images.is_floating_point():
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.model(images)[0].reshape(images.shape[0], -1)


class FID(FrechetInceptionDistance):
    """Fréchet Inception Distance between colorized and real images (lower is better).

    torchmetrics' FID with the backbone loaded from a local file; DDP-safe as the parent.

    Args:
        inception_weights: local copy of :data:`FID_WEIGHTS_FILE`; required unless
            ``feature_extractor`` is given.
        feature_extractor: any module mapping float images ``(N, 3, H, W)`` in ``[0, 1]`` to
            ``(N, d)`` features (with a ``num_features`` attribute), e.g. a tiny test backbone.

    ``update(images, real)`` with sRGB ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        inception_weights: str | Path | None = None,
        feature_extractor: nn.Module | None = None,
        **kwargs,
    ):
        if feature_extractor is None:
            path = _require_file(inception_weights, FID_WEIGHTS_FILE, "FID")
            feature_extractor = _FidelityInception(path)
        super().__init__(feature=feature_extractor, normalize=True, **kwargs)
