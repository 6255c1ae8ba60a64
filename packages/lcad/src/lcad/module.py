"""L-CAD's LightningModules, one per training stage.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2310.15277).

* :class:`LCADAutoencoderModule` (stage 0, not in the paper): a VAE trained from scratch for the
  CPU configurations, where no Stable Diffusion weights exist: L1 reconstruction plus a small KL
  term (Stable Diffusion's ``1e-6``).
* :class:`LCADCompressionModule` (stage 1, §3.2): the luminance encoder trained with Eq. 4 on a
  frozen VAE.
* :class:`LCADDiffusionModule` (stage 2, §3.3, §3.5): the channel-extended UNet trained with
  Eq. 6 on the frozen VAE, luminance encoder and text encoder, with any-level descriptions and
  caption dropout for classifier-free guidance.

Images are RGB in ``[0, 1]`` in batches (``rgb``, ``l`` in ``[0, 100]``, ``caption``) and
``[-1, 1]`` inside the models. Component settings (``vae``, ``unet``, ...) are folders or
constructor arguments (:mod:`lcad.components`); pretrained weights and earlier stages'
checkpoints are loaded at the start of ``fit`` only, not into a model restored from its own
checkpoint, so ``load_from_checkpoint`` needs no weight file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor, nn

from chromalab.color import rgb_to_l_ab
from chromalab.hub import HubMixin
from chromalab.metrics import LPIPS
from chromalab.modules import ImageMetrics, SceneCaptionMetrics
from chromalab.text import find_color_words, remove_color_words
from lcad import components
from lcad.cec import CEC, LuminanceUNet
from lcad.compression import LuminanceEncoder, LuminanceGuidedAutoencoder
from lcad.losses import (
    FeaturePerceptualLoss,
    PatchDiscriminator,
    discriminator_hinge_loss,
    generator_hinge_loss,
    pixel_loss,
    reconstruction_loss,
)
from lcad.pipeline import LCADPipeline, make_scheduler
from lcad.text import CaptionEncoder

__all__ = ["LCADAutoencoderModule", "LCADCompressionModule", "LCADDiffusionModule"]

logger = logging.getLogger(__name__)

Trainable = Literal["paper", "release", "all"]


def _to_model(rgb: Tensor) -> Tensor:
    return rgb.float() * 2 - 1


def _to_image(x: Tensor) -> Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def _load_stage(path: str, prefix: str) -> dict[str, Tensor]:
    """The entries of a Lightning checkpoint's state dict under ``prefix`` (prefix removed)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise ValueError(f"{path}: no weights under {prefix!r}")
    return own


class _Restorable(pl.LightningModule, HubMixin):
    """Pretrained weights at the start of ``fit`` unless the weights came from a checkpoint."""

    _restored = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = True

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self._restored:
            self.load_initial_weights()

    def load_initial_weights(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- stage 0


class LCADAutoencoderModule(ImageMetrics, _Restorable):
    """Stage 0: a VAE from scratch (the CPU configurations have no pretrained one).

    Args:
        vae: the VAE's constructor arguments (``diffusers.AutoencoderKL``), or a folder to
            fine-tune.
        kl_weight: weight of the KL term (Stable Diffusion's VAE: ``1e-6``).
        lr, betas: Adam.
        lpips_weights: local AlexNet weights for LPIPS in validation and test.
    """

    def __init__(
        self,
        vae: components.Component,
        kl_weight: float = 1e-6,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        lpips_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["lpips_weights"])
        self.vae = components.vae(vae)
        self.metrics = nn.ModuleDict(self.image_metrics(lpips_weights))

    def load_initial_weights(self) -> None:
        if components.load_pretrained(self.vae, self.hparams.vae, "vae"):
            logger.info("VAE weights loaded from %s", self.hparams.vae)

    def forward(self, rgb: Tensor) -> Tensor:
        """The reconstruction of ``rgb`` (posterior mode), in ``[0, 1]``."""
        return _to_image(self.vae(_to_model(rgb)).sample)

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        x = _to_model(batch["rgb"])
        posterior = self.vae.encode(x).latent_dist
        rec = self.vae.decode(posterior.sample()).sample
        l1 = (rec.float() - x).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + self.hparams.kl_weight * kl
        size = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({"train/l1": l1, "train/kl": kl}, batch_size=size)
        return loss

    def evaluate_batch(self, batch: dict, stage: str) -> None:
        self.update_images(stage, self(batch["rgb"]), batch["rgb"].float())

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the VAE's reconstruction of the batch's images."""
        return {"rgb": self(batch["rgb"])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.vae.parameters(), lr=self.hparams.lr,
                                betas=tuple(self.hparams.betas))  # fmt: skip


# --------------------------------------------------------------------------- stage 1


class LCADCompressionModule(ImageMetrics, _Restorable):
    """Stage 1 (§3.2): the luminance encoder, trained with Eq. 4 on a frozen VAE.

    The generator (luminance encoder) and the patch discriminator take their steps together
    from one backward pass: the generator's adversarial term reads the discriminator through
    detached parameters, and the discriminator's hinge loss reads the reconstruction detached,
    so each loss reaches only its own network and one optimizer (two parameter groups) serves
    both (Lightning's automatic optimization, DDP, precision and gradient clipping apply).

    Args:
        vae: the VAE (a Stable Diffusion pipeline folder, a VAE folder, or constructor
            arguments with ``vae_from`` a stage-0 checkpoint).
        vae_from: a stage-0 checkpoint (:class:`LCADAutoencoderModule`) to take the VAE's
            weights from.
        copy_encoder: start the luminance encoder from the VAE encoder's weights.
        window: ``N_win`` of the artifact map (Eq. 3; the paper gives none: LDL's 7).
        alpha, beta: Eq. 4's weights of ``L_dis`` and ``L_per`` (1, 0.5).
        lpips_weights: local AlexNet weights: ``L_per`` is LPIPS, and LPIPS is evaluated.
        perceptual_network, perceptual_weights: without LPIPS weights, ``L_per`` is the
            feature distance of this timm network (:class:`lcad.losses.FeaturePerceptualLoss`)
            with these local weights (none: random weights, for plumbing). With neither,
            ``L_per`` is left out. The log says which ``L_per`` is used.
        discriminator_start: steps before ``L_dis`` and the discriminator start.
        discriminator_channels, discriminator_layers: the patch discriminator.
        lr, betas: Adam (§3.5: 1e-6; betas: the release's (0.5, 0.9)).
        discriminator_lr: the discriminator's rate (default ``lr``).
        release_scale: the release's luminance input scaling (:func:`lcad.compression.
            luminance_input`).
    """

    local_prefixes = ("perceptual.",)  # LPIPS's network as L_per: local weights, not the model

    def __init__(
        self,
        vae: components.Component,
        vae_from: str | None = None,
        copy_encoder: bool = True,
        window: int = 7,
        alpha: float = 1.0,
        beta: float = 0.5,
        lpips_weights: str | None = None,
        perceptual_network: str | None = None,
        perceptual_weights: str | None = None,
        discriminator_start: int = 0,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
        lr: float = 1e-6,
        betas: tuple[float, float] = (0.5, 0.9),
        discriminator_lr: float | None = None,
        release_scale: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["lpips_weights"])
        vae_model = components.vae(vae)
        self.autoencoder = LuminanceGuidedAutoencoder(
            vae_model, LuminanceEncoder.from_vae(vae_model, copy_weights=False), release_scale
        )
        self.discriminator = PatchDiscriminator(
            vae_model.config.out_channels, discriminator_channels, discriminator_layers
        )
        self.perceptual: nn.Module | None = None
        if lpips_weights:
            self.perceptual = LPIPS(lpips_weights).net
        elif perceptual_network:
            self.perceptual = FeaturePerceptualLoss(perceptual_network, perceptual_weights)
        self.metrics = nn.ModuleDict(self.image_metrics(lpips_weights))

    def load_initial_weights(self) -> None:
        hp = self.hparams
        if isinstance(self.perceptual, FeaturePerceptualLoss):
            logger.warning(
                "L_per (Eq. 4) is not LPIPS (no --model.lpips_weights): it is the feature "
                "distance of %s with %s", hp.perceptual_network,
                f"the weights of {hp.perceptual_weights}" if hp.perceptual_weights else
                "RANDOM weights, which measure nothing perceptual",
            )  # fmt: skip
        vae = self.autoencoder.vae
        if hp.vae_from:
            vae.load_state_dict(_load_stage(hp.vae_from, "vae."))
            logger.info("VAE weights loaded from stage-0 checkpoint %s", hp.vae_from)
        elif components.load_pretrained(vae, hp.vae, "vae"):
            logger.info("VAE weights loaded from %s", hp.vae)
        else:
            logger.warning("the VAE has random weights: give a pretrained folder or vae_from")
        if hp.copy_encoder:
            copied = LuminanceEncoder.from_vae(vae)
            self.autoencoder.luminance_encoder.load_state_dict(copied.state_dict())
        if self.perceptual is None and hp.beta:
            logger.warning(
                "L_per (Eq. 4, beta=%s) is left out: it needs LPIPS backbone weights "
                "(--model.lpips_weights alexnet.pth) or a feature network "
                "(--model.perceptual_network)", hp.beta,
            )  # fmt: skip

    def forward(self, rgb: Tensor, l: Tensor) -> Tensor:
        """The luminance-guided reconstruction of ``rgb`` in ``[0, 1]``."""
        return _to_image(self.autoencoder(_to_model(rgb), l))

    def losses(self, batch: dict) -> dict[str, Tensor]:
        """``rec``, ``dis`` and ``per`` of Eq. 4 (the last two when active), ``pixel`` (Eq. 4),
        ``discriminator`` (its hinge loss, when active) and ``loss`` (what is minimised)."""
        hp = self.hparams
        x = _to_model(batch["rgb"])
        rec = self.autoencoder(x, batch["l"])
        terms = {"rec": reconstruction_loss(x, rec, hp.window)}
        adversarial = self.global_step >= hp.discriminator_start and hp.alpha != 0
        if adversarial:
            frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
            fake = torch.func.functional_call(self.discriminator, frozen, (rec,))
            terms["dis"] = generator_hinge_loss(fake)
        if self.perceptual is not None and hp.beta:
            terms["per"] = self.perceptual(rec.float(), x).mean()
        terms["pixel"] = pixel_loss(terms["rec"], terms.get("dis"), terms.get("per"),
                                    hp.alpha, hp.beta)  # fmt: skip
        terms["loss"] = terms["pixel"]
        if adversarial:
            real, fake = self.discriminator(x), self.discriminator(rec.detach())
            terms["discriminator"] = discriminator_hinge_loss(real, fake)
            terms["loss"] = terms["loss"] + terms["discriminator"]
        return terms

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        terms = self.losses(batch)
        size = batch["rgb"].shape[0]
        self.log("train/loss", terms["pixel"], prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=size)
        return terms["loss"]

    def evaluate_batch(self, batch: dict, stage: str) -> None:
        self.update_images(stage, self(batch["rgb"], batch["l"]), batch["rgb"].float())

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the luminance-guided reconstruction of the batch's images."""
        return {"rgb": self(batch["rgb"], batch["l"])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(
            [
                {"params": list(self.autoencoder.luminance_encoder.parameters())},
                {"params": list(self.discriminator.parameters()),
                 "lr": hp.discriminator_lr or hp.lr},
            ],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )  # fmt: skip


# --------------------------------------------------------------------------- stage 2


class LCADDiffusionModule(SceneCaptionMetrics, ImageMetrics, _Restorable):
    """Stage 2 (§3.3, §3.5): the latent denoiser with channel-extended convolutions.

    Training (Eq. 6): ``‖ε - ε_θ(z_t, t, y^tex, y^lum)‖²`` with ``z_0`` the VAE latent of the
    photograph, ``y^lum`` the deepest luminance feature of the frozen stage-1 encoder, ``y^tex``
    the caption's context after

    * any-level training (§3.5): a complete or partial description (one with a colour word,
      or a CapShapes caption of those levels) becomes scarce with probability
      ``scarce_prob`` (0.3): its colour words are removed
      (:func:`chromalab.text.remove_color_words`);
    * caption dropout (classifier-free guidance, Ho and Salimans 2022): the empty caption with
      probability ``uncond_prob`` (the paper gives no rate: Stable Diffusion's 0.1).

    Sampling (:meth:`colorize`): DDIM with classifier-free guidance in one batched UNet call per
    step (conditional and unconditional rows), the unconditional input being the empty caption
    with the same luminance; the luminance features are computed once per image; the decoded
    colours are joined with the input L.

    Args:
        vae, unet: component settings (:mod:`lcad.components`): Stable Diffusion v1.5 folders
            for the paper, constructor arguments for the CPU configurations.
        compression_from: the stage-1 checkpoint (:class:`LCADCompressionModule`) holding the
            VAE and the trained luminance encoder.
        text_encoder, text_subfolder, max_caption_length, text_pretrained, text_options: the
            frozen caption encoder (:class:`lcad.text.CaptionEncoder`; Stable Diffusion: its
            pipeline folder with ``text_subfolder: text_encoder``).
        schedule: the noise schedule: ``None`` (Stable Diffusion v1's), a pipeline folder, or
            :class:`diffusers.DDPMScheduler` arguments.
        cec: ``"all_down"`` (the paper), ``"first"`` (the release) or ``"none"`` (the paper's
            W/o SLR ablation: the UNet reads no luminance; train it with ``trainable: all``).
        trainable: ``"paper"``: only the extended channels ``W_ext`` (§3.3); ``"release"``:
            also the UNet's up path and output, as the authors' release trains; ``"all"``: the
            whole UNet, for a UNet trained from scratch (the CPU configurations: without a
            pretrained prior there is nothing to keep fixed).
        scarce_prob, uncond_prob: any-level replacement and caption-dropout probabilities.
        lr: Adam (§3.5: 5e-5).
        release_scale: the release's luminance input scaling.
        lic: decode with the luminance-guided decoder (§3.2); ``False`` decodes with the VAE's
            own decoder (the paper's W/o LIC ablation; training is the same, so it can be set
            when loading a checkpoint: ``load_from_checkpoint(path, lic=False)``).
        sample_steps, guidance: DDIM steps and guidance scale of validation, test and predict
            (the paper: 50 steps).
        lpips_weights: local AlexNet weights for LPIPS in validation and test.
        manipulation_seed: seed of the colour swaps of the manipulation metric.
        seed: seed of the training draws (timesteps, noise, replacements), combined with the
            step, batch and rank, so a resumed run draws what the uninterrupted one drew.
    """

    def __init__(
        self,
        vae: components.Component,
        unet: components.Component,
        text_encoder: str,
        compression_from: str | None = None,
        text_subfolder: str | None = None,
        max_caption_length: int | None = None,
        text_pretrained: bool = True,
        text_options: dict[str, Any] | None = None,
        schedule: components.Component | None = None,
        cec: CEC = "all_down",
        trainable: Trainable = "paper",
        scarce_prob: float = 0.3,
        uncond_prob: float = 0.1,
        lr: float = 5e-5,
        release_scale: bool = False,
        lic: bool = True,
        sample_steps: int = 50,
        guidance: float = 5.0,
        lpips_weights: str | None = None,
        manipulation_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if trainable not in ("paper", "release", "all"):
            raise ValueError(f"trainable must be 'paper', 'release' or 'all', got {trainable!r}")
        for name, p in (("scarce_prob", scarce_prob), ("uncond_prob", uncond_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.save_hyperparameters(ignore=["lpips_weights"])
        vae_model = components.vae(vae)
        self.autoencoder = LuminanceGuidedAutoencoder(
            vae_model, LuminanceEncoder.from_vae(vae_model, copy_weights=False), release_scale
        ).requires_grad_(False)
        self.text = CaptionEncoder(text_encoder, text_subfolder, max_caption_length,
                                   text_pretrained, text_options)  # fmt: skip
        unet_model = components.unet(unet)
        if unet_model.config.cross_attention_dim != self.text.width:
            raise ValueError(
                f"the UNet's cross_attention_dim {unet_model.config.cross_attention_dim} differs "
                f"from the text encoder's width {self.text.width}"
            )
        channels = self.autoencoder.luminance_encoder.mid_zero_convs[-1].out_channels
        self.unet = LuminanceUNet(unet_model, channels, cec)
        self.unet.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)
        self.schedule = components.scheduler_config(schedule)
        self.noise_scheduler = DDPMScheduler.from_config(self.schedule)
        self.uses_captions = True
        self.metrics = nn.ModuleDict(self.image_metrics(lpips_weights) | self.scene_metrics())

    # ------------------------------------------------------------------------- weights
    def trainable_parameters(self) -> list[nn.Parameter]:
        """``W_ext`` of the channel-extended convolutions (``paper``), plus the up blocks and
        the output layers of the UNet and its whole input convolution (``release``), or the
        whole UNet (``all``)."""
        if self.hparams.trainable == "all":
            return list(self.unet.parameters())
        params = list(self.unet.extension_parameters())
        if self.hparams.trainable == "release":
            u = self.unet.unet
            seen = {id(p) for p in params}
            for module in (u.up_blocks, u.conv_norm_out, u.conv_out, u.conv_in):
                for p in module.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        return params

    def load_initial_weights(self) -> None:
        hp = self.hparams
        if hp.compression_from:
            state = _load_stage(hp.compression_from, "autoencoder.")
            self.autoencoder.load_state_dict(state)
            logger.info("VAE and luminance encoder loaded from stage 1: %s", hp.compression_from)
        else:
            if components.load_pretrained(self.autoencoder.vae, hp.vae, "vae"):
                logger.info("VAE weights loaded from %s", hp.vae)
            logger.warning(
                "no compression_from: the luminance encoder is untrained (its features are 0, "
                "so the extended channels see nothing)"
            )
        if components.load_pretrained(self.unet.unet, hp.unet, "unet"):
            logger.info("UNet weights loaded from %s", hp.unet)

    def train(self, mode: bool = True) -> LCADDiffusionModule:
        super().train(mode)
        self.autoencoder.eval()  # frozen
        return self

    # ------------------------------------------------------------------------- training
    def _random(self, batch_idx: int) -> random.Random:
        seed = ((self.hparams.seed * 1_000_003 + self.global_step) * 4_099 + batch_idx) * 1_031
        return random.Random(seed + self.global_rank)

    def training_captions(self, batch: dict, batch_idx: int) -> list[str]:
        """The batch's captions after any-level replacement and caption dropout (§3.5)."""
        rng = self._random(batch_idx)
        levels = batch.get("level")
        out = []
        for i, caption in enumerate(batch["caption"]):
            level = levels[i] if levels is not None else None
            detailed = (
                level in ("complete", "partial") if level else bool(find_color_words(caption))
            )
            if detailed and rng.random() < self.hparams.scarce_prob:
                caption = remove_color_words(caption)
            if rng.random() < self.hparams.uncond_prob:
                caption = ""
            out.append(caption)
        return out

    def denoising_loss(
        self, batch: dict, captions: Sequence[str], generator: torch.Generator | None = None
    ) -> Tensor:
        """Eq. 6 on a batch, with noise and timesteps from ``generator``."""
        with torch.no_grad():
            latent = self.autoencoder.encode(_to_model(batch["rgb"]))
            luminance = self.autoencoder.luminance_features(batch["l"])[-1]
            context = self.text(captions)
        b = latent.shape[0]
        device = latent.device
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,),
                          generator=generator).to(device)  # fmt: skip
        noise = torch.randn(latent.shape, generator=generator).to(device, latent.dtype)
        noisy = self.noise_scheduler.add_noise(latent, noise, t)
        with self.unet.luminance(luminance):
            pred = self.unet(noisy, t, context.to(noisy.dtype))
        return F.mse_loss(pred.float(), noise.float())

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        captions = self.training_captions(batch, batch_idx)
        generator = torch.Generator().manual_seed(self._random(batch_idx).getrandbits(62))
        loss = self.denoising_loss(batch, captions, generator)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(captions))
        return loss

    # ------------------------------------------------------------------------- sampling
    def pipeline(self, scheduler: str = "ddim") -> LCADPipeline:
        """The model as an :class:`lcad.pipeline.LCADPipeline` (its own modules, no copy) with
        the scheduler ``scheduler`` on the training noise schedule; ``save_pretrained`` writes
        a diffusers folder that ``LCADPipeline.from_pretrained`` reads."""
        pipe = LCADPipeline(
            vae=self.autoencoder.vae,
            luminance_encoder=self.autoencoder.luminance_encoder,
            unet=self.unet,
            text_encoder=self.text.model,
            tokenizer=self.text.tokenizer,
            scheduler=make_scheduler(scheduler, self.schedule),
            release_scale=self.hparams.release_scale,
            lic=self.hparams.lic,
            caption_length=self.text.max_length,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def colorize_rgb(
        self,
        l: Tensor,
        captions: Sequence[str],
        steps: int | None = None,
        guidance: float | None = None,
        generators: Sequence[torch.Generator] | None = None,
        scheduler: str = "ddim",
        **options: Any,
    ) -> Tensor:
        """Colorizations ``(B, 3, H, W)`` in ``[0, 1]`` of lightness ``l`` ``(B, 1, H, W)``
        (sides multiples of the VAE's downsampling factor) with one caption each: the
        :meth:`pipeline`'s sampling (DDIM by default, the module's steps and guidance), one
        generator per image (the same seed gives the same colours whatever the batch), the
        input L kept. ``options``: further :class:`~lcad.pipeline.LCADPipeline` arguments
        (``masks``, ``edit_step_size``, ``edit_steps``)."""
        captions = list(captions)
        if len(captions) != l.shape[0]:
            raise ValueError(f"{l.shape[0]} images but {len(captions)} captions")
        return self.pipeline(scheduler)(
            l,
            captions,
            num_inference_steps=steps or self.hparams.sample_steps,
            guidance_scale=self.hparams.guidance if guidance is None else guidance,
            generator=list(generators) if generators else None,
            **options,
        ).images

    def colorize(self, l: Tensor, captions: Sequence[str], **kwargs) -> Tensor:
        """Predicted ab ``(B, 2, H, W)`` (:meth:`colorize_rgb`)."""
        return rgb_to_l_ab(self.colorize_rgb(l, captions, **kwargs))[1]

    def _generators(self, batch: dict) -> list[torch.Generator] | None:
        if "index" not in batch:
            return None
        return [torch.Generator().manual_seed(int(i)) for i in batch["index"]]

    # ------------------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: dict, stage: str) -> None:
        l, captions = batch["l"], list(batch["caption"])
        generators = self._generators(batch)
        rgb = self.colorize_rgb(l, captions, generators=generators)
        self.update_images(stage, rgb, batch["rgb"].float())
        size = l.shape[0]
        loss = self.denoising_loss(batch, captions, torch.Generator().manual_seed(0))
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size)
        if "masks" in batch:
            ab = rgb_to_l_ab(rgb)[1]
            self.update_scene_metrics(
                batch, ab, lambda c: self.colorize(l, c, generators=self._generators(batch)), stage
            )

    def log_stage_metrics(self, stage: str) -> None:
        super().log_stage_metrics(stage)
        scenes = getattr(self.trainer.datamodule, "source", None) == "capshapes"
        caption = self.scene_scores(stage, scenes)
        if caption:
            self.log_dict({f"{stage}/{k}": v for k, v in caption.items()})

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the colorization of the batch's lightness with its captions."""
        rgb = self.colorize_rgb(batch["l"], list(batch["caption"]),
                                generators=self._generators(batch))  # fmt: skip
        return {"rgb": rgb}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.trainable_parameters(), lr=self.hparams.lr)
