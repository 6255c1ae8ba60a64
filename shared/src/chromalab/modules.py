"""What the packages' LightningModules share: an Adam schedule and class rebalancing.

* :func:`adam_step_decay`: Adam with a step-decayed learning rate, in the form Lightning's
  ``configure_optimizers`` returns.
* :class:`ClassRebalancing`: a LightningModule mixin that sets the class-rebalancing weights of
  Zhang, Isola, Efros, "Colorful Image Colorization", ECCV 2016 (arXiv:1603.08511), Eq. 5-6,
  once at the start of ``fit``, from a prior file or from the first training batches of all
  ranks, each rank reading its own share of the samples (:mod:`chromalab.rebalance` holds the
  maths).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from chromalab.rebalance import estimate_prior, load_prior, rebalance_weights

__all__ = ["ClassRebalancing", "adam_step_decay", "rank_shard"]


def adam_step_decay(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], hparams: Any
) -> dict[str, Any]:
    """Adam with a step-decayed learning rate, as Lightning's ``configure_optimizers`` returns it.

    ``parameters`` are parameters or Adam parameter groups (a group's own ``lr`` overrides
    ``hparams.lr`` and decays with the others).

    ``hparams`` supplies ``lr``, ``betas``, ``weight_decay``, and ``lr_step_size`` /
    ``lr_gamma`` (the rate is multiplied by ``lr_gamma`` every ``lr_step_size`` optimizer steps).
    """
    optimizer = torch.optim.Adam(
        parameters, lr=hparams.lr, betas=tuple(hparams.betas), weight_decay=hparams.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=hparams.lr_step_size, gamma=hparams.lr_gamma
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
