"""``CICModule``: training and evaluation of Colorful Image Colorization (Zhang et al. 2016).

* Loss: Eq. 3, multinomial cross-entropy against soft-encoded targets (k = 10, sigma = 5,
  §3.1) weighted per pixel by the class-rebalancing weight of the target's nearest bin
  (Eq. 5-6, lambda = 1/2, sigma = 5). ``lam=1`` turns rebalancing off (Eq. 7; Table 1 row 2).
* Targets are computed on the device from the batch's ``ab`` at the output resolution (1/4 of
  the input): ab is point-sampled at the centre of every 4x4 cell, then soft-encoded.
* Decoding: annealed mean (Eq. 8) at ``temperature`` (default 0.38, the released model's).
* Deep supervision (§3.4, optional): readouts on blocks 6 and 7 supervised at 1/8 resolution;
  each deeper loss weighs twice the previous (block 8: 1, block 7: 1/2, block 6: 1/4).

The bin centres and the rebalancing weights are buffers saved in the checkpoint, so
``CICModule.load_from_checkpoint(path)`` rebuilds a ready model with no other file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from chromalab.bins import ABBins, soft_cross_entropy
from chromalab.color import lab_to_rgb
from chromalab.io import recombine
from chromalab.metrics import AuCCMF, Colorfulness
from chromalab.modules import (
    FLAT_OPTIMIZER_HPARAMS,
    ClassRebalancing,
    StagedEvaluation,
    StepDecayAdam,
    adam_step_decay,
)
from chromalab.rebalance import pixel_weights
from chromalab.tasks import ColorizationTask, as_config
from cic.networks import CICNetwork

__all__ = ["CICModule", "RELEASE_OPTIMIZER", "subsample_targets"]

logger = logging.getLogger(__name__)

_RELEASED_CLASSES = 313

#: The release's optimizer (colorization release v2): Adam 3e-5, betas (0.9, 0.99), weight
#: decay 1e-3, the rate divided by 10 every 200k steps. ``CICModule``'s default.
RELEASE_OPTIMIZER = StepDecayAdam(
    lr=3e-5, betas=(0.9, 0.99), weight_decay=1e-3, step_size=200_000, gamma=0.1
)


def subsample_targets(ab: Tensor, factor: int) -> Tensor:
    """Point-sample ``ab`` ``(B, 2, H, W)`` at the centre of every ``factor x factor`` cell."""
    offset = factor // 2
    return ab[:, :, offset::factor, offset::factor]


class CICModule(ClassRebalancing, StagedEvaluation, ColorizationTask):
    """Colorful Image Colorization as a LightningModule.

    Args:
        width: channel multiplier of the network (1.0 = the paper's).
        bins: ``"gamut"`` (our in-gamut rule, :meth:`ABBins.gamut`), ``"grid"`` (25x25) or
            ``"released"`` (the 313 bins of the authors' model; needs ``init_from`` or a
            checkpoint, which carry the table).
        init_from: weights to start from: the authors' released ``.pth`` (see
            :mod:`cic.weights`) or a Lightning checkpoint of this module (e.g. to fine-tune
            with ``lam=1``, Table 1 row 2). Loaded at the start of ``fit`` only; resuming with
            ``--ckpt_path`` restores everything instead.
        lam: rebalancing mix ``lambda`` of Eq. 6 (paper 1/2; 1 = no rebalancing).
        sigma: Gaussian width (ab units) for soft-encoding and prior smoothing (paper 5).
        k: soft-encoding neighbours (paper 10).
        prior: a prior file from ``chromalab prior``; without it the prior is estimated from
            the first ``prior_batches`` training batches (all ranks together).
        prior_batches: batches used to estimate the prior when no file is given.
        temperature: annealed-mean temperature for decoding (Eq. 8).
        deep_supervision: add the auxiliary readouts of §3.4.
        optimizer: Adam with step decay (:class:`chromalab.modules.StepDecayAdam`: ``lr``,
            ``betas``, ``weight_decay``, and the rate multiplied by ``gamma`` every
            ``step_size`` optimizer steps); default :data:`RELEASE_OPTIMIZER`, the release's
            (3e-5, (0.9, 0.99), 1e-3, x0.1 every 200k steps). A partial setting keeps the
            other defaults: ``optimizer: {lr: 1.0e-3}`` in a config file,
            ``--model.optimizer.lr 1e-3`` on the command line.
        channels_last: run the network in channels-last memory format (default: on; measured
            faster in every setting of ``benchmarks/cic_speed.py``, identical results up to
            float rounding). For bf16 use ``trainer.precision: bf16-mixed`` (opt-in: it
            changes the numerics; 3-5x faster where the hardware has bf16 units).
    """

    #: the flat Adam arguments of earlier versions (``lr``, ..., ``lr_gamma``), now ``optimizer``
    moved_hparams = FLAT_OPTIMIZER_HPARAMS

    def __init__(
        self,
        width: float = 1.0,
        bins: Literal["gamut", "grid", "released"] = "gamut",
        init_from: str | None = None,
        lam: float = 0.5,
        sigma: float = 5.0,
        k: int = 10,
        prior: str | None = None,
        prior_batches: int = 50,
        temperature: float = 0.38,
        deep_supervision: bool = False,
        optimizer: StepDecayAdam = RELEASE_OPTIMIZER,
        channels_last: bool = True,
    ):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if bins not in ("gamut", "grid", "released"):
            raise ValueError(f"bins must be 'gamut', 'grid' or 'released', got {bins!r}")
        super().__init__()

    def configure_models(self) -> None:
        hp = self.hparams
        if hp.bins == "gamut":
            self.bins = ABBins.gamut()
        elif hp.bins == "grid":
            self.bins = ABBins.grid(25, 10.0)
        else:  # placeholder centres of the release: filled from init_from or from a checkpoint
            self.bins = ABBins(torch.zeros(_RELEASED_CLASSES, 2))
        self.network = CICNetwork(self.bins.num_bins, hp.width, hp.deep_supervision)
        if hp.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.register_buffer("class_weights", torch.ones(self.bins.num_bins))
        self.register_buffer("weights_ready", torch.tensor(hp.lam == 1.0))
        self.register_buffer("bins_ready", torch.tensor(hp.bins != "released"))

    def configure_metrics(self) -> None:
        # evaluation metrics are model-independent: AuC CMF classes are always the gamut bins
        self.val_cmf = AuCCMF()
        self.val_colorfulness = Colorfulness()
        self.test_cmf = AuCCMF()
        self.test_colorfulness = Colorfulness()

    # ------------------------------------------------------------------------- inference
    def forward(self, l: Tensor) -> Tensor:
        """Class scores ``(B, Q, H/4, W/4)`` for lightness ``l`` ``(B, 1, H, W)`` in [0, 100]."""
        if self.hparams.channels_last:
            l = l.contiguous(memory_format=torch.channels_last)
        return self.network(l)

    def colorize(self, l: Tensor, temperature: float | None = None) -> Tensor:
        """Predicted ab ``(B, 2, H/4, W/4)`` by the annealed mean at ``temperature``."""
        self._require_bins()
        t = self.hparams.temperature if temperature is None else temperature
        return self.bins.annealed_mean(self(l).float(), t)

    def _require_bins(self) -> None:
        if not bool(self.bins_ready):
            raise RuntimeError(
                "bins='released' needs the release's bin table: set init_from to the "
                "released .pth or load a checkpoint trained with it"
            )

    # ------------------------------------------------------------------------- setup
    def load_initial_weights(self) -> None:
        # a checkpoint given to fit (--ckpt_path) is restored after this, over it
        if self.hparams.init_from:
            self._initialise_from(Path(self.hparams.init_from))

    def _initialise_from(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"init_from not found: {path}")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(blob, dict) and "state_dict" in blob:  # a Lightning checkpoint
            state = {
                k: v for k, v in blob["state_dict"].items() if k.startswith(("network.", "bins."))
            }
            missing, unexpected = self.load_state_dict(state, strict=False)
            bad = [k for k in missing if k.startswith("network.")] + list(unexpected)
            if bad:
                raise ValueError(f"{path}: checkpoint does not fit this model: {bad[:8]}")
        else:
            from cic.weights import load_released

            network, bins = load_released(path)
            if bins.num_bins != self.bins.num_bins:
                raise ValueError(
                    f"{path}: release has {bins.num_bins} classes, this model {self.bins.num_bins}"
                    " (use bins='released')"
                )
            if network.width != self.hparams.width:
                raise ValueError(
                    f"{path}: release has width {network.width}, model {self.hparams.width}"
                )
            self.network.load_state_dict(
                network.state_dict(), strict=not self.hparams.deep_supervision
            )
            self.bins.set_centers(bins.centers)
        self.bins_ready.fill_(True)
        logger.info("initialised from %s", path)

    def on_fit_start(self) -> None:
        self._require_bins()
        self.set_class_weights()

    def prior_targets(self, ab: Tensor) -> Tensor:
        return subsample_targets(ab, factor=4)

    # ------------------------------------------------------------------------- training
    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        l, ab = batch["l"], batch["ab"]
        if self.hparams.deep_supervision:
            if self.hparams.channels_last:
                l = l.contiguous(memory_format=torch.channels_last)
            logits, aux = self.network.forward_with_aux(l)
        else:
            logits, aux = self(l), {}
        loss = self._term(logits, subsample_targets(ab, 4))
        for name, weight in (("block7", 0.5), ("block6", 0.25)):
            if name in aux:
                loss = loss + weight * self._term(aux[name], subsample_targets(ab, 8))
        return loss, logits

    def _term(self, logits: Tensor, ab: Tensor) -> Tensor:
        if logits.shape[2:] != ab.shape[2:]:
            raise ValueError(f"scores {tuple(logits.shape)} and targets {tuple(ab.shape)} differ")
        target = self.bins.encode_soft(ab, k=self.hparams.k, sigma=self.hparams.sigma)
        v = pixel_weights(self.class_weights, target.nearest)
        return soft_cross_entropy(logits, target, v)

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every sample of the batch was unreadable
            return None
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["l"].shape[0])
        return loss

    def evaluate_batch(self, batch: dict, stage: str) -> None:
        cmf, colorfulness = self._stage_metrics(stage)
        loss, logits = self._loss(batch)
        ab_small = self.bins.annealed_mean(logits.float(), self.hparams.temperature)
        ab = F.interpolate(
            ab_small, size=batch["ab"].shape[2:], mode="bilinear", align_corners=False
        )
        cmf.update(ab, batch["ab"])
        rgb = lab_to_rgb(torch.cat([batch["l"], ab], dim=1))
        colorfulness.update(rgb, batch["rgb"])
        size = batch["l"].shape[0]
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size)

    def _stage_metrics(self, stage: str) -> tuple[AuCCMF, Colorfulness]:
        return getattr(self, f"{stage}_cmf"), getattr(self, f"{stage}_colorfulness")

    def log_stage_metrics(self, stage: str) -> None:
        cmf, colorfulness = self._stage_metrics(stage)
        if colorfulness.count == 0 and self.trainer.world_size == 1:
            return  # nothing was evaluated (e.g. limit_val_batches 0)
        # two metrics of different inputs (ab, RGB): not one MetricCollection, one log_dict each
        areas = {k: v for k, v in cmf.compute().items() if k.startswith("auc")}  # not the curves
        self.log_dict({f"{stage}/{k}": v for k, v in areas.items()}, prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in colorfulness.compute().items()})
        cmf.reset()
        colorfulness.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the colorization at the input resolution (:func:`chromalab.io.recombine`
        of the input L and the upsampled ab); ``ab``: the prediction at the network's 1/4."""
        ab = self.colorize(batch["l"])
        return {"rgb": recombine(batch["l"], ab), "ab": ab}

    def configure_optimizers(self):
        settings = as_config(StepDecayAdam, self.hparams.optimizer)
        return adam_step_decay(self.network.parameters(), settings)
