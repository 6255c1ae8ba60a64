"""``chromalab colorize --model cic``: the plug-in registered in ``chromalab.models``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from chromalab.bins import ABBins
from chromalab.models import resolve_device

__all__ = ["CICColorizer", "load_colorizer"]

DEFAULT_TEMPERATURE = 0.38


class CICColorizer:
    """A trained CIC network and its bins, decoding with the annealed mean (Eq. 8).

    ``channels_last``: run the network in channels-last memory format (default, as training
    does; faster convolutions on CPUs and tensor cores)."""

    uses_captions = False

    def __init__(
        self,
        network: nn.Module,
        bins: ABBins,
        temperature: float,
        input_size: int = 256,
        channels_last: bool = True,
    ):
        self.channels_last = channels_last
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network.eval()
        self.bins = bins
        self.temperature = temperature
        self.input_size = input_size

    @torch.inference_mode()
    def colorize(self, l: Tensor, captions: list[str] | None = None) -> Tensor:
        device = self.bins.centers.device
        l = l.to(device)
        if self.channels_last:
            l = l.contiguous(memory_format=torch.channels_last)
        logits = self.network(l)
        return self.bins.annealed_mean(logits.float(), self.temperature)


def load_colorizer(
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    temperature: float | None = None,
    **_: object,
) -> CICColorizer:
    """Build the colorizer from a ``cic fit`` checkpoint, a ``save_pretrained`` folder or the
    authors' released weights."""
    from chromalab.hub import load_module
    from cic.module import CICModule

    target = resolve_device(device)
    module = load_module(CICModule, ckpt, weights, target)
    if module is not None:
        t = module.hparams.temperature if temperature is None else temperature
        module._require_bins()
        return CICColorizer(module.network, module.bins, t)
    if weights is not None:
        from cic.weights import load_released

        network, bins = load_released(weights)
        t = DEFAULT_TEMPERATURE if temperature is None else temperature
        return CICColorizer(network.to(target), bins.to(target), t)
    raise ValueError(
        "model cic needs --ckpt (a cic fit checkpoint) or --weights (a save_pretrained folder, "
        "or the released .pth)"
    )
