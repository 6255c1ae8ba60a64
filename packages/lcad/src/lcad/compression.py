"""Luminance-guided image compression (L-CAD §3.2): a luminance encoder whose multi-scale
features guide the frozen VAE decoder from the latent space back to pixels.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

* :class:`LuminanceEncoder` has the architecture of the VAE's encoder (it is built from
  diffusers' :class:`~diffusers.models.autoencoders.vae.Encoder` with the VAE's configuration) and
  reads the grey image. Its features are taken after every ResNet block of every level and after
  both ResNet blocks of the middle block, each through a zero-initialised 1x1 convolution: before
  training they are all zero.
* :func:`guided_decode` runs the VAE's own decoder (its modules, unchanged and frozen)
  and adds the features to the matching scales (§3.2: "added directly into the corresponding
  scales of the compression decoder"): after the middle block's first and second ResNet blocks,
  and in each up level after its first ``layers_per_block`` ResNet blocks (before the level's
  upsampling). The decoder consumes the features in the reverse of the order the encoder makes
  them, deepest first; within a level, the encoder's last block feeds the decoder's first. This is
  the layout of the authors' released checkpoint (its ``g_encoder`` zero convolutions and the
  decoder's additions), so the released weights convert without new parameters.
* Zero-initialised projections make the untrained model's decoding equal to the pretrained
  decoder's exactly (``tests/lcad/test_compression.py``).

The features are computed once per image: the diffusion stage's channel-extended convolutions
(§3.3) take the deepest one, and decoding the sampled latent takes them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from torch import Tensor, nn

from chromalab.color import L_SCALE

__all__ = [
    "LuminanceEncoder",
    "LuminanceGuidedAutoencoder",
    "guided_decode",
    "luminance_input",
]


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def luminance_input(l: Tensor, channels: int = 3, release_scale: bool = False) -> Tensor:
    """The luminance encoder's input from lightness ``l`` ``(B, 1, H, W)`` in ``[0, 100]``:
    ``2 L / 100 - 1`` in ``[-1, 1]`` (the VAE's image range), repeated to ``channels``.

    ``release_scale``: ``L / 127.5 - 1`` (in ``[-1, -0.22]``), the scaling the authors' release
    trained its luminance encoder with; use it with the converted released weights.
    """
    if l.dim() != 4 or l.shape[1] != 1:
        raise ValueError(f"expected lightness of shape (B, 1, H, W), got {tuple(l.shape)}")
    x = l / 127.5 - 1 if release_scale else 2 * l / L_SCALE - 1
    return x.expand(-1, channels, -1, -1)


class LuminanceEncoder(ModelMixin, ConfigMixin):
    """The luminance encoder of §3.2: the VAE encoder's architecture, with zero-initialised 1x1
    convolutions on its multi-scale features. A diffusers model: ``save_pretrained`` /
    ``from_pretrained`` (the luminance encoder of :class:`lcad.pipeline.LCADPipeline`).

    Args:
        in_channels, block_out_channels, layers_per_block, norm_num_groups, act_fn,
        mid_block_add_attention: the VAE encoder's configuration (``AutoencoderKL.config``);
            :meth:`from_vae` copies it.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        blocks = tuple(block_out_channels)
        # diffusers' Encoder: conv_in, down_blocks and mid_block are used; its output head
        # (conv_norm_out, conv_out) is not, and is dropped
        encoder = Encoder(
            in_channels=in_channels,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * len(blocks),
            block_out_channels=blocks,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            double_z=False,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.conv_in = encoder.conv_in
        self.down_blocks = encoder.down_blocks
        self.mid_block = encoder.mid_block
        self.zero_convs = nn.ModuleList(
            nn.ModuleList(_zero_conv(c) for _ in range(layers_per_block)) for c in blocks
        )
        self.mid_zero_convs = nn.ModuleList(_zero_conv(blocks[-1]) for _ in range(2))
        self.in_channels = in_channels
        self.layers_per_block = layers_per_block

    @classmethod
    def from_vae(cls, vae: AutoencoderKL, copy_weights: bool = True) -> LuminanceEncoder:
        """A luminance encoder with ``vae``'s encoder architecture; ``copy_weights``: start
        from the VAE encoder's weights (the grey image repeated to 3 channels is an image the
        pretrained encoder knows; the paper leaves the initialisation open)."""
        c = vae.config
        encoder = cls(
            in_channels=c.in_channels,
            block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_num_groups,
            act_fn=c.act_fn,
            mid_block_add_attention=c.mid_block_add_attention,
        )
        if copy_weights:
            source = vae.encoder.state_dict()
            head = ("conv_norm_out", "conv_out")  # the encoder's output head is not used
            own = {k: v for k, v in source.items() if not k.startswith(head)}
            missing, unexpected = encoder.load_state_dict(own, strict=False)
            assert not unexpected and all("zero_convs" in k for k in missing), (missing, unexpected)
        return encoder

    def forward(self, x: Tensor) -> list[Tensor]:
        """The features of image ``x`` ``(B, in_channels, H, W)`` (:func:`luminance_input`):
        ``layers_per_block`` per level (level ``i`` at ``H / 2^i``), then the middle block's two,
        in that order (``2 + levels * layers_per_block`` tensors)."""
        h = self.conv_in(x)
        features: list[Tensor] = []
        for block, convs in zip(self.down_blocks, self.zero_convs, strict=True):
            for resnet, conv in zip(block.resnets, convs, strict=True):
                h = resnet(h, None)
                features.append(conv(h))
            if block.downsamplers is not None:
                for downsampler in block.downsamplers:
                    h = downsampler(h)
        mid = self.mid_block
        h = mid.resnets[0](h, None)
        features.append(self.mid_zero_convs[0](h))
        for attn, resnet in zip(mid.attentions, mid.resnets[1:], strict=True):
            if attn is not None:
                h = attn(h)
            h = resnet(h, None)
        features.append(self.mid_zero_convs[1](h))
        return features


def guided_decode(decoder: Decoder, z: Tensor, features: Sequence[Tensor]) -> Tensor:
    """Run the VAE's own ``decoder`` (diffusers' :class:`~diffusers.models.autoencoders.vae.
    Decoder`, no new parameters) on ``z`` (after the VAE's ``post_quant_conv``) with the
    luminance features of :meth:`LuminanceEncoder.forward` (all of them, in its order) added at
    its scales (§3.2)."""
    if not isinstance(decoder.conv_norm_out, nn.GroupNorm):
        raise ValueError(
            "luminance guidance needs a decoder with GroupNorm output (norm_type group)"
        )
    layers = decoder.layers_per_block
    expected = 2 + layers * len(decoder.up_blocks)
    if len(features) != expected:
        raise ValueError(f"expected {expected} luminance features, got {len(features)}")
    queue = list(features)  # consumed deepest first
    h = decoder.conv_in(z)
    mid = decoder.mid_block
    h = mid.resnets[0](h, None) + queue.pop()
    for attn, resnet in zip(mid.attentions, mid.resnets[1:], strict=True):
        if attn is not None:
            h = attn(h)
        h = resnet(h, None)
    h = h + queue.pop()
    for block in decoder.up_blocks:
        for j, resnet in enumerate(block.resnets):
            h = resnet(h, None)
            if j < layers:
                h = h + queue.pop()
        if block.upsamplers is not None:
            for upsampler in block.upsamplers:
                h = upsampler(h)
    return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))


class LuminanceGuidedAutoencoder(nn.Module):
    """Stage 1 of L-CAD: a frozen VAE (:class:`diffusers.AutoencoderKL`) and the trained
    luminance encoder. Images are RGB in ``[-1, 1]``, lightness in ``[0, 100]``.

    Args:
        vae: the pretrained VAE (frozen here).
        luminance_encoder: default: :meth:`LuminanceEncoder.from_vae` (the VAE encoder's
            weights copied, zero projections).
        release_scale: the luminance input scaling of the authors' release
            (:func:`luminance_input`).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        luminance_encoder: LuminanceEncoder | None = None,
        release_scale: bool = False,
    ) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False)
        self.luminance_encoder = luminance_encoder or LuminanceEncoder.from_vae(vae)
        self.release_scale = release_scale

    def train(self, mode: bool = True) -> LuminanceGuidedAutoencoder:
        super().train(mode)
        self.vae.eval()  # frozen: no dropout in its blocks
        return self

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def luminance_features(self, l: Tensor) -> list[Tensor]:
        """The luminance encoder's features of lightness ``l`` ``(B, 1, H, W)``."""
        x = luminance_input(l, self.luminance_encoder.in_channels, self.release_scale)
        return self.luminance_encoder(x.to(self.luminance_encoder.conv_in.weight.dtype))

    def encode(self, rgb: Tensor, sample: bool = False, generator: torch.Generator | None = None):
        """The VAE latent of ``rgb`` ``(B, 3, H, W)`` in ``[-1, 1]``, scaled by the VAE's
        ``scaling_factor`` (the diffusion model's latent): the posterior's mode, or a sample."""
        posterior = self.vae.encode(rgb).latent_dist
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.scaling_factor

    def decode(self, latent: Tensor, features: Sequence[Tensor]) -> Tensor:
        """RGB in about ``[-1, 1]`` from a scaled latent and the luminance features."""
        z = latent / self.scaling_factor
        if self.vae.post_quant_conv is not None:
            z = self.vae.post_quant_conv(z)
        return guided_decode(self.vae.decoder, z, features)

    def forward(self, rgb: Tensor, l: Tensor) -> Tensor:
        """Stage-1 reconstruction: encode the colour image, decode it guided by its
        lightness."""
        with torch.no_grad():
            latent = self.encode(rgb)
        return self.decode(latent, self.luminance_features(l))
