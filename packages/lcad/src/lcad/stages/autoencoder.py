"""Stage 0 of L-CAD's CPU configurations: a VAE trained from scratch (not in the paper, which
starts from Stable Diffusion's VAE)."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from chromalab.modules import ImageMetrics
from chromalab.tasks import ColorizationTask
from lcad import components
from lcad.stages.common import to_image, to_model

__all__ = ["LCADAutoencoderModule"]

logger = logging.getLogger(__name__)


class LCADAutoencoderModule(ImageMetrics, ColorizationTask):
    """Stage 0: a VAE from scratch (the CPU configurations have no pretrained one): L1
    reconstruction plus a small KL term.

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
        super().__init__(lpips_weights=lpips_weights)

    def configure_models(self) -> None:
        self.vae = components.vae(self.hparams.vae)

    def configure_metrics(self) -> None:
        self.metrics = nn.ModuleDict(self.image_metrics(self.local_files["lpips_weights"]))

    def load_initial_weights(self) -> None:
        if components.load_pretrained(self.vae, self.hparams.vae, "vae"):
            logger.info("VAE weights loaded from %s", self.hparams.vae)

    def forward(self, rgb: Tensor) -> Tensor:
        """The reconstruction of ``rgb`` (posterior mode), in ``[0, 1]``."""
        return to_image(self.vae(to_model(rgb)).sample)

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        x = to_model(batch["rgb"])
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
