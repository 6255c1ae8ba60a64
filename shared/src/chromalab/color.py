"""Colour-space conversions and the network normalization conventions.

All functions take tensors shaped ``(*, 3, H, W)`` (or ``(*, 1, H, W)`` / ``(*, 2, H, W)``
for the L and ab helpers) and are differentiable.

Conventions of every chromalab package:

* RGB is sRGB with values in ``[0, 1]``.
* CIE Lab uses the D65 white point; ``L`` is in ``[0, 100]`` and ``a``, ``b`` lie in
  about ``[-110, 110]`` (for sRGB colours: a in [-86.2, 98.2], b in [-107.9, 94.5]).
* Networks never see raw Lab. They see ``normalize_l(L) = (L - 50) / 100`` (range
  ``[-0.5, 0.5]``) and ``normalize_ab(ab) = ab / 110``, the normalization of the CIC
  authors' released model, which every chromalab package shares.

The Lab conversions are kornia's: measured against ``skimage.color.rgb2lab`` over all
2^24 8-bit sRGB colours they agree to 6.6e-5 (max abs, float32) forward and 7.7e-6 on
the inverse, well inside our 1e-3 requirement, so there is no reason to re-implement them.
"""

from __future__ import annotations

import kornia.color
import torch
from torch import Tensor

__all__ = [
    "AB_SCALE",
    "L_CENTER",
    "L_SCALE",
    "ab_chroma",
    "denormalize_ab",
    "denormalize_l",
    "hsv_to_rgb",
    "lab_to_rgb",
    "normalize_ab",
    "normalize_l",
    "rgb_to_hsv",
    "rgb_to_l_ab",
    "standardize_l",
    "rgb_to_lab",
]

#: L is centred at 50 and scaled by 100 for network inputs: (L - 50) / 100.
L_CENTER: float = 50.0
L_SCALE: float = 100.0
#: ab is divided by 110 for network inputs and regression outputs.
AB_SCALE: float = 110.0


def _check_channels(x: Tensor, channels: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(f"{name} must have shape (*, {channels}, H, W), got {tuple(x.shape)}")


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB ``(*, 3, H, W)`` in ``[0, 1]`` to CIE Lab (D65) ``(*, 3, H, W)``.

    Returns L in ``[0, 100]`` and a, b in about ``[-110, 110]``.
    """
    _check_channels(rgb, 3, "rgb")
    return kornia.color.rgb_to_lab(rgb)


def lab_to_rgb(lab: Tensor, clip: bool = True) -> Tensor:
    """CIE Lab (D65) ``(*, 3, H, W)`` to sRGB ``(*, 3, H, W)``.

    Lab colours outside the sRGB gamut map outside ``[0, 1]``; ``clip=True`` (default)
    clamps them, ``clip=False`` returns the raw values (useful for gamut tests).
    """
    _check_channels(lab, 3, "lab")
    return kornia.color.lab_to_rgb(lab, clip=clip)


def rgb_to_l_ab(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Split sRGB ``(*, 3, H, W)`` into ``L (*, 1, H, W)`` and ``ab (*, 2, H, W)``."""
    lab = rgb_to_lab(rgb)
    return lab[..., :1, :, :], lab[..., 1:, :, :]


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """sRGB ``(*, 3, H, W)`` to HSV with H in ``[0, 2*pi)`` radians, S and V in ``[0, 1]``."""
    _check_channels(rgb, 3, "rgb")
    return kornia.color.rgb_to_hsv(rgb)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV (H in radians, S and V in ``[0, 1]``) ``(*, 3, H, W)`` to sRGB."""
    _check_channels(hsv, 3, "hsv")
    return kornia.color.hsv_to_rgb(hsv)


def normalize_l(l: Tensor) -> Tensor:
    """Lightness ``[0, 100]`` to the network input range ``[-0.5, 0.5]``: ``(L - 50) / 100``."""
    return (l - L_CENTER) / L_SCALE


def standardize_l(l: Tensor, min_std: float = 1.0) -> Tensor:
    """Per-image standardized lightness: ``(L - mean) / max(std, min_std)``.

    Mean and standard deviation are taken over each image's ``(C, H, W)`` (``l`` is
    ``(B, 1, H, W)``), so the result does not change when an image is made uniformly brighter
    or its contrast is scaled (while its std stays above ``min_std``, in L units; flatter
    images are only centred, which keeps a uniform image at zero instead of amplifying noise).

    This is an alternative network input to :func:`normalize_l` for data whose absolute
    lightness carries no information about colour (CapShapes draws every object's and the
    background's lightness independently of their colours): a network then need not learn to
    discount each image's brightness before it can find edges and shapes.
    """
    if l.dim() != 4 or l.shape[1] != 1:
        raise ValueError(f"expected lightness of shape (B, 1, H, W), got {tuple(l.shape)}")
    if min_std <= 0:
        raise ValueError(f"min_std must be positive, got {min_std}")
    std, mean = torch.std_mean(l, dim=(1, 2, 3), keepdim=True)
    return (l - mean) / std.clamp(min=min_std)


def denormalize_l(l_norm: Tensor) -> Tensor:
    """Inverse of :func:`normalize_l`."""
    return l_norm * L_SCALE + L_CENTER


def normalize_ab(ab: Tensor) -> Tensor:
    """ab in about ``[-110, 110]`` to about ``[-1, 1]``: ``ab / 110``."""
    return ab / AB_SCALE


def denormalize_ab(ab_norm: Tensor) -> Tensor:
    """Inverse of :func:`normalize_ab`."""
    return ab_norm * AB_SCALE


def ab_chroma(ab: Tensor) -> Tensor:
    """Chroma ``sqrt(a^2 + b^2)`` of ``ab (*, 2, H, W)``, shape ``(*, 1, H, W)``."""
    _check_channels(ab, 2, "ab")
    return torch.linalg.vector_norm(ab, dim=-3, keepdim=True)
