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
  ``seed``, the step, the batch index and the rank, so a run resumed from a
  checkpoint draws what the uninterrupted run drew.
* Evaluation: PSNR and SSIM of the colorization (the input L with the predicted ab, sRGB),
  LPIPS when ``lpips_weights`` is given (Table 1), and on CapShapes scenes the caption
  consistency and manipulation accuracy (:class:`chromalab.modules.SceneCaptionMetrics`).

Pretrained encoder weights (``network.image_weights``, ``network.text_pretrained``) are loaded
at the start of ``fit`` only, and not into a model whose weights came from a checkpoint, so
``LCoInsModule.load_from_checkpoint(path)`` needs the text encoder's configuration and tokenizer
(``network.text_encoder``) but no weight file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from chromalab.augment import LuminanceAugmentation
from chromalab.color import denormalize_ab, normalize_ab
from chromalab.io import recombine
from chromalab.modules import ImageMetrics, SceneCaptionMetrics
from chromalab.tasks import ColorizationTask, as_config
from chromalab.text import random_color_swap
from lcoins.encoders import load_text_weights, load_vit_weights
from lcoins.losses import counter_color_loss, smooth_l1, total_loss
from lcoins.networks import LCoInsNetworkConfig, LCoInsOutput

__all__ = ["LCoInsModule"]

logger = logging.getLogger(__name__)


class LCoInsModule(SceneCaptionMetrics, ImageMetrics, ColorizationTask):
    """L-CoIns as a LightningModule. Defaults are the paper's and its release's.

    Args:
        network: the network's configuration (:class:`lcoins.networks.LCoInsNetworkConfig`:
            encoders, sizes, and the W/o GE and W/o GA switches of Table 1); in a config file,
            ``network: {width: 128, depth: 4, ...}``, on the command line
            ``--model.network.width 128``.
        augmentation: the luminance augmentation of training inputs (§3.2;
            :class:`chromalab.augment.LuminanceAugmentation`: hue range, ``γ`` interval,
            reciprocal probability); ``None`` is the W/o LA ablation (the photograph's own L).
        alpha: weight of ``L_δ`` (Eq. 16: 1).
        beta: weight of ``L_ctr`` (Eq. 16: -1e-4; 0 is the W/o CL ablation and skips the
            second forward pass).
        delta: ``δ`` of the smooth-ℓ1 loss (Eq. 13: 1).
        lr, betas, weight_decay: AdamW (§5: 1e-5, (0.99, 0.999); weight decay: PyTorch's
            default).
        warmup_steps: steps of linear learning-rate warm-up from 0 (the release warms up).
        lr_schedule: ``"constant"`` after the warm-up, or ``"cosine"``: cosine decay to 0 at the
            trainer's last step (the release's schedule).
        schedule_steps: the step at which the cosine decay reaches 0; ``None``: the trainer's
            last step. A shorter run given a longer run's length trains exactly that run's
            first steps (Table 1's ablations beside a kept checkpoint of the main run).
        seed: seed of the training draws (augmentation, colour swaps), combined with the step,
            batch and rank (:meth:`chromalab.tasks.ColorizationTask.step_seed`), so a resumed
            run draws what the uninterrupted one drew.
        manipulation_seed: seed of the colour swaps of the manipulation metric.
        lpips_weights: local AlexNet weights file for LPIPS in validation and test
            (:class:`chromalab.metrics.LPIPS`); without it LPIPS is not computed. Not stored
            in checkpoints: give it again to ``validate``/``test`` (``--model.lpips_weights``).
    """

    def __init__(
        self,
        network: LCoInsNetworkConfig = LCoInsNetworkConfig(),  # noqa: B008 (frozen)
        augmentation: LuminanceAugmentation | None = LuminanceAugmentation(),  # noqa: B008
        alpha: float = 1.0,
        beta: float = -1e-4,
        delta: float = 1.0,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.99, 0.999),
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        schedule_steps: int | None = None,
        seed: int = 0,
        manipulation_seed: int = 0,
        lpips_weights: str | None = None,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if schedule_steps is not None and schedule_steps <= warmup_steps:
            raise ValueError(
                f"schedule_steps ({schedule_steps}) must exceed warmup_steps ({warmup_steps})"
            )
        # LPIPS is a fixed metric network of this machine's files, not part of the model: kept
        # out of the hyperparameters and of checkpoints, so they load where its weights are not
        super().__init__(lpips_weights=lpips_weights)

    def configure_models(self) -> None:
        #: the network's configuration (``hparams.network`` as its dataclass)
        self.network_config = as_config(LCoInsNetworkConfig, self.hparams.network)
        self.network = self.network_config.build()
        augmentation = self.hparams.augmentation
        self.augmentation = (
            None if augmentation is None else as_config(LuminanceAugmentation, augmentation)
        )
        self.uses_captions = True

    def configure_metrics(self) -> None:
        lpips = self.local_files["lpips_weights"]
        self.metrics = torch.nn.ModuleDict(self.image_metrics(lpips) | self.scene_metrics())

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

    # ------------------------------------------------------------------------- weights
    def load_initial_weights(self) -> None:
        config = self.network_config
        if config.image_weights:
            load_vit_weights(self.network.image_encoder, config.image_encoder,
                             config.image_weights, config.image_options)  # fmt: skip
            logger.info("ViT weights loaded from %s", config.image_weights)
        if config.text_pretrained:
            load_text_weights(self.network.text_encoder)
            logger.info("text encoder weights loaded from %s", self.network.text_encoder.source)

    def external_parts(self) -> dict[str, Callable[[], None]]:
        """A frozen pretrained text encoder is loaded from its package, not saved with the
        trained weights (``save_pretrained``): ``config.json`` names it."""
        config = self.network_config
        if not (config.text_pretrained and config.freeze_text_encoder):
            return {}
        return {"network.text_encoder.": lambda: load_text_weights(self.network.text_encoder)}

    # ------------------------------------------------------------------------- training
    def training_input(self, batch: dict, batch_idx: int) -> Tensor:
        """The grey input of a training batch: augmented (§3.2) or the photograph's L."""
        if self.augmentation is None:
            return batch["l"]
        generator = self.step_generator(batch_idx, self.hparams.seed, purpose=0)
        return self.augmentation(batch["rgb"].float(), generator)

    def counter_captions(self, captions: Sequence[str], batch_idx: int) -> tuple[list[str], Tensor]:
        """Each caption with its colour words replaced (§3.7), and which captions changed."""
        seeds = torch.randint(
            0,
            2**62,
            (len(captions),),
            generator=self.step_generator(batch_idx, self.hparams.seed, purpose=1),
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
        captions, b = list(batch["caption"]), l.shape[0]
        image = self.network.encode_image(l)  # shared by both passes
        swapped, changed = None, None
        if self.hparams.beta != 0:
            swapped, changed = self.counter_captions(captions, batch_idx)
        if changed is not None and bool(changed.any()):
            # The counter-colour pass (same image, swapped caption) runs stacked under the
            # first, as one batch of 2B rows through the text encoder and the grouping blocks,
            # decoding the first B only. Each row depends on its own inputs alone, so this is
            # the two passes' maths, in fewer, larger kernels (benchmarks/lcoins_speed.py
            # --profile measures both ways).
            ids, words = self.encode(captions + swapped, 2 * b)
            both = self.network(
                torch.cat((l, l)), ids, words, image=torch.cat((image, image)), decode=b
            )
            out, other = both.split(b)
        else:
            out, other = self.network(l, *self.encode(captions, b), image=image), None
        regression = smooth_l1(out.ab, normalize_ab(batch["ab"]), self.hparams.delta)
        terms = {"regression": regression}
        counter = None
        if other is not None:
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

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the parameters that train (a frozen text encoder's are left out), with
        the learning rate warmed up over ``warmup_steps`` and then constant or cosine-decayed
        (transformers' schedules, stepped every optimizer step)."""
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )
        if hp.lr_schedule == "cosine":
            total = hp.get("schedule_steps") or int(self.trainer.estimated_stepping_batches)
            if total <= hp.warmup_steps:
                raise ValueError(
                    f"lr_schedule 'cosine' decays after the warm-up: the run has {total} steps, "
                    f"warmup_steps is {hp.warmup_steps} (set trainer.max_steps)"
                )
            scheduler = get_cosine_schedule_with_warmup(optimizer, hp.warmup_steps, total)
        else:
            scheduler = get_constant_schedule_with_warmup(optimizer, hp.warmup_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
