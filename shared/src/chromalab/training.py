"""What the packages' Lightning commands share: :func:`run_lightning_cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["CommandLineFirstCLI", "command_line_model_keys", "run_lightning_cli"]


def command_line_model_keys(args: Sequence[str]) -> list[str]:
    """The model arguments set on the command line itself: ``["temperature"]`` for
    ``[..., "--model.temperature", "0.1"]`` or ``"--model.temperature=0.1"`` (config files
    given with ``--config`` or ``--model path.yaml`` are not counted)."""
    keys = []
    for token in args:
        if token.startswith("--model."):
            key = token[len("--model.") :].split("=", 1)[0]
            if key.startswith("init_args."):
                key = key[len("init_args.") :]
            if key and key not in keys:
                keys.append(key)
    return keys


class CommandLineFirstCLI(LightningCLI):
    """A :class:`~lightning.pytorch.cli.LightningCLI` in which ``--model.*`` options given on
    the command line win over the hyperparameters of the ``--ckpt_path`` checkpoint.

    LightningCLI rebuilds the model from the hyperparameters stored in the checkpoint, which
    replace the parsed configuration entirely, so ``test --ckpt_path m.ckpt --model.temperature
    0.1`` would silently evaluate at the checkpoint's temperature. Here the options typed on the
    command line are put back after that merge (and each one that differs from the checkpoint is
    logged); values from config files still yield to the checkpoint, so a config written for
    another model does not break loading.
    """

    def __init__(self, *args, args_list: Sequence[str] | None = None, **kwargs) -> None:
        given = list(args_list) if args_list is not None else None
        self._typed_keys = command_line_model_keys(given if given is not None else sys.argv[1:])
        super().__init__(*args, args=given, **kwargs)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI's hook that merges the checkpoint's hyperparameters (Lightning 2.x);
        # tests/core/test_training.py fails if a Lightning release stops calling it
        subcommand = self.config.get("subcommand")
        if not subcommand or not self._typed_keys:
            super()._parse_ckpt_path()
            return
        typed = {key: self.config[subcommand]["model"].get(key) for key in self._typed_keys}
        super()._parse_ckpt_path()
        model = self.config[subcommand]["model"]
        for key, value in typed.items():
            if model.get(key) != value:
                rank_zero_info(
                    f"model.{key} = {value!r} from the command line, not the checkpoint's "
                    f"{model.get(key)!r}"
                )
                model[key] = value


def run_lightning_cli(
    model_class: type[LightningModule],
    datamodule_class: type[LightningDataModule],
    args: Sequence[str] | None = None,
) -> LightningCLI:
    """Run a LightningCLI (``fit``/``validate``/``test``/``predict``) and return it.

    ``args`` defaults to ``sys.argv[1:]``; the config written beside the logs overwrites an
    older one, so ``--ckpt_path last`` can resume into the same folder. ``--model.*`` options
    typed on the command line win over a ``--ckpt_path`` checkpoint's hyperparameters
    (:class:`CommandLineFirstCLI`).

    When the command ran under DDP, the process group is destroyed once it finished normally.
    Lightning only does so at exit for NCCL; a Gloo group (CPU DDP) left alive can abort the
    interpreter at shutdown ("terminate called without an active exception") because its
    worker threads still hold tensors, turning a successful run into a failed exit status. On
    an exception the group is left as it is: destroying it while another rank may still sit in
    a collective can hang, and the process is going down anyway.
    """
    cli = CommandLineFirstCLI(
        model_class,
        datamodule_class,
        args_list=args,
        save_config_kwargs={"overwrite": True},
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return cli
