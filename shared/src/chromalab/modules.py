"""What the packages' LightningModules share: an Adam schedule, class rebalancing and the
caption metrics of CapShapes scenes.

* :class:`StepDecayAdam` and :func:`adam_step_decay`: Adam with a step-decayed learning rate
  (the ``optimizer`` argument of CIC and film_color), in the form Lightning's
  ``configure_optimizers`` returns.
* :class:`ClassRebalancing`: a LightningModule mixin that sets the class-rebalancing weights of
  Zhang, Isola, Efros, "Colorful Image Colorization", ECCV 2016 (arXiv:1603.08511), Eq. 5-6,
  once at the start of ``fit``, from a prior file or from the first training batches of all
  ranks, each rank reading its own share of the samples (:mod:`chromalab.rebalance` holds the
  maths).
* :class:`StagedEvaluation`: the validation and test hooks of a LightningModule, written once.
* :class:`ImageMetrics`: PSNR/SSIM (and LPIPS with local weights) of the colorizations per
  stage, with fixed metric networks kept out of checkpoints.
* :class:`SceneCaptionMetrics`: a LightningModule mixin that scores CapShapes batches with
  caption consistency and the caption-manipulation accuracy of Manjunatha et al., "Learning to
  Color from Language", NAACL 2018 (arXiv:1804.06026), §3.2.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from chromalab.metrics import LPIPS, CaptionConsistency, manipulate_batch
from chromalab.metrics.perceptual import psnr_ssim_metrics
from chromalab.rebalance import estimate_prior, load_prior, rebalance_weights

__all__ = [
    "FLAT_OPTIMIZER_HPARAMS",
    "ClassRebalancing",
    "ImageMetrics",
    "SceneCaptionMetrics",
    "StagedEvaluation",
    "StepDecayAdam",
    "adam_step_decay",
    "rank_shard",
]


@dataclass(frozen=True)
class StepDecayAdam:
    """Adam whose learning rate is multiplied by ``gamma`` every ``step_size`` optimizer steps
    (:func:`adam_step_decay`). The modules that take it (``CICModule``, ``FilmColorModule``)
    each have their own default instance; in a config file ``optimizer: {lr: 1.0e-3}`` (or
    ``--model.optimizer.lr 1e-3``) changes one field and keeps that module's other defaults.

    Args:
        lr: the learning rate (> 0).
        betas: Adam's decay rates of the first and second moments, each in ``[0, 1)``.
        weight_decay: Adam's L2 penalty (>= 0).
        step_size: optimizer steps between two decays of the rate (>= 1).
        gamma: the factor of each decay (> 0; 1 keeps the rate constant).
    """

    lr: float
    betas: tuple[float, float]
    weight_decay: float
    step_size: int
    gamma: float

    def __post_init__(self) -> None:
        betas = tuple(float(b) for b in self.betas)  # a list from YAML or JSON
        object.__setattr__(self, "betas", betas)
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if not self.weight_decay >= 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if isinstance(self.step_size, bool) or int(self.step_size) != self.step_size:
            raise ValueError(f"optimizer.step_size must be an integer, got {self.step_size!r}")
        if self.step_size < 1:
            raise ValueError(f"optimizer.step_size must be >= 1, got {self.step_size}")
        object.__setattr__(self, "step_size", int(self.step_size))
        if not self.gamma > 0:
            raise ValueError(f"optimizer.gamma must be > 0, got {self.gamma}")


#: Where the flat Adam hyper-parameters of earlier CIC and film_color checkpoints went: flat
#: name -> (argument, field of :class:`StepDecayAdam`), for
#: :attr:`chromalab.tasks.ColorizationTask.moved_hparams`.
FLAT_OPTIMIZER_HPARAMS: dict[str, tuple[str, str]] = {
    "lr": ("optimizer", "lr"),
    "betas": ("optimizer", "betas"),
    "weight_decay": ("optimizer", "weight_decay"),
    "lr_step_size": ("optimizer", "step_size"),
    "lr_gamma": ("optimizer", "gamma"),
}


def adam_step_decay(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], settings: StepDecayAdam
) -> dict[str, Any]:
    """Adam with a step-decayed learning rate, as Lightning's ``configure_optimizers`` returns it.

    ``parameters`` are parameters or Adam parameter groups (a group's own ``lr`` overrides
    ``settings.lr`` and decays with the others); ``settings`` (:class:`StepDecayAdam`) gives
    the rate, betas and weight decay, and the rate is multiplied by ``settings.gamma`` every
    ``settings.step_size`` optimizer steps.
    """
    if not isinstance(settings, StepDecayAdam):
        raise TypeError(f"settings must be a StepDecayAdam, got {type(settings).__name__}")
    optimizer = torch.optim.Adam(
        parameters, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=settings.step_size, gamma=settings.gamma
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ClassRebalancing:
    """Class-rebalancing weights of a LightningModule, set once at the start of ``fit``.

    The host module has ``bins`` (:class:`ABBins`), buffers ``class_weights`` and
    ``weights_ready``, hyper-parameters ``prior``, ``prior_batches``, ``lam`` and ``sigma``,
    and :meth:`prior_targets` mapping a batch's ab to the grid the loss is taken on. Weights
    restored from a checkpoint (``weights_ready``) are kept; otherwise the prior comes from
    the ``prior`` file or from the first ``prior_batches`` training batches of all ranks:
    each rank reads ``prior_batches`` batches of its own share of the training order (disjoint
    samples, :func:`rank_shard`) and the counts of all ranks are summed.
    """

    def prior_targets(self, ab: Tensor) -> Tensor:
        """ab ``(B, 2, H, W)`` brought to the grid of the loss's targets (the host defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define prior_targets(ab)")

    def set_class_weights(self) -> None:
        if bool(self.weights_ready):
            return
        if self.hparams.prior:
            prior = load_prior(self.hparams.prior, self.bins)
            source = self.hparams.prior
        else:
            prior, source = self._estimate_prior(), f"{self.hparams.prior_batches} training batches"
        weights = rebalance_weights(prior, self.hparams.lam, self.bins, self.hparams.sigma)
        self.class_weights.copy_(weights.float().to(self.device))
        self.weights_ready.fill_(True)
        logging.getLogger(type(self).__module__).info(
            "class rebalancing weights (lambda=%s) from %s", self.hparams.lam, source
        )

    def _estimate_prior(self) -> Tensor:
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise RuntimeError("no prior file and no datamodule to estimate the prior from")
        world = self.trainer.world_size
        loader = datamodule.train_dataloader()
        if world > 1:
            loader = rank_shard(loader, world, self.global_rank)
        return estimate_prior(
            loader,
            self.bins,
            self.hparams.prior_batches,
            to_targets=self.prior_targets,
            device=self.device,
            reduce=(lambda counts: self.all_gather(counts).sum(0)) if world > 1 else None,
        )


def rank_shard(loader: DataLoader, world_size: int, rank: int) -> DataLoader:
    """``loader`` restricted to rank ``rank``'s share of its samples, for reads outside the
    training loop (the prior): every ``world_size``-th index of its sampler's order from
    ``rank`` on, as Lightning shards a sampler without shuffling, so that the ranks read
    disjoint samples. A stream (``IterableDataset``) is returned as is: it shards by rank
    itself (:mod:`chromalab.data.shards`).
    """
    if isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = DistributedSamplerWrapper(
        loader.sampler, num_replicas=world_size, rank=rank, shuffle=False
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
    )


class StagedEvaluation:
    """Validation and test hooks of a LightningModule, written once.

    Each validation or test batch goes to :meth:`evaluate_batch` with its stage (``"val"`` or
    ``"test"``); a batch whose samples were all unreadable (``None``, see
    :func:`chromalab.data.collate.collate_skip_bad`) is skipped. Each epoch ends with
    :meth:`log_stage_metrics`. The host module defines both.
    """

    def evaluate_batch(self, batch: dict, stage: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define evaluate_batch")

    def log_stage_metrics(self, stage: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define log_stage_metrics")

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is not None:
            self.evaluate_batch(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_stage_metrics("val")

    def test_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is not None:
            self.evaluate_batch(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_stage_metrics("test")


class ImageMetrics(StagedEvaluation):
    """PSNR and SSIM (and LPIPS, given local AlexNet weights) of a module's colorizations per
    stage, against the photographs.

    The host puts :meth:`image_metrics`'s entries into its ``metrics`` (a ``ModuleDict``).
    LPIPS's network is a fixed metric of this machine's files, not part of the model: it is kept
    out of checkpoints (so they load where its weights are not), as are the state-dict entries
    under the host's :attr:`local_prefixes` (other fixed networks read from local files).
    """

    #: state-dict key prefixes of fixed networks kept out of checkpoints, besides LPIPS's
    local_prefixes: tuple[str, ...] = ()

    @staticmethod
    def image_metrics(
        lpips_weights: str | None, stages: Iterable[str] = ("val", "test")
    ) -> dict[str, torch.nn.Module]:
        """``{stage}_image`` (PSNR, SSIM) per stage, and ``{stage}_lpips`` with weights."""
        metrics: dict[str, torch.nn.Module] = {}
        for stage in stages:
            metrics[f"{stage}_image"] = psnr_ssim_metrics()
            if lpips_weights:
                metrics[f"{stage}_lpips"] = LPIPS(lpips_weights)
        return metrics

    def update_images(self, stage: str, rgb: Tensor, target: Tensor) -> None:
        """Score colorizations ``rgb`` against ``target`` (sRGB in ``[0, 1]``)."""
        self.metrics[f"{stage}_image"].update(rgb, target)
        if f"{stage}_lpips" in self.metrics:
            self.metrics[f"{stage}_lpips"].update(rgb, target)

    def image_scores(self, stage: str) -> dict[str, Tensor]:
        """The stage's ``psnr``, ``ssim`` (and ``lpips``), reset for the next epoch; empty when
        a single process saw no batch."""
        image = self.metrics[f"{stage}_image"]
        if not image["psnr"].update_called and self.trainer.world_size == 1:
            return {}
        scores = dict(image.compute())
        image.reset()
        if f"{stage}_lpips" in self.metrics:
            scores["lpips"] = self.metrics[f"{stage}_lpips"].compute()
            self.metrics[f"{stage}_lpips"].reset()
        return scores

    def log_stage_metrics(self, stage: str) -> None:
        """Log :meth:`image_scores` as ``{stage}/psnr`` ... (a host with more metrics extends
        it)."""
        scores = self.image_scores(stage)
        if scores:
            self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, prog_bar=True)

    def _machine_local(self, key: str) -> bool:
        lpips = key.startswith("metrics.") and "_lpips." in key
        return lpips or bool(self.local_prefixes) and key.startswith(self.local_prefixes)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if self._machine_local(k)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if state is not None:  # this module's own fixed networks, if it has them
            own = self.state_dict().items()
            state.update({k: v for k, v in own if self._machine_local(k)})


class SceneCaptionMetrics:
    """Caption consistency and manipulation accuracy of CapShapes batches, per stage.

    The host module has ``metrics`` (a ``ModuleDict``) holding :meth:`scene_metrics`'s entries,
    ``uses_captions`` and the hyper-parameter ``manipulation_seed``. Each scene's colour swap
    is drawn from a generator seeded by ``manipulation_seed`` and the scene's index, so the
    metric is the same for any batch size and any number of ranks.
    """

    @staticmethod
    def scene_metrics(stages: Iterable[str] = ("val", "test")) -> dict[str, CaptionConsistency]:
        """The metrics to put into the host's ``metrics``: ``{stage}_consistency`` and
        ``{stage}_manipulation`` for each stage."""
        return {
            f"{stage}_{name}": CaptionConsistency()
            for stage in stages
            for name in ("consistency", "manipulation")
        }

    def update_scene_metrics(
        self,
        batch: dict,
        pred_ab: Tensor,
        colorize: Callable[[list[str]], Tensor],
        stage: str,
    ) -> None:
        """Score a CapShapes batch.

        Args:
            batch: a CapShapes batch (``masks``, ``color_ids``, ``mentioned``, ``level``,
                ``index``, ...).
            pred_ab: ``(B, 2, H, W)`` ab predicted from the batch's own captions.
            colorize: maps ``B`` captions to predicted ab ``(B, 2, H, W)`` for the batch's
                images; called with the manipulated captions (§3.2), unless the model ignores
                captions (then ``pred_ab`` is scored against the new colours).
            stage: ``"val"`` or ``"test"``.
        """
        self.metrics[f"{stage}_consistency"].update(
            pred_ab, batch["masks"], batch["color_ids"], batch["mentioned"], batch["level"],
            batch.get("canonical"),
        )  # fmt: skip
        if "index" not in batch:
            raise KeyError(
                "the manipulation metric seeds each scene's colour swap by its 'index'; the batch "
                f"has {sorted(batch)}"
            )
        generators = [random.Random(self.manipulation_seed(int(i))) for i in batch["index"]]
        manipulated = manipulate_batch(batch, generators)
        new_ab = colorize(manipulated["caption"]) if self.uses_captions else pred_ab
        swapped = manipulated["color_ids"] != batch["color_ids"]
        self.metrics[f"{stage}_manipulation"].update(
            new_ab, batch["masks"], manipulated["color_ids"], swapped, batch["level"]
        )

    def manipulation_seed(self, index: int) -> int:
        """Seed of the colour swap of the scene ``index``."""
        return self.hparams.manipulation_seed * 1_000_003 + index

    def scene_scores(self, stage: str, scenes: bool) -> dict[str, Tensor]:
        """The stage's caption scores (``caption_consistency*``, ``manipulation_accuracy``),
        and reset; empty when no scene was scored and ``scenes`` (the data are CapShapes) is
        false."""
        consistency = self.metrics[f"{stage}_consistency"]
        manipulation = self.metrics[f"{stage}_manipulation"]
        scores: dict[str, Tensor] = {}
        if scenes or int(consistency.total.sum()) > 0:
            scores = {
                key.replace("accuracy", "caption_consistency", 1)
                if key.startswith("accuracy")
                else key: value
                for key, value in consistency.compute().items()
            }
            scores["manipulation_accuracy"] = manipulation.compute()["accuracy"]
        consistency.reset()
        manipulation.reset()
        return scores
