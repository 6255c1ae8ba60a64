"""The base of every paper package's LightningModule: :class:`ColorizationTask`.

A task is built in one order, written once here::

    save_hyperparameters          (constructor arguments; machine-local files left out)
    configure_models()            networks, bins, buffers
    configure_losses()            loss modules and fixed loss networks
    configure_metrics()           torchmetrics of validation and test

and owns three things every package needs:

* **initial weights vs restored weights.** Pretrained parts (a ViT, a Stable Diffusion UNet,
  the released CIC network, an earlier stage's checkpoint) are loaded by
  :meth:`~ColorizationTask.load_initial_weights` at the start of ``fit``, unless the module's
  weights came from elsewhere: a Lightning checkpoint (``load_from_checkpoint``, marked by
  :meth:`~ColorizationTask.on_load_checkpoint`), a ``save_pretrained`` folder
  (:mod:`chromalab.hub`) or a converter of released weights. Those call
  :meth:`~ColorizationTask.mark_loaded`, the one public way to say so, and
  :attr:`~ColorizationTask.restored` tells.
* **per-step randomness.** :meth:`~ColorizationTask.step_seed` and
  :meth:`~ColorizationTask.step_generator` derive a training step's draws (augmentation,
  timesteps, caption replacement) from a seed, the global step, the batch index and the rank, so
  a run resumed from a checkpoint draws exactly what the uninterrupted run drew, and ranks draw
  differently.
* **hub-style weights**: ``save_pretrained`` / ``from_pretrained`` (:class:`chromalab.hub.
  HubMixin`), with ``config.json`` holding the constructor arguments.

Hyper-parameters are plain data: a dataclass argument (a nested network configuration) is
stored as a dict of all its fields (a partial dict is completed from the argument's default), so
checkpoints load with ``torch.load(..., weights_only=True)`` and ``config.json`` stays JSON; the
task turns it back into its dataclass (:func:`as_config`) where it reads it.

Hyper-parameters that an earlier version of a module took flat and that are now fields of a
nested configuration are named in its :attr:`~ColorizationTask.moved_hparams`: the checkpoints
and ``config.json`` files of that version are brought to today's form
(:func:`nest_flat_hparams`) by ``load_from_checkpoint``, ``from_pretrained``,
:meth:`~ColorizationTask.load_with_overrides` and the CLI's ``--ckpt_path``.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import lightning.pytorch as pl
import torch

from chromalab.hub import HubMixin, is_hub_folder, read_config

__all__ = ["ColorizationTask", "as_config", "nest_flat_hparams"]

ConfigT = TypeVar("ConfigT")


def as_config(
    cls: type[ConfigT], value: ConfigT | Mapping[str, Any] | None, default: ConfigT | None = None
) -> ConfigT:
    """``value`` as the dataclass ``cls``: an instance as is; a mapping (from a checkpoint, a
    ``config.json`` or a YAML file) field by field, over ``default``'s fields when given; ``None``
    as ``default`` (or ``cls()``). A key that is not a field of ``cls`` is an error that names
    it."""
    if value is None:
        return cls() if default is None else default
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{cls.__name__}: expected a {cls.__name__} or a dict, got {value!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown} (fields: {sorted(known)})")
    return cls(**value) if default is None else replace(default, **value)


def nest_flat_hparams(
    hparams: Mapping[str, Any], moved: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """``hparams`` with every flat key that ``moved`` names put into its nested configuration:
    with ``moved = {"lr_step_size": ("optimizer", "step_size")}``, ``{"lr_step_size": 10}``
    becomes ``{"optimizer": {"step_size": 10}}``. Other keys are kept; hyper-parameters already
    nested come back unchanged (a copy). A field given both flat and nested is an error."""
    nested = {key: value for key, value in hparams.items() if key not in moved}
    for key, (argument, field) in moved.items():
        if key not in hparams:
            continue
        section = nested.get(argument, {})
        if not isinstance(section, Mapping):
            raise ValueError(f"{key!r} moves into {argument!r}, which is not a configuration")
        if field in section:
            raise ValueError(f"{key!r} and {argument}.{field} are both given")
        nested[argument] = {**section, field: hparams[key]}
    return nested


class ColorizationTask(pl.LightningModule, HubMixin):
    """A paper's LightningModule: hyper-parameters, the configure hooks, initial vs restored
    weights, per-step seeds, hub-style weights.

    A subclass validates its arguments, then calls ``super().__init__(**local_files)``, which
    saves every constructor argument as a hyper-parameter (except ``local_files``) and calls
    :meth:`configure_models`, :meth:`configure_losses` and :meth:`configure_metrics` in turn;
    they read :attr:`hparams`.

    A subclass whose earlier versions took some of today's nested fields as flat arguments names
    them in :attr:`moved_hparams`, so their checkpoints and weights folders still load.

    Args:
        local_files: constructor arguments that name files of this machine only (a metric
            network's local weights, such as ``lpips_weights``): they are kept out of the
            hyper-parameters and so out of checkpoints and ``config.json`` (a checkpoint loads
            where those files are not), and are readable as :attr:`local_files`.
    """

    #: flat hyper-parameters of earlier versions of the module that are now fields of a nested
    #: configuration: flat name -> (argument, field), e.g. ``{"lr": ("optimizer", "lr")}``
    moved_hparams: ClassVar[Mapping[str, tuple[str, str]]] = {}

    def __init__(self, **local_files: str | None) -> None:
        super().__init__()
        #: machine-local files given to the constructor (not hyper-parameters)
        self.local_files: dict[str, str | None] = dict(local_files)
        self.save_hyperparameters(ignore=list(local_files))
        self._store_configurations_as_dicts()
        self._restored = False
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def _store_configurations_as_dicts(self) -> None:
        """Dataclass hyper-parameters become dicts of all their fields; a partial dict given
        for an argument whose default is a dataclass is completed with that default's fields."""
        defaults = inspect.signature(type(self).__init__).parameters
        for key, value in list(self.hparams.items()):
            default = defaults[key].default if key in defaults else None
            if is_dataclass(value) and not isinstance(value, type):
                stored = asdict(value)
            elif isinstance(value, Mapping) and is_dataclass(default):
                stored = asdict(as_config(type(default), value, default))
            else:
                continue
            self.hparams[key] = stored
            self._hparams_initial[key] = stored

    # ------------------------------------------------------------------------- configure
    def configure_models(self) -> None:
        """Build the networks, bins and buffers from :attr:`hparams` (random or default
        weights; pretrained ones come in :meth:`load_initial_weights`)."""

    def configure_losses(self) -> None:
        """Build the loss modules (and fixed networks that only a loss reads)."""

    def configure_metrics(self) -> None:
        """Build the validation and test metrics."""

    # ------------------------------------------------------------------------- weights
    @property
    def restored(self) -> bool:
        """Whether the weights came from a checkpoint, a weights folder or a converter, so
        that ``fit`` keeps them instead of loading the initial (pretrained) ones."""
        return self._restored

    def mark_loaded(self) -> None:
        """Say that the weights were loaded from elsewhere: a later ``fit`` does not call
        :meth:`load_initial_weights` over them."""
        self._restored = True

    def load_initial_weights(self) -> None:
        """Load pretrained parts or an earlier run's weights (at the start of ``fit``, on a
        module that is not :attr:`restored`). The default loads nothing."""

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.restored:
            self.load_initial_weights()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.mark_loaded()

    # ------------------------------------------------------------------------- earlier versions
    @classmethod
    def upgrade_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Stored hyper-parameters (a checkpoint's, a ``config.json``) in today's form: the flat
        keys of :attr:`moved_hparams` put into their nested configurations
        (:func:`nest_flat_hparams`)."""
        return nest_flat_hparams(hparams, cls.moved_hparams)

    @classmethod
    def moved_arguments(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The nested configurations that ``hparams`` hold in an earlier, flat form, as the
        constructor takes them today (``{}`` when they hold none)."""
        arguments = {argument for key, (argument, _) in cls.moved_hparams.items() if key in hparams}
        if not arguments:
            return {}
        upgraded = cls.upgrade_hparams(hparams)
        return {argument: upgraded[argument] for argument in arguments}

    @classmethod
    def stored_hparams(cls, path: str | Path) -> dict[str, Any]:
        """The ``hyper_parameters`` of the Lightning checkpoint ``path`` as stored (tensors
        memory-mapped, not read)."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file of the legacy (not zip) format cannot be memory-mapped
            blob = torch.load(path, map_location="cpu", weights_only=True)
        return dict(blob.get("hyper_parameters") or {}) if isinstance(blob, Mapping) else {}

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ):
        """Lightning's ``load_from_checkpoint``; the flat hyper-parameters of a checkpoint of an
        earlier version (:attr:`moved_hparams`) are given to the constructor nested (``kwargs``
        still win)."""
        local = isinstance(checkpoint_path, str | Path) and Path(checkpoint_path).is_file()
        if cls.moved_hparams and local:
            try:
                stored = cls.stored_hparams(checkpoint_path)
            except pickle.UnpicklingError:  # not plain data: left to Lightning's own load
                stored = {}
            kwargs = {**cls.moved_arguments(stored), **kwargs}
        return super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, **kwargs
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):
        """``huggingface_hub``'s ``from_pretrained`` (:class:`chromalab.hub.HubMixin`); the flat
        arguments of a ``config.json`` of an earlier version (:attr:`moved_hparams`) are given
        to the constructor nested (``kwargs`` still win)."""
        if cls.moved_hparams:
            download = ("revision", "cache_dir", "force_download", "local_files_only", "token")
            config = read_config(
                pretrained_model_name_or_path, **{k: kwargs[k] for k in download if k in kwargs}
            )
            kwargs = {**cls.moved_arguments(config), **kwargs}
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load_trained(cls, path: str | Path, map_location: Any = "cpu", **local_files: Any):
        """A trained module in eval mode from a ``fit`` checkpoint or a ``save_pretrained``
        folder (``local_files``: machine-local files such as ``lpips_weights``)."""
        if is_hub_folder(path):
            module = cls.from_pretrained(str(path), map_location=str(map_location), **local_files)
        elif Path(path).is_file():
            module = cls.load_from_checkpoint(path, map_location=map_location, **local_files)
        else:
            raise FileNotFoundError(
                f"no {cls.__name__} checkpoint or weights folder (config.json + "
                f"model.safetensors) at {path}"
            )
        return module.eval()

    @classmethod
    def load_with_overrides(
        cls,
        path: str | Path,
        overrides: Mapping[str, Any] | None = None,
        map_location: Any = "cpu",
    ):
        """``load_from_checkpoint(path)`` with hyper-parameters replaced by ``overrides``. A
        dotted name changes one field of a nested configuration and keeps its other fields:
        ``{"sampling.lic": False}`` (a plain ``{"sampling": {...}}`` replaces it whole)."""
        overrides = dict(overrides or {})
        dotted = [key for key in overrides if "." in key]
        if dotted:
            stored = cls.upgrade_hparams(cls.stored_hparams(path))
            for key in dotted:
                top, field = key.split(".", 1)
                if "." in field:
                    raise ValueError(f"{key}: overrides reach one level into a configuration")
                current = overrides.get(top, stored.get(top))
                if not isinstance(current, Mapping):
                    raise ValueError(f"{key}: hyper-parameter {top!r} is not a configuration")
                overrides[top] = {**current, field: overrides.pop(key)}
        return cls.load_from_checkpoint(path, map_location=map_location, **overrides)

    # ------------------------------------------------------------------------- randomness
    def step_seed(self, batch_idx: int, seed: int = 0) -> int:
        """The seed of the draws of this training step: ``seed``, the global step, the batch
        index and the rank, mixed by distinct odd multipliers (a resumed run sees the same
        global step and batch index, so it draws the same numbers)."""
        mixed = ((seed * 1_000_003 + self.global_step) * 4_099 + batch_idx) * 1_031
        return mixed + self.global_rank

    def step_generator(self, batch_idx: int, seed: int = 0, purpose: int = 0) -> torch.Generator:
        """A CPU generator for one kind of draw (``purpose``: 0 or 1) of this training step
        (:meth:`step_seed`)."""
        if purpose not in (0, 1):
            raise ValueError(f"purpose must be 0 or 1, got {purpose}")
        return torch.Generator().manual_seed(self.step_seed(batch_idx, seed) * 2 + purpose)
