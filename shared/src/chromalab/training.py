"""What the packages' Lightning commands share: :func:`run_lightning_cli`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

__all__ = ["run_lightning_cli"]


def run_lightning_cli(
    model_class: type[LightningModule],
    datamodule_class: type[LightningDataModule],
    args: Sequence[str] | None = None,
) -> LightningCLI:
    """Run a LightningCLI (``fit``/``validate``/``test``/``predict``) and return it.

    ``args`` defaults to ``sys.argv[1:]``; the config written beside the logs overwrites an
    older one, so ``--ckpt_path last`` can resume into the same folder.

    When the command ran under DDP, the process group is destroyed once it finished normally.
    Lightning only does so at exit for NCCL; a Gloo group (CPU DDP) left alive can abort the
    interpreter at shutdown ("terminate called without an active exception") because its
    worker threads still hold tensors, turning a successful run into a failed exit status. On
    an exception the group is left as it is: destroying it while another rank may still sit in
    a collective can hang, and the process is going down anyway.
    """
    cli = LightningCLI(
        model_class,
        datamodule_class,
        args=list(args) if args is not None else None,
        save_config_kwargs={"overwrite": True},
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return cli
