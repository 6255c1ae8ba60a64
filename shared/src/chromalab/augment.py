"""Luminance augmentation of L-CoIns (Chang et al., "L-CoIns: Language-based Colorization with
Instance Awareness", CVPR 2023, §3.2, Eq. 1-2).

A language-guided colorizer can learn to read colour words off the luminance ("yellow things
are bright") instead of off the caption. The augmentation hides that cue from the grey input
while the colour target stays the photograph's own ab:

1. Eq. 1: rotate the hue of the sRGB image in HSV by ``λ`` degrees, ``λ ∈ [-180, 180]``
   (saturation and value kept). Objects of different hues change their lightness by different
   amounts, so their relative lightness is enlarged, reduced or reversed.
2. Take CIE L of the rotated image.
3. Eq. 2: ``Î = A · I^(F_inv(γ))`` on ``I = L / 100`` in ``[0, 1]``, ``γ ~ U[1, 5]``, ``F_inv``
   the reciprocal with probability 1/2 and ``A = 1``: the whole image gets darker (``γ > 1``)
   or brighter (``1/γ < 1``), textures kept.

:func:`luminance_augmentation` is the deterministic map for given ``λ`` and exponents;
:class:`LuminanceAugmentation` draws them (one per image, from a caller's generator, so a run
replays the same draws). Everything is batched on the images' device, with no loop over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from chromalab.color import L_SCALE, hsv_to_rgb, rgb_to_hsv, rgb_to_lab

__all__ = ["LuminanceAugmentation", "luminance_augmentation", "rotate_hue"]


def _per_image(values: Tensor | float, batch: int, name: str, like: Tensor) -> Tensor:
    """``values`` as a float tensor ``(B, 1, 1)`` on ``like``'s device."""
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
    return t.view(batch, 1, 1)


def rotate_hue(rgb: Tensor, degrees: Tensor | float) -> Tensor:
    """Rotate the HSV hue of sRGB images ``rgb`` ``(B, 3, H, W)`` in ``[0, 1]`` by ``degrees``
    (a scalar or one angle per image, ``(B,)``), keeping saturation and value (Eq. 1).

    Returns sRGB ``(B, 3, H, W)`` in ``[0, 1]``; a rotation by a multiple of 360 degrees gives
    the input back up to float rounding, and grey pixels (saturation 0) are unchanged.
    """
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected sRGB of shape (B, 3, H, W), got {tuple(rgb.shape)}")
    turn = _per_image(degrees, rgb.shape[0], "degrees", rgb) * (math.pi / 180.0)
    hsv = rgb_to_hsv(rgb)
    hue = torch.remainder(hsv[:, 0] + turn, 2 * math.pi)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1)).clamp(0.0, 1.0)


def luminance_augmentation(
    rgb: Tensor, degrees: Tensor | float, exponent: Tensor | float, amplitude: float = 1.0
) -> Tensor:
    """The augmented lightness ``(B, 1, H, W)`` in ``[0, 100]`` of sRGB ``rgb`` ``(B, 3, H, W)``.

    ``100 · amplitude · (L_r / 100) ^ exponent`` with ``L_r`` the CIE L of ``rgb`` with its hue
    rotated by ``degrees`` (Eq. 1-2; ``exponent`` is ``F_inv(γ)``, i.e. ``γ`` or ``1 / γ``).
    ``degrees`` and ``exponent`` are scalars or one value per image ``(B,)``; exponents must be
    positive. With ``amplitude`` above 1 the result is clipped to 100.
    """
    if amplitude <= 0:
        raise ValueError(f"amplitude must be positive, got {amplitude}")
    power = _per_image(exponent, rgb.shape[0], "exponent", rgb)
    if bool((power <= 0).any()):
        raise ValueError("exponents must be positive")
    lightness = rgb_to_lab(rotate_hue(rgb, degrees))[:, 0] / L_SCALE
    out = amplitude * lightness.clamp(0.0, 1.0).pow(power)
    return (out.clamp(max=1.0) * L_SCALE).unsqueeze(1)


@dataclass(frozen=True)
class LuminanceAugmentation:
    """Draws the L-CoIns luminance augmentation per image and applies it (§3.2).

    A frozen dataclass: its settings are a module's constructor argument (a nested
    configuration, stored as a dict in checkpoints and ``config.json``).

    Args:
        max_degrees: hue rotations are uniform in ``[-max_degrees, max_degrees]`` (paper: 180).
        gamma_range: ``γ`` is uniform in this interval (paper: ``[1, 5]``).
        reciprocal_prob: probability that ``F_inv`` replaces ``γ`` by ``1 / γ`` (paper: 1/2).
        amplitude: the constant ``A`` (paper: 1).
    """

    max_degrees: float = 180.0
    gamma_range: tuple[float, float] = (1.0, 5.0)
    reciprocal_prob: float = 0.5
    amplitude: float = 1.0

    def __post_init__(self) -> None:
        low, high = self.gamma_range
        if not 0 < low <= high:
            raise ValueError(f"gamma_range must satisfy 0 < low <= high, got {self.gamma_range}")
        if not 0.0 <= self.reciprocal_prob <= 1.0:
            raise ValueError(f"reciprocal_prob must be in [0, 1], got {self.reciprocal_prob}")
        if self.max_degrees < 0:
            raise ValueError(f"max_degrees must be >= 0, got {self.max_degrees}")
        if self.amplitude <= 0:
            raise ValueError(f"amplitude must be positive, got {self.amplitude}")
        for name, value in (
            ("max_degrees", float(self.max_degrees)),
            ("gamma_range", (float(low), float(high))),
            ("reciprocal_prob", float(self.reciprocal_prob)),
            ("amplitude", float(self.amplitude)),
        ):
            object.__setattr__(self, name, value)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Hue rotations ``λ`` ``(B,)`` in degrees and exponents ``F_inv(γ)`` ``(B,)``, drawn on
        the CPU from ``generator`` (default: torch's global generator)."""
        u = torch.rand(3, batch, generator=generator, dtype=torch.float64)
        degrees = (2 * u[0] - 1) * self.max_degrees
        low, high = self.gamma_range
        gamma = low + (high - low) * u[1]
        exponent = torch.where(u[2] < self.reciprocal_prob, 1.0 / gamma, gamma)
        return degrees.float(), exponent.float()

    def __call__(self, rgb: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augmented lightness ``(B, 1, H, W)`` in ``[0, 100]`` of ``rgb`` ``(B, 3, H, W)``."""
        degrees, exponent = self.sample(rgb.shape[0], generator)
        return luminance_augmentation(
            rgb, degrees.to(rgb.device), exponent.to(rgb.device), self.amplitude
        )
