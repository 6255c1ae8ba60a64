"""Stage 2 of L-CAD (§3.3, §3.5): the latent denoiser with channel-extended convolutions."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor, nn

from chromalab.color import rgb_to_l_ab
from chromalab.modules import ImageMetrics, SceneCaptionMetrics
from chromalab.tasks import ColorizationTask, as_config
from lcad import components
from lcad.cec import CEC, LuminanceUNet
from lcad.compression import LuminanceEncoder, LuminanceGuidedAutoencoder
from lcad.pipeline import DEFAULT_SCHEDULER, LCADPipeline, SamplingConfig, make_scheduler
from lcad.stages.common import load_stage, to_model
from lcad.text import CaptionEncoderConfig, any_level_captions

__all__ = ["LCADDiffusionModule"]

logger = logging.getLogger(__name__)

Trainable = Literal["paper", "release", "all"]


class LCADDiffusionModule(SceneCaptionMetrics, ImageMetrics, ColorizationTask):
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

    Sampling (:meth:`colorize`): :class:`lcad.pipeline.LCADPipeline` (DDIM by default) with
    classifier-free guidance in one batched UNet call per step, the luminance features computed
    once per image, the decoded colours joined with the input L.

    Args:
        vae, unet: component settings (:mod:`lcad.components`): Stable Diffusion v1.5 folders
            for the paper, constructor arguments for the CPU configurations.
        text: the frozen caption encoder (:class:`lcad.text.CaptionEncoderConfig`; Stable
            Diffusion: ``{encoder: <pipeline folder>, subfolder: text_encoder}``).
        compression_from: the stage-1 checkpoint (:class:`~lcad.stages.LCADCompressionModule`)
            holding the VAE and the trained luminance encoder.
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
        sampling: steps, guidance and decoder of validation, test and predict
            (:class:`SamplingConfig`).
        manipulation_seed: seed of the colour swaps of the manipulation metric.
        seed: seed of the training draws (timesteps, noise, replacements), combined with the
            step, batch and rank (:meth:`chromalab.tasks.ColorizationTask.step_seed`), so a
            resumed run draws what the uninterrupted one drew.
        lpips_weights: local AlexNet weights for LPIPS in validation and test.
    """

    def __init__(
        self,
        vae: components.Component,
        unet: components.Component,
        text: CaptionEncoderConfig,
        compression_from: str | None = None,
        schedule: components.Component | None = None,
        cec: CEC = "all_down",
        trainable: Trainable = "paper",
        scarce_prob: float = 0.3,
        uncond_prob: float = 0.1,
        lr: float = 5e-5,
        release_scale: bool = False,
        sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 (frozen)
        manipulation_seed: int = 0,
        seed: int = 0,
        lpips_weights: str | None = None,
    ) -> None:
        if trainable not in ("paper", "release", "all"):
            raise ValueError(f"trainable must be 'paper', 'release' or 'all', got {trainable!r}")
        for name, p in (("scarce_prob", scarce_prob), ("uncond_prob", uncond_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        as_config(CaptionEncoderConfig, text)  # a dict is checked field by field
        super().__init__(lpips_weights=lpips_weights)

    # ------------------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        #: sampling settings (``hparams.sampling`` as its dataclass)
        self.sampling = as_config(SamplingConfig, hp.sampling)
        vae_model = components.vae(hp.vae)
        self.autoencoder = LuminanceGuidedAutoencoder(
            vae_model, LuminanceEncoder.from_vae(vae_model, copy_weights=False), hp.release_scale
        ).requires_grad_(False)
        self.text = as_config(CaptionEncoderConfig, hp.text).build()
        unet_model = components.unet(hp.unet)
        if unet_model.config.cross_attention_dim != self.text.width:
            raise ValueError(
                f"the UNet's cross_attention_dim {unet_model.config.cross_attention_dim} differs "
                f"from the text encoder's width {self.text.width}"
            )
        channels = self.autoencoder.luminance_encoder.mid_zero_convs[-1].out_channels
        self.unet = LuminanceUNet(unet_model, channels, hp.cec)
        self.unet.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)
        self.schedule = components.scheduler_config(hp.schedule)
        self.noise_scheduler = DDPMScheduler.from_config(self.schedule)
        self.uses_captions = True

    def configure_metrics(self) -> None:
        lpips = self.local_files["lpips_weights"]
        self.metrics = nn.ModuleDict(self.image_metrics(lpips) | self.scene_metrics())

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
            state = load_stage(hp.compression_from, "autoencoder.")
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
        return random.Random(self.step_seed(batch_idx, self.hparams.seed))

    def training_captions(self, batch: dict, batch_idx: int) -> list[str]:
        """The batch's captions after any-level replacement and caption dropout (§3.5)."""
        return any_level_captions(
            batch["caption"], batch.get("level"), self._random(batch_idx),
            self.hparams.scarce_prob, self.hparams.uncond_prob,
        )  # fmt: skip

    def denoising_loss(
        self, batch: dict, captions: Sequence[str], generator: torch.Generator | None = None
    ) -> Tensor:
        """Eq. 6 on a batch, with noise and timesteps from ``generator``."""
        with torch.no_grad():
            latent = self.autoencoder.encode(to_model(batch["rgb"]))
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
    def pipeline(self, scheduler: str = DEFAULT_SCHEDULER) -> LCADPipeline:
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
            lic=self.sampling.lic,
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
        scheduler: str = DEFAULT_SCHEDULER,
        **options: Any,
    ) -> Tensor:
        """Colorizations ``(B, 3, H, W)`` in ``[0, 1]`` of lightness ``l`` ``(B, 1, H, W)``
        (sides multiples of the VAE's downsampling factor) with one caption each: the
        :meth:`pipeline`'s sampling (DDIM by default, the module's :attr:`sampling` steps and
        guidance), one generator per image (the same seed gives the same colours whatever the
        batch), the input L kept. ``options``: further :class:`~lcad.pipeline.LCADPipeline`
        arguments (``masks``, ``edit_step_size``, ``edit_steps``)."""
        captions = list(captions)
        if len(captions) != l.shape[0]:
            raise ValueError(f"{l.shape[0]} images but {len(captions)} captions")
        return self.pipeline(scheduler)(
            l,
            captions,
            num_inference_steps=steps or self.sampling.steps,
            guidance_scale=self.sampling.guidance if guidance is None else guidance,
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
