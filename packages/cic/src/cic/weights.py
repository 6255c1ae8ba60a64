"""Load the authors' released CIC weights (``colorization_release_v2-*.pth``).

The file is a plain ``state_dict`` (users download it themselves; chromalab never does) with:

* ``model1`` ... ``model8``: ``nn.Sequential`` blocks whose indices count ReLU and BatchNorm
  layers: ``conv, relu, conv, relu, [conv, relu,] bn``; block 8 is
  ``convtranspose(512 -> 256, k4, s2, p1), relu, conv, relu, conv, relu, conv1x1(256 -> 313)``;
* ``model_out.weight`` ``(2, 313, 1, 1)``, no bias: maps class probabilities to normalized ab.
  Multiplied by 110 (the release's ab normalization) its columns are the 313 bin centres in
  class order, so the bins are built from it with :meth:`ABBins.from_points`, never from a
  gamut rule;
* lightness normalized as ``(L - 50) / 100``, which is :func:`chromalab.color.normalize_l`.

Keys are mapped explicitly; any missing, unexpected or mis-shaped tensor raises a
``ValueError`` that names it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from chromalab.bins import ABBins
from chromalab.color import AB_SCALE
from cic.networks import CICNetwork

__all__ = ["load_released", "released_key_map"]

_RELEASE_BLOCK8_READOUT = 6  # index of the 1x1 conv 256 -> 313 inside model8


def released_key_map(network: CICNetwork) -> dict[str, str]:
    """``{release key: our key}`` for every parameter and buffer of ``network``."""
    mapping = {}
    for ours in network.state_dict():
        parts = ours.split(".")
        if parts[0] == "blocks":
            mapping[f"model{int(parts[1]) + 1}." + ".".join(parts[2:])] = ours
        elif parts[0] == "readout":
            mapping[f"model8.{_RELEASE_BLOCK8_READOUT}.{parts[1]}"] = ours
    return mapping


def _width_of(state: dict[str, Tensor], path: Path) -> float:
    key = "model1.0.weight"
    if key not in state:
        raise ValueError(f"{path}: not a CIC release state_dict (no '{key}')")
    return state[key].shape[0] / 64


def load_released(path: str | Path, map_location: str = "cpu") -> tuple[CICNetwork, ABBins]:
    """Build a :class:`CICNetwork` and its :class:`ABBins` from a released checkpoint.

    Args:
        path: local ``colorization_release_v2-*.pth`` (a state_dict; loaded with
            ``weights_only=True``).
        map_location: device for the loaded tensors.

    Returns:
        ``(network, bins)``; ``network`` is in eval mode, ``bins`` holds the release's 313 bin
        centres in its class order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"released CIC weights not found: {path} (download colorization_release_v2 "
            "yourself; chromalab never downloads weights)"
        )
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    if "model_out.weight" not in state:
        raise ValueError(f"{path}: missing 'model_out.weight' (the ab readout of the release)")
    readout = state["model_out.weight"]
    if readout.dim() != 4 or readout.shape[0] != 2 or readout.shape[2:] != (1, 1):
        raise ValueError(
            f"{path}: 'model_out.weight' must have shape (2, Q, 1, 1), got {tuple(readout.shape)}"
        )
    num_classes = readout.shape[1]
    bins = ABBins.from_points(readout[:, :, 0, 0].T.float() * AB_SCALE)
    network = CICNetwork(num_classes=num_classes, width=_width_of(state, path))
    mapping = released_key_map(network)
    own = network.state_dict()
    expected = set(mapping) | {"model_out.weight"}
    missing = sorted(set(mapping) - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path}: state_dict does not match the CIC release layout; "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    converted = {}
    for release_key, our_key in mapping.items():
        tensor = state[release_key]
        if tensor.shape != own[our_key].shape:
            raise ValueError(
                f"{path}: '{release_key}' has shape {tuple(tensor.shape)}, expected "
                f"{tuple(own[our_key].shape)}"
            )
        converted[our_key] = tensor
    network.load_state_dict(converted)
    return network.eval(), bins
