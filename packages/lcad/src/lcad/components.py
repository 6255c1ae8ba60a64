"""Building L-CAD's diffusers components from a pretrained folder or from a configuration.

A component setting is either

* a folder: a diffusers Stable Diffusion pipeline folder (``vae/``, ``unet/``, ``scheduler/``,
  ``text_encoder/``, ``tokenizer/``) or the component's own folder (its ``config.json`` and
  weights), loaded with diffusers' ``from_pretrained`` (never downloaded: pass a local folder,
  or a hub id already in the local cache);
* a mapping: the component's constructor arguments, for a model trained from scratch (the CPU
  configurations, whose VAE is trained first: stage 0).

Architectures are built at construction without reading weights (``load_config`` +
``from_config``), so a Lightning checkpoint rebuilds without any weight file; pretrained weights
are loaded by :func:`load_pretrained` at the start of training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

__all__ = [
    "SD_SAMPLING",
    "SD_SCHEDULE",
    "Component",
    "build",
    "load_pretrained",
    "scheduler_config",
]

#: A component setting: a folder or hub id, or constructor arguments.
Component = str | Mapping[str, Any]

#: Stable Diffusion v1's training noise schedule (Rombach et al., CVPR 2022; the release's
#: ``linear_start``/``linear_end`` with ldm's "linear" schedule, diffusers' "scaled_linear").
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
#: Stable Diffusion v1.5's sampling settings on that schedule (its ``scheduler/`` folder), the
#: ones of ldm's DDIM, with which the authors' release samples (``make_ddim_timesteps`` and
#: ``make_ddim_sampling_parameters`` in ``ldm/modules/diffusionmodules/util.py``): timesteps
#: shifted by one (981, 961, ..., 1 for 50 steps) and ``alphas_cumprod[0]``, not 1, as the last
#: step's previous alpha; no clipping of the predicted sample.
SD_SAMPLING = {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}


def _subfolder(path: str, name: str) -> str | None:
    """``name`` when ``path`` is a pipeline folder holding it."""
    return name if (Path(path).expanduser() / name / "config.json").is_file() else None


def _missing(kind: str, path: str, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"{kind}: cannot read {path!r} ({err}). Give a local Stable Diffusion pipeline folder "
        f"(with {kind}/config.json), the component's own folder, or constructor arguments; "
        "chromalab never downloads weights"
    )


def build(cls: type, setting: Component, kind: str) -> nn.Module:
    """The architecture of ``setting`` (random weights): ``cls(**setting)`` for a mapping, the
    folder's configuration otherwise."""
    if isinstance(setting, Mapping):
        return cls(**dict(setting))
    path = str(Path(setting).expanduser()) if Path(setting).expanduser().exists() else setting
    try:
        config = cls.load_config(path, subfolder=_subfolder(path, kind))
    except (OSError, ValueError) as err:
        raise _missing(kind, path, err) from err
    return cls.from_config(config)


def load_pretrained(module: nn.Module, setting: Component, kind: str) -> bool:
    """Load the pretrained weights of a folder ``setting`` into ``module`` (built by
    :func:`build`); a mapping has none (``False``)."""
    if isinstance(setting, Mapping):
        return False
    path = str(Path(setting).expanduser()) if Path(setting).expanduser().exists() else setting
    try:
        pretrained = type(module).from_pretrained(path, subfolder=_subfolder(path, kind))
    except (OSError, ValueError) as err:
        raise _missing(kind, path, err) from err
    module.load_state_dict(pretrained.state_dict())
    return True


def scheduler_config(setting: Component | None) -> dict[str, Any]:
    """The training noise schedule: a pipeline folder's ``scheduler/``, a mapping, or
    Stable Diffusion v1's (``None``)."""
    if setting is None:
        return dict(SD_SCHEDULE)
    if isinstance(setting, Mapping):
        return dict(SD_SCHEDULE) | dict(setting)
    path = str(Path(setting).expanduser())
    try:
        config = DDPMScheduler.load_config(path, subfolder=_subfolder(path, "scheduler"))
    except (OSError, ValueError) as err:
        raise _missing("scheduler", path, err) from err
    keys = set(SD_SCHEDULE) | {"trained_betas", "steps_offset", "clip_sample", "set_alpha_to_one"}
    return {k: v for k, v in config.items() if k in keys}


def vae(setting: Component) -> AutoencoderKL:
    return build(AutoencoderKL, setting, "vae")


def unet(setting: Component) -> UNet2DConditionModel:
    return build(UNet2DConditionModel, setting, "unet")
