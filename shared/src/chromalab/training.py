"""What the packages' Lightning commands share: :func:`run_lightning_cli`, checkpoint files
written atomically (:class:`AtomicCheckpointIO`) and the random generators' states in every
checkpoint (:class:`RandomStates`)."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

__all__ = [
    "AtomicCheckpointIO",
    "CommandLineFirstCLI",
    "RANDOM_STATES_KEY",
    "RandomStates",
    "capture_random_states",
    "command_line_model_keys",
    "restore_random_states",
    "run_lightning_cli",
    "use_atomic_checkpoints",
    "use_random_states",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with local files replaced atomically from a file beside them.

    A checkpoint ``dir/name`` is written to ``dir/.name.partial``, flushed to disk and renamed
    over ``dir/name`` (``os.replace``), so a process killed at any moment leaves either the old
    or the new file whole, never a truncated one. Lightning's own writer (2.6) stages the file in
    the system temporary folder (``$TMPDIR``) and moves it; when that folder is on another file
    system (a ``tmpfs`` ``/tmp``), the move is a copy over the destination, and a SIGKILL during
    it leaves ``last.ckpt`` truncated ("EOFError: Ran out of input" on resume; seen with
    ``TMPDIR=/dev/shm``), besides a checkpoint-sized file left in ``$TMPDIR`` per kill. The
    ``.partial`` file of a killed write is hidden from ``--ckpt_path last`` (its name neither
    starts with ``last`` nor ends in ``.ckpt``) and removed by the next write into its folder.
    Remote paths (``s3://`` ...) are written by Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(LocalFileSystem._strip_protocol(str(path)))
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(".*.partial"):  # left by a killed write
            stale.unlink(missing_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def use_atomic_checkpoints(trainer: Any) -> None:
    """Give ``trainer`` (a Lightning ``Trainer``) an :class:`AtomicCheckpointIO` when it would
    write checkpoints with Lightning's default writer (a configured one is kept)."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


#: Checkpoint entry of :class:`RandomStates`: one state dict per rank.
RANDOM_STATES_KEY = "random_states"


def capture_random_states() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), Python and NumPy generator states, as plain tensors,
    ints and tuples (a checkpoint holding them loads with ``weights_only=True``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_states(state: dict[str, Any]) -> None:
    """Set the generators to ``state`` (from :func:`capture_random_states`)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["position"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # resumed on another number of devices: keep the one this process uses
            torch.cuda.set_rng_state(cuda[torch.cuda.current_device() % len(cuda)])


class RandomStates(Callback):
    """Keeps every rank's global random generators' states (torch on the CPU and CUDA, Python's
    ``random``, NumPy's) in each checkpoint, under :data:`RANDOM_STATES_KEY`, and gives each
    rank its own back when a run resumes.

    Lightning checkpoints weights, optimizer and loops, but not these generators, so whatever
    draws from them in training (dropout above all) draws other numbers after ``--ckpt_path
    last`` than the uninterrupted run would have: measured on a tiny run of a model whose text
    encoder has dropout, a resumed run ended 9e-3 away from the uninterrupted one's
    weights, and exactly on them with this callback. Ranks draw different amounts (a batch's
    captions are padded to its longest, so dropout masks differ in size from rank to rank), so
    the states of all ranks are gathered when a checkpoint is written (every rank writes it
    with Lightning, rank 0 to disk). A run resumed on another number of ranks gets rank
    ``r mod n``'s states (it cannot be exact then anyway: the data are sharded otherwise).

    The states are restored with the checkpoint, before the first step, so nothing may draw
    from these generators in between: a ``DataLoader`` without a ``generator`` of its own draws
    its iterator's seed from torch's when a resumed run creates it
    (:class:`chromalab.data.ColorizationDataModule` gives each loader its own seeded generator).
    """

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        state = capture_random_states()
        states: list[Any] = [state]
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        checkpoint[RANDOM_STATES_KEY] = states

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        states = checkpoint.get(RANDOM_STATES_KEY)
        if states:  # checkpoints written without this callback have none
            restore_random_states(states[trainer.global_rank % len(states)])


def use_random_states(trainer: Any) -> None:
    """Add a :class:`RandomStates` callback to ``trainer`` unless it has one."""
    if not any(isinstance(c, RandomStates) for c in trainer.callbacks):
        trainer.callbacks.append(RandomStates())


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
    another model does not break loading. The flat hyperparameters of a checkpoint of an earlier
    version of the module (:attr:`chromalab.tasks.ColorizationTask.moved_hparams`) are merged in
    today's nested form.
    """

    def __init__(self, *args, args_list: Sequence[str] | None = None, **kwargs) -> None:
        given = list(args_list) if args_list is not None else None
        self._typed_keys = command_line_model_keys(given if given is not None else sys.argv[1:])
        super().__init__(*args, args=given, **kwargs)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, writing checkpoints atomically (:func:`use_atomic_checkpoints`) with the
        random generators' states (:func:`use_random_states`)."""
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        use_random_states(trainer)
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI's hook that merges the checkpoint's hyperparameters (Lightning 2.x);
        # tests/core/test_training.py fails if a Lightning release stops calling it
        subcommand = self.config.get("subcommand")
        if not subcommand or not self._typed_keys:
            self._merge_ckpt_hparams()
            return
        typed = {key: self.config[subcommand]["model"].get(key) for key in self._typed_keys}
        self._merge_ckpt_hparams()
        model = self.config[subcommand]["model"]
        for key, value in typed.items():
            if model.get(key) != value:
                rank_zero_info(
                    f"model.{key} = {value!r} from the command line, not the checkpoint's "
                    f"{model.get(key)!r}"
                )
                model[key] = value

    def _merge_ckpt_hparams(self) -> None:
        """LightningCLI's merge of the ``--ckpt_path`` checkpoint's hyperparameters; those of an
        earlier version of the module, whose flat keys moved into nested configurations
        (``moved_hparams``), are brought to today's form first (``upgrade_hparams``)."""
        subcommand = self.config.get("subcommand")
        moved = getattr(self._model_class, "moved_hparams", None)
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not moved or not ckpt_path or not Path(ckpt_path).is_file():
            super()._parse_ckpt_path()
            return
        hparams = self._model_class.stored_hparams(ckpt_path)
        if "_class_path" in hparams or not any(key in hparams for key in moved):
            super()._parse_ckpt_path()  # today's form (or a subclass's): Lightning's own merge
            return
        hparams = self._model_class.upgrade_hparams(hparams)
        hparams.pop("_instantiator", None)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)


def run_lightning_cli(
    model_class: type[LightningModule],
    datamodule_class: type[LightningDataModule],
    args: Sequence[str] | None = None,
) -> LightningCLI:
    """Run a LightningCLI (``fit``/``validate``/``test``/``predict``) and return it.

    ``args`` defaults to ``sys.argv[1:]``; the config written beside the logs overwrites an
    older one, so ``--ckpt_path last`` can resume into the same folder. ``--model.*`` options
    typed on the command line win over a ``--ckpt_path`` checkpoint's hyperparameters
    (:class:`CommandLineFirstCLI`). Checkpoint files are replaced atomically
    (:class:`AtomicCheckpointIO`), so a run killed at any moment can be resumed, and they hold
    the random generators' states (:class:`RandomStates`).

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
