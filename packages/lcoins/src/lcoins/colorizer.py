"""``chromalab colorize --model lcoins``: the plug-in registered in ``chromalab.models``.

::

    chromalab colorize --model lcoins --ckpt model.ckpt --caption "a red car" photos/ -o out/
"""

from __future__ import annotations

import torch
from torch import Tensor

from chromalab.models import batch_captions, resolve_device

__all__ = ["LCoInsColorizer", "load_colorizer"]


class LCoInsColorizer:
    """A trained :class:`~lcoins.module.LCoInsModule` (in eval mode) behind the
    :class:`chromalab.models.Colorizer` protocol.

    Args:
        module: the trained module.
        input_size: side of the square L image fed to the network (its training size).
    """

    uses_captions = True

    def __init__(self, module, input_size: int) -> None:
        self.module = module.eval()
        self.input_size = input_size

    @torch.inference_mode()
    def colorize(self, l: Tensor, captions: list[str] | None = None) -> Tensor:
        """ab ``(B, 2, S, S)`` for ``l`` ``(B, 1, S, S)``; one caption is used for all."""
        captions = batch_captions(captions, l.shape[0], "lcoins")
        return self.module.colorize(l.to(self.module.device), captions)

    @torch.inference_mode()
    def explain(
        self, l: Tensor, captions: list[str] | None = None, **_: object
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """ab as :meth:`colorize`, and per image the hard group assignment of its tokens (Eq. 11),
        one colour per group (:mod:`lcoins.explain`); none for a model without group tokens
        (the W/o GE ablation)."""
        from lcoins.explain import group_colors, group_maps

        captions = batch_captions(captions, l.shape[0], "lcoins")
        ab = self.colorize(l, captions)
        if not self.module.network.num_groups:
            return ab, [{} for _ in range(l.shape[0])]
        groups = group_maps(self.module, l.to(self.module.device), captions).cpu()
        colors = group_colors(self.module.network.num_groups)[groups].permute(0, 3, 1, 2)
        return ab, [{"groups": c} for c in colors]


def load_colorizer(
    ckpt: str | None = None, weights: str | None = None, device: str | None = None, **_: object
) -> LCoInsColorizer:
    """Build the colorizer from an ``lcoins fit`` checkpoint or a ``save_pretrained`` folder."""
    from chromalab.hub import load_module
    from lcoins.module import LCoInsModule

    module = load_module(LCoInsModule, ckpt, weights, resolve_device(device))
    if module is None:
        raise ValueError(
            "model lcoins needs --ckpt (an lcoins fit checkpoint) or --weights (a "
            "save_pretrained folder; there are no released L-CoIns weights)"
        )
    return LCoInsColorizer(module, int(module.network_config.image_size))
