"""Stage 1 of L-CAD (§3.2): the luminance encoder, trained with Eq. 4 on a frozen VAE."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from chromalab.metrics import LPIPS
from chromalab.modules import ImageMetrics
from chromalab.tasks import ColorizationTask, as_config
from lcad import components
from lcad.compression import LuminanceEncoder, LuminanceGuidedAutoencoder
from lcad.losses import (
    FeaturePerceptualLoss,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_hinge_loss,
    generator_hinge_loss,
    pixel_loss,
    reconstruction_loss,
)
from lcad.stages.common import load_stage, to_image, to_model

__all__ = ["DiscriminatorConfig", "LCADCompressionModule"]

logger = logging.getLogger(__name__)

#: The weight at which the adversarial weight compares gradients: the decoder's last layer (the
#: release's ``get_last_layer``, ``decoder.conv_out.weight``), in the autoencoder's names.
LAST_LAYER = "vae.decoder.conv_out.weight"


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The patch discriminator of ``L_dis`` (Eq. 4), its weight and when it starts.

    Args:
        start: optimizer steps before ``L_dis`` and the discriminator start (the release's
            ``disc_start``: its factor is 0 before).
        channels, layers: the patch discriminator (:class:`lcad.losses.PatchDiscriminator`).
        lr: the discriminator's learning rate (default: the module's ``lr``).
        weight: the release's ``disc_weight`` (1), multiplying the adaptive weight of
            ``L_dis`` (:func:`lcad.losses.adaptive_weight`); it takes the place of the paper's
            ``α = 1``. 0 leaves ``L_dis`` and the discriminator out (``L_rec`` alone).
    """

    start: int = 0
    channels: int = 64
    layers: int = 3
    lr: float | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"discriminator start must be >= 0, got {self.start}")
        if self.weight < 0:
            raise ValueError(f"discriminator weight must be >= 0, got {self.weight}")


class LCADCompressionModule(ImageMetrics, ColorizationTask):
    """Stage 1 (§3.2): the luminance encoder, trained with Eq. 4 on a frozen VAE.

    ``L_dis`` is weighted as the authors' release weights it (changzheng123/L-CAD,
    ``LPIPSWithDiscriminator`` in ``ldm/modules/losses/contperceptual.py``, after Esser et al.'s
    VQGAN): by ``discriminator.weight`` (the release's ``disc_weight``, 1; the paper's ``α``)
    times ``‖∇_W L_rec‖ / (‖∇_W L_dis‖ + 1e-4)``, clamped to ``[0, 1e4]`` and detached, where
    ``W`` is the decoder's last weight (:data:`LAST_LAYER`), from ``discriminator.start`` on
    (:func:`lcad.losses.adaptive_weight`). The VAE stays frozen: ``W`` enters the forward pass
    as a detached copy that takes gradients, only to measure the two norms. Where gradients are
    off (evaluation) the weight is 0, as in the release. ``L_rec`` is Eq. 3's (the release's
    artifact map differs: :mod:`lcad.losses`).

    The generator (luminance encoder) and the patch discriminator take their steps together
    from one backward pass: the generator's adversarial term reads the discriminator through
    detached parameters, and the discriminator's hinge loss reads the reconstruction detached,
    so each loss reaches only its own network and one optimizer (two parameter groups) serves
    both (Lightning's automatic optimization, DDP, precision and gradient clipping apply).

    Args:
        vae: the VAE (a Stable Diffusion pipeline folder, a VAE folder, or constructor
            arguments with ``vae_from`` a stage-0 checkpoint).
        vae_from: a stage-0 checkpoint (:class:`~lcad.stages.LCADAutoencoderModule`) to take
            the VAE's weights from.
        copy_encoder: start the luminance encoder from the VAE encoder's weights.
        window: ``N_win`` of the artifact map (Eq. 3; the paper gives none: LDL's 7).
        beta: Eq. 4's weight of ``L_per`` (0.5).
        discriminator: the patch discriminator, the weight of ``L_dis`` and its start
            (:class:`DiscriminatorConfig`).
        perceptual_network, perceptual_weights: without LPIPS weights, ``L_per`` is the
            feature distance of this timm network (:class:`lcad.losses.FeaturePerceptualLoss`)
            with these local weights (none: random weights, for plumbing). With neither,
            ``L_per`` is left out. The log says which ``L_per`` is used.
        lr, betas: Adam (§3.5: 1e-6; betas: the release's (0.5, 0.9)).
        release_scale: the release's luminance input scaling (:func:`lcad.compression.
            luminance_input`).
        lpips_weights: local AlexNet weights: ``L_per`` is LPIPS, and LPIPS is evaluated.
    """

    local_prefixes = ("perceptual.",)  # LPIPS's network as L_per: local weights, not the model

    def __init__(
        self,
        vae: components.Component,
        vae_from: str | None = None,
        copy_encoder: bool = True,
        window: int = 7,
        beta: float = 0.5,
        discriminator: DiscriminatorConfig = DiscriminatorConfig(),  # noqa: B008 (frozen)
        perceptual_network: str | None = None,
        perceptual_weights: str | None = None,
        lr: float = 1e-6,
        betas: tuple[float, float] = (0.5, 0.9),
        release_scale: bool = False,
        lpips_weights: str | None = None,
    ) -> None:
        super().__init__(lpips_weights=lpips_weights)

    def configure_models(self) -> None:
        hp = self.hparams
        vae_model = components.vae(hp.vae)
        self.autoencoder = LuminanceGuidedAutoencoder(
            vae_model, LuminanceEncoder.from_vae(vae_model, copy_weights=False), hp.release_scale
        )
        #: the discriminator's settings (``hparams.discriminator`` as its dataclass)
        self.discriminator_config = as_config(DiscriminatorConfig, hp.discriminator)
        self.discriminator = PatchDiscriminator(
            vae_model.config.out_channels,
            self.discriminator_config.channels,
            self.discriminator_config.layers,
        )

    def configure_losses(self) -> None:
        hp, lpips = self.hparams, self.local_files["lpips_weights"]
        self.perceptual: nn.Module | None = None
        if lpips:
            self.perceptual = LPIPS(lpips).net
        elif hp.perceptual_network:
            self.perceptual = FeaturePerceptualLoss(hp.perceptual_network, hp.perceptual_weights)

    def configure_metrics(self) -> None:
        self.metrics = nn.ModuleDict(self.image_metrics(self.local_files["lpips_weights"]))

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
            vae.load_state_dict(load_stage(hp.vae_from, "vae."))
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
        return to_image(self.autoencoder(to_model(rgb), l))

    def losses(self, batch: dict) -> dict[str, Tensor]:
        """``rec``, ``dis`` and ``per`` of Eq. 4 (the last two when active), ``d_weight`` (the
        adaptive weight of ``dis``, 0 before ``discriminator.start``), ``pixel`` (Eq. 4),
        ``discriminator`` (its hinge loss, when active) and ``loss`` (what is minimised)."""
        hp, config = self.hparams, self.discriminator_config
        x = to_model(batch["rgb"])
        adversarial = self.global_step >= config.start and config.weight != 0
        adaptive = adversarial and torch.is_grad_enabled()
        if adaptive:  # the decoder's last weight as a leaf of its own (the VAE stays frozen)
            last = self.autoencoder.get_parameter(LAST_LAYER).detach().requires_grad_()
            rec = torch.func.functional_call(self.autoencoder, {LAST_LAYER: last},
                                             (x, batch["l"]))  # fmt: skip
        else:
            rec = self.autoencoder(x, batch["l"])
        terms = {"rec": reconstruction_loss(x, rec, hp.window)}
        terms["d_weight"] = rec.new_zeros((), dtype=torch.float32)
        if adversarial:
            frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
            fake = torch.func.functional_call(self.discriminator, frozen, (rec,))
            terms["dis"] = generator_hinge_loss(fake)
            if adaptive:
                terms["d_weight"] = adaptive_weight(terms["rec"], terms["dis"], last, config.weight)
        if self.perceptual is not None and hp.beta:
            terms["per"] = self.perceptual(rec.float(), x).mean()
        terms["pixel"] = pixel_loss(terms["rec"], terms.get("dis"), terms.get("per"),
                                    terms["d_weight"], hp.beta)  # fmt: skip
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
                 "lr": self.discriminator_config.lr or hp.lr},
            ],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )  # fmt: skip
