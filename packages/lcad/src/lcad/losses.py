"""The pixel-space losses of L-CAD's luminance-guided compression (§3.2, Eq. 3-4).

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

* Eq. 3, the artifact map: ``M_hw = Σ_{p∈Ω(h,w)} ((δ_p - μ)/N_win)²`` with
  ``μ = Σ_{p∈Ω(h,w)} δ_p / N_win²``, i.e. the variance of the residual ``δ = x - x̃`` over the
  ``N_win x N_win`` window ``Ω(h, w)`` centred on each pixel. Choices where the paper is silent:
  ``δ`` is the residual averaged over the colour channels (the map has no channel index);
  windows are cut at the image border (the variance of the pixels inside the image, as
  :func:`torch.nn.functional.avg_pool2d` with ``count_include_pad=False`` gives it);
  ``N_win = 7`` is LDL's window (Liang, Zeng, Zhang, "Details or Artifacts: A Locally
  Discriminative Learning Approach to Realistic Image Super-Resolution", CVPR 2022,
  arXiv:2203.09195, which the paper follows). The map is detached: the paper applies it "as a
  weight" to ``L_rec`` and writes no gradient through it. Neither LDL's code
  (csjliang/LDL, ``basicsr/losses/LDL_loss.py``, used in
  ``basicsr/models/esrganArtifactsDis_model.py``) nor the release detaches it: there the
  gradient of ``L_rec`` also flows through ``M``, pushing the residual's local variance down.
* The release's map (changzheng123/L-CAD, ``get_refined_artifact_map`` in
  ``ldm/modules/losses/contperceptual.py``, LDL's map without LDL's EMA mask) differs from
  Eq. 3, which is what is implemented here: its residual is ``Σ_c |δ_c|`` (summed over the
  channels, absolute), its windows are reflect-padded, its variance is the unbiased one
  (``/(N_win² - 1)``), and it multiplies the map by a patch-level weight, the variance of that
  residual over the whole image to the power 1/5. Its ``L_rec`` is
  ``mean |M ⊙ x̃ - M ⊙ x|`` (as here), and its perceptual weight is 0 (no ``L_per``).
* ``L_rec = ‖M ⊙ (x - x̃)‖₁``, averaged over pixels and channels.
* ``L_dis``: the hinge GAN loss of a patch discriminator (:class:`PatchDiscriminator`); the
  generator's term is ``-mean D(x̃)``.
* ``L_per``: LPIPS (Zhang et al., CVPR 2018) when its backbone weights are given; otherwise
  :class:`FeaturePerceptualLoss`, the distance of channel-normalised features of a configurable
  timm network (LPIPS's form with equal layer weights), from a local weight file or, for
  plumbing runs, random weights (said in the log: then it is no perceptual measure).
* Eq. 4: ``L_pix = L_rec + α L_dis + β L_per`` with ``β = 0.5`` (:func:`pixel_loss`). The
  paper gives ``α = 1``; the release weights ``L_dis`` adaptively
  (:func:`adaptive_weight`, its ``disc_weight`` of 1 in place of the paper's ``α``), as
  :class:`lcad.stages.LCADCompressionModule` does.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeaturePerceptualLoss",
    "PatchDiscriminator",
    "adaptive_weight",
    "artifact_map",
    "discriminator_hinge_loss",
    "generator_hinge_loss",
    "pixel_loss",
    "reconstruction_loss",
]


def artifact_map(target: Tensor, output: Tensor, window: int = 7) -> Tensor:
    """Eq. 3: the local variance ``(B, 1, H, W)`` of the channel-mean residual
    ``target - output`` (both ``(B, C, H, W)``) over ``window x window`` windows (odd)."""
    if target.shape != output.shape or target.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) images of one shape, got {tuple(target.shape)} and "
            f"{tuple(output.shape)}"
        )
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    delta = (target.float() - output.float()).mean(1, keepdim=True)
    pool = dict(kernel_size=window, stride=1, padding=window // 2, count_include_pad=False)
    mean = F.avg_pool2d(delta, **pool)
    # E[δ²] - E[δ]² in one pass over the image (no unfolded window copies); rounding can take
    # it a hair below 0 where the window is flat
    return (F.avg_pool2d(delta * delta, **pool) - mean * mean).clamp_min(0)


def reconstruction_loss(target: Tensor, output: Tensor, window: int = 7) -> Tensor:
    """``L_rec = mean |M ⊙ (x - x̃)|`` with the artifact map ``M`` of Eq. 3, detached (a weight;
    the release and LDL let the gradient through it: see the module's notes)."""
    with torch.no_grad():
        weight = artifact_map(target, output, window)
    return (weight * (target.float() - output.float())).abs().mean()


def discriminator_hinge_loss(real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's hinge loss on its logits for real and generated images."""
    return 0.5 * (F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean())


def generator_hinge_loss(fake: Tensor) -> Tensor:
    """``L_dis`` of Eq. 4 for the generator: ``-mean D(x̃)``."""
    return -fake.float().mean()


def adaptive_weight(
    rec: Tensor, adversarial: Tensor, last_layer: Tensor, weight: float = 1.0
) -> Tensor:
    """The weight of the generator's adversarial term as the release computes it (Esser,
    Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021,
    arXiv:2012.09841, §3.1; changzheng123/L-CAD, ``calculate_adaptive_weight`` in
    ``ldm/modules/losses/contperceptual.py``, applied to its artifact-weighted ``L_rec``):
    ``weight * ‖∇_W rec‖ / (‖∇_W adversarial‖ + 1e-4)``, clamped to ``[0, 1e4]`` and detached,
    with ``W`` = ``last_layer`` (the decoder's last weight). The graphs of both losses are kept
    for their own backward pass."""
    (rec_grad,) = torch.autograd.grad(rec, last_layer, retain_graph=True)
    (adversarial_grad,) = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    ratio = rec_grad.float().norm() / (adversarial_grad.float().norm() + 1e-4)
    return ratio.clamp(0.0, 1e4).detach() * weight


def pixel_loss(
    rec: Tensor,
    dis: Tensor | None,
    per: Tensor | None,
    alpha: float | Tensor = 1.0,
    beta: float = 0.5,
) -> Tensor:
    """Eq. 4: ``L_rec + α L_dis + β L_per`` (a missing term counts 0); ``α`` a number or the
    detached tensor of :func:`adaptive_weight`."""
    total = rec
    if dis is not None:
        total = total + alpha * dis
    if per is not None and beta:
        total = total + beta * per
    return total


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator (Isola et al., CVPR 2017): ``layers`` 4x4 stride-2
    convolutions (channels doubled, at most 8x ``channels``), one 4x4 stride-1 convolution and a
    1-channel 4x4 head; one logit per overlapping patch. Normalization: GroupNorm, so a
    sample's logits do not depend on the rest of its batch (DDP ranks see different batches).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(32, out // 4), out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Patch logits ``(B, 1, h, w)`` of images ``x`` ``(B, C, H, W)``."""
        return self.layers(x)


class FeaturePerceptualLoss(nn.Module):
    """A perceptual distance on a timm network's features: for each feature level, the squared
    difference of the channel-normalised features, summed over channels and averaged over
    positions; averaged over levels (LPIPS's form with equal, not learned, layer weights).

    Args:
        name: a timm model with ``features_only`` support (e.g. ``"vgg16"``, ``"resnet18"``).
        weights: a local weight file of that model (timm's ``pretrained_cfg_overlay``), or
            ``None``: random weights (plumbing only).
        levels: the feature levels used (timm's ``out_indices``; default all).

    Inputs are RGB in ``[-1, 1]``, normalised with the network's mean and std. Frozen.
    """

    def __init__(
        self, name: str, weights: str | Path | None = None, levels: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        import timm

        options: dict = {"features_only": True}
        if levels is not None:
            options["out_indices"] = tuple(levels)
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"feature network weights {weights}: no such file")
            options |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
        self.net = timm.create_model(name, **options).eval().requires_grad_(False)
        config = self.net.pretrained_cfg
        mean, std = config.get("mean", (0.5,) * 3), config.get("std", (0.5,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.name, self.pretrained = name, weights is not None

    def train(self, mode: bool = True) -> FeaturePerceptualLoss:
        super().train(mode)
        self.net.eval()  # frozen: fixed normalisation statistics
        return self

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """The distance per image ``(B,)`` between two RGB batches in ``[-1, 1]``."""
        x = ((torch.cat((output, target)) + 1) / 2 - self.mean) / self.std
        total = output.new_zeros(output.shape[0])
        features = self.net(x)
        for f in features:
            f = f / (f.norm(dim=1, keepdim=True) + 1e-10)
            a, b = f.chunk(2)
            total = total + (a - b).square().sum(dim=1).mean(dim=(1, 2))
        return total / len(features)
