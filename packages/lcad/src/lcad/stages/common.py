"""What L-CAD's stage modules share: the model's image range and earlier stages' weights."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["load_stage", "to_image", "to_model"]


def to_model(rgb: Tensor) -> Tensor:
    """RGB in ``[0, 1]`` to the models' ``[-1, 1]``."""
    return rgb.float() * 2 - 1


def to_image(x: Tensor) -> Tensor:
    """The models' ``[-1, 1]`` to RGB in ``[0, 1]`` (clamped)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def load_stage(path: str, prefix: str) -> dict[str, Tensor]:
    """The entries of a Lightning checkpoint's state dict under ``prefix`` (prefix removed)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise ValueError(f"{path}: no weights under {prefix!r}")
    return own
