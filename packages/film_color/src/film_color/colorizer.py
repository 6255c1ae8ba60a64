"""``chromalab colorize --model film_color``: the plug-in registered in ``chromalab.models``.

::

    chromalab colorize --model film_color --ckpt model.ckpt --caption "a red car" photos/ -o out/
"""

from __future__ import annotations

import torch
from torch import Tensor

from chromalab.models import batch_captions, resolve_device

__all__ = ["DEFAULT_INPUT_SIZE", "FilmColorizer", "load_colorizer"]

#: Network input side when a checkpoint does not record its training size (the paper's 224).
DEFAULT_INPUT_SIZE = 224


class FilmColorizer:
    """A trained :class:`~film_color.module.FilmColorModule`, decoding with the annealed mean.

    Args:
        module: the trained module (put in eval mode).
        temperature: annealed-mean temperature.
        input_size: side of the square L image fed to the network.
    """

    def __init__(self, module, temperature: float, input_size: int = DEFAULT_INPUT_SIZE):
        self.module = module.eval()
        self.temperature = temperature
        self.input_size = input_size
        self.uses_captions = bool(module.uses_captions)

    def _captions(self, l: Tensor, captions: list[str] | None) -> list[str] | None:
        if not self.uses_captions:
            return captions
        name = f"film_color ({self.module.network_config.conditioning})"
        return batch_captions(captions, l.shape[0], name)

    @torch.inference_mode()
    def colorize(self, l: Tensor, captions: list[str] | None = None) -> Tensor:
        """ab ``(B, 2, S/4, S/4)`` for ``l`` ``(B, 1, S, S)``; one caption is used for all."""
        captions = self._captions(l, captions)
        return self.module.colorize(l.to(self.module.device), captions, self.temperature)

    @torch.inference_mode()
    def explain(
        self, l: Tensor, captions: list[str] | None = None, **_: object
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """ab as :meth:`colorize`, and per image the heatmaps of the mean activation after the
        FiLM layers of blocks 6-8 (the paper's Fig. 4; :mod:`film_color.explain`)."""
        from chromalab.report import heatmap
        from film_color.explain import activation_maps

        captions = self._captions(l, captions)
        l = l.to(self.module.device)
        ab = self.module.colorize(l, captions, self.temperature)
        maps = {b: heatmap(m).cpu() for b, m in activation_maps(self.module, l, captions).items()}
        return ab, [{f"block {b}": m[i] for b, m in maps.items()} for i in range(l.shape[0])]


def load_colorizer(
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    temperature: float | None = None,
    **_: object,
) -> FilmColorizer:
    """Build the colorizer from a ``film-color fit`` checkpoint or a ``save_pretrained``
    folder."""
    from chromalab.hub import load_module
    from film_color.module import FilmColorModule

    module = load_module(FilmColorModule, ckpt, weights, resolve_device(device))
    if module is None:
        raise ValueError(
            "model film_color needs --ckpt (a film-color fit checkpoint) or --weights (a "
            "save_pretrained folder)"
        )
    t = module.hparams.temperature if temperature is None else temperature
    return FilmColorizer(module, t, module.input_size or DEFAULT_INPUT_SIZE)
