"""Channel-extended convolutions (L-CAD §3.3, Eq. 5) on a diffusers ``UNet2DConditionModel``.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

Eq. 5 extends a convolution's input with ``N_ext`` channels of resized luminance features
``ȳ^lum``: ``f' = W_fix * f + W_ext * ȳ^lum`` (one convolution over the concatenated channels),
with ``W_fix`` the pretrained weights, kept fixed, and ``W_ext`` initialised to zero, so the
untrained model is the pretrained UNet exactly. :class:`ChannelExtendedConv2d` computes it as the
pretrained convolution plus a zero-initialised convolution of the luminance features (the same
sum; the pretrained ``weight``/``bias`` keep their names, so pretrained state dicts load as they
are).

Where (``cec``):

* ``"all_down"`` (the paper, Fig. 2b): in every down block of the UNet, the first convolution of
  each ResNet block, which precedes the block's cross-attention. diffusers' own injection points
  do not express this exactly (``down_intrablock_additional_residuals`` adds after a block's last
  attention, ``down_block_additional_residuals`` only to the skip connections), so the
  convolutions are replaced. The down path's outputs feed the up path through the UNet's skip
  connections, which carry the luminance guidance there.
* ``"first"`` (the authors' release): only the UNet's input convolution (4 latent + ``N_ext``
  channels).
* ``"none"``: no extended convolution, the UNet reads no luminance (the paper's ablation
  "W/o SLR", Table 1: vanilla convolutions in place of the channel-extended ones).

``ȳ^lum`` is the deepest luminance feature of :class:`lcad.compression.LuminanceEncoder` (the one
the release feeds its UNet), resized by area averaging to each convolution's input resolution.
The features are given once per image, for a whole sampling loop, with
:meth:`LuminanceUNet.luminance`; each resolution is resized once and reused by every step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from torch import Tensor, nn

__all__ = ["CEC", "ChannelExtendedConv2d", "LuminancePyramid", "LuminanceUNet"]

CEC = Literal["all_down", "first", "none"]


class LuminancePyramid:
    """Luminance features ``(B, C, h, w)`` resized on demand to other resolutions (area
    averaging; bilinear where a side grows), each resolution computed once."""

    def __init__(self, features: Tensor) -> None:
        if features.dim() != 4:
            raise ValueError(
                f"expected luminance features (B, C, h, w), got {tuple(features.shape)}"
            )
        self.features = features
        self._sizes: dict[tuple[int, int], Tensor] = {tuple(features.shape[-2:]): features}

    def at(self, size: tuple[int, int], batch: int) -> Tensor:
        """The features at ``size``, repeated to ``batch`` rows when ``batch`` is a multiple
        of theirs (classifier-free guidance batches ``[conditional; unconditional]``, each the
        images in order)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._sizes:
            h, w = self.features.shape[-2:]
            mode = "area" if size[0] <= h and size[1] <= w else "bilinear"
            self._sizes[size] = F.interpolate(self.features, size=size, mode=mode)
        y = self._sizes[size]
        if batch != y.shape[0]:
            if batch % y.shape[0]:
                raise ValueError(f"a batch of {batch} for luminance features of {y.shape[0]}")
            y = y.repeat(batch // y.shape[0], 1, 1, 1)
        return y


class ChannelExtendedConv2d(nn.Conv2d):
    """Eq. 5: a pretrained convolution (``weight``, ``bias``: fixed) whose input is extended by
    ``extra_channels`` luminance channels through ``extension`` (zero-initialised, no bias).

    The luminance comes from the :class:`LuminancePyramid` in ``self.luminance``, set by
    :meth:`LuminanceUNet.luminance` for the duration of a call or a sampling loop.
    """

    def __init__(self, conv: nn.Conv2d, extra_channels: int) -> None:
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip
        self.load_state_dict(conv.state_dict())
        self.extension = nn.Conv2d(
            extra_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, bias=False, device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip
        nn.init.zeros_(self.extension.weight)
        self.luminance: LuminancePyramid | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.luminance is None:
            raise RuntimeError(
                "a channel-extended convolution needs luminance features: call the UNet inside "
                "LuminanceUNet.luminance(features)"
            )
        y = self.luminance.at(x.shape[-2:], x.shape[0]).to(x.dtype)
        return super().forward(x) + self.extension(y)


def _json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    return value


class LuminanceUNet(ModelMixin, ConfigMixin):
    """A diffusers ``UNet2DConditionModel`` with channel-extended convolutions.

    A diffusers model itself (``save_pretrained`` / ``from_pretrained``: its configuration holds
    the UNet's as ``unet_config``), the UNet of :class:`lcad.pipeline.LCADPipeline`.

    Args:
        unet_config: the (pretrained) UNet, whose convolutions at the ``cec`` places are
            replaced, or its configuration (a UNet with new weights is built from it).
        luminance_channels: ``N_ext``, the channels of the luminance features.
        cec: ``"all_down"`` (the paper), ``"first"`` (the release) or ``"none"`` (the W/o SLR
            ablation); see the module notes.
    """

    def __init__(
        self,
        unet_config: UNet2DConditionModel | Mapping[str, Any],
        luminance_channels: int,
        cec: CEC = "all_down",
    ) -> None:
        super().__init__()
        if cec not in ("all_down", "first", "none"):
            raise ValueError(f"cec must be 'all_down', 'first' or 'none', got {cec!r}")
        unet = unet_config
        if not isinstance(unet, UNet2DConditionModel):
            unet = UNet2DConditionModel.from_config(dict(unet_config))
        # registered by hand: the configuration holds the UNet's, not the module
        self.register_to_config(
            unet_config=_json(unet.config), luminance_channels=luminance_channels, cec=cec
        )
        self.unet = unet
        self.cec = cec
        if cec == "first":
            unet.conv_in = ChannelExtendedConv2d(unet.conv_in, luminance_channels)
        elif cec == "all_down":
            for block in unet.down_blocks:
                for resnet in block.resnets:
                    resnet.conv1 = ChannelExtendedConv2d(resnet.conv1, luminance_channels)

    def extended(self) -> Iterator[ChannelExtendedConv2d]:
        """The channel-extended convolutions."""
        return (m for m in self.unet.modules() if isinstance(m, ChannelExtendedConv2d))

    def extension_parameters(self) -> Iterator[nn.Parameter]:
        """``W_ext`` of every channel-extended convolution (what the paper trains)."""
        return (m.extension.weight for m in self.extended())

    @contextmanager
    def luminance(self, features: Tensor) -> Iterator[LuminancePyramid]:
        """Within the block, the UNet reads ``features`` ``(B, N_ext, h, w)`` (resized once
        per resolution); outside it, none is held."""
        pyramid = LuminancePyramid(features)
        convs = list(self.extended())
        for conv in convs:
            conv.luminance = pyramid
        try:
            yield pyramid
        finally:
            for conv in convs:
                conv.luminance = None

    def forward(
        self, sample: Tensor, timestep: Tensor | float, encoder_hidden_states: Tensor, **kwargs
    ) -> Tensor:
        """The UNet's prediction (``.sample``); call it inside :meth:`luminance`."""
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False, **kwargs)[0]
