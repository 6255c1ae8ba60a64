"""Model plug-ins: how paper packages make themselves available to ``chromalab colorize``.

A paper package declares an entry point in the group ``chromalab.models`` whose object is a
factory::

    [project.entry-points."chromalab.models"]
    cic = "cic.colorizer:load_colorizer"

The factory is called as ``factory(ckpt=..., weights=..., device=..., temperature=...,
progress=...)`` (``None`` for options the user did not give), plus the sampling options the user
gave (``steps``, ``scheduler``, ``guidance``, ``seed``, ``masks``, ``prompts``, ``auto_masks``,
``sam``, ``text_encoder``; factories that have none ignore them), and returns a
:class:`Colorizer`. A colorizer with ``uses_source = True`` is also given each image's file and
full size (``colorize(l, captions, source=path, full_size=(H, W))``), for per-image inputs such
as masks. A colorizer that can show how it reads an image also has
``explain(l, captions, **extra) -> (ab, maps)`` (:class:`Explainer`): the app shows those maps
beside the result. Discovery is
lazy: nothing is imported until a model is asked for, so a broken package cannot break the
command for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "ENTRY_POINT_GROUP",
    "Colorizer",
    "Explainer",
    "available_models",
    "batch_captions",
    "load_colorizer",
]

ENTRY_POINT_GROUP = "chromalab.models"


@runtime_checkable
class Colorizer(Protocol):
    """What a paper package hands to the umbrella CLI.

    Attributes:
        input_size: side of the square L image the network expects (e.g. 256).
        uses_captions: whether :meth:`colorize` reads ``captions``.
    """

    input_size: int
    uses_captions: bool

    def colorize(self, l: Tensor, captions: list[str] | None = None) -> Tensor:
        """Predict ab for lightness ``l`` ``(B, 1, S, S)`` (L in ``[0, 100]``).

        Returns ``(B, 2, h, w)`` ab at the network's output resolution; the caller upsamples
        and joins it with the full-resolution L.
        """
        ...


@runtime_checkable
class Explainer(Protocol):
    """A :class:`Colorizer` that also shows its own reading of an image: FiLM activation maps,
    L-CoIns' group assignment, L-CAD's cross-attention of each colour word."""

    def explain(
        self, l: Tensor, captions: list[str] | None = None, **extra: object
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """ab as :meth:`Colorizer.colorize` gives it, from the same pass where the model allows,
        and per image ``{label: rgb}``: colour maps ``(3, h, w)`` in ``[0, 1]`` of the square
        input (any ``h = w``), which the caller crops to the image and lays over its grey."""
        ...


def batch_captions(captions: list[str] | None, batch: int, model: str) -> list[str]:
    """The captions of a language model's batch of ``batch`` images: one per image, or one
    given for all.

    Raises:
        ValueError: no caption (the message names ``model``).
    """
    if not captions:
        raise ValueError(f"model {model} colorizes from a caption: pass --caption")
    return list(captions) * batch if len(captions) == 1 else list(captions)


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    """Names of the installed models, sorted."""
    return sorted(_entry_points())


def load_colorizer(name: str, **options: object) -> Colorizer:
    """Load the factory registered as ``name`` and build its :class:`Colorizer`.

    Raises:
        ValueError: no installed package registers ``name`` (the message lists those that do).
    """
    points = _entry_points()
    if name not in points:
        known = ", ".join(sorted(points)) or "none: install a paper package, e.g. ./packages/cic"
        raise ValueError(f"unknown model {name!r}; installed models: {known}")
    factory: Callable[..., Colorizer] = points[name].load()
    model = factory(**options)
    if not isinstance(model, Colorizer):
        raise TypeError(
            f"the factory of model {name!r} returned {type(model).__name__}, not a Colorizer"
        )
    return model


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
