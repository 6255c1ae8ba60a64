"""The authors' released L-CAD checkpoint, converted into this package's ``cec: first`` model.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

The release is a ``ControlLDM_cat`` model of the ldm/ControlNet code base (its config
``cldm_v15_ehdecoder.yaml``). Its Lightning checkpoint holds, in ldm names:

* ``model.diffusion_model.*``: Stable Diffusion v1.5's UNet, whose first convolution
  ``input_blocks.0.0`` reads the 4 latent channels and 512 more (the grey encoder's deepest
  feature, concatenated): here :class:`lcad.cec.LuminanceUNet` with ``cec: "first"``, the 4
  latent channels in the UNet's ``conv_in`` and the 512 others in its zero-initialised
  extension;
* ``first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*``: the VAE. Its decoder
  (``EhDecoder``) has Stable Diffusion's parameters; what it adds is where the grey features
  enter, :func:`lcad.compression.guided_decode`;
* ``first_stage_model.g_encoder.*``: the grey encoder (``Gray_Encoder``): the VAE encoder's
  architecture with zero convolutions ``down.{i}.zero_conv.{j}`` and ``zero_conv_mid{1,2}``:
  :class:`lcad.compression.LuminanceEncoder`. Its output head (``norm_out``, ``conv_out``) is
  never used by the release and is dropped;
* ``cond_stage_model.transformer.*``: the CLIP ViT-L/14 text model (loaded into the caption
  encoder when given); its ``position_ids`` buffer (persistent in transformers before 4.31) is
  an index, not a weight: consumed, not loaded;
* the persistent buffers of ldm's ``DDPM``/``LatentDiffusion`` (``ldm/models/diffusion/
  ddpm.py`` of the release), each listed here with what the conversion does with it:
  :data:`SCHEDULE_BUFFERS` (``register_schedule``: the noise schedule, every one checked
  against the config's schedule), ``scale_factor`` (a buffer only with ``scale_by_std``: the
  latent scale, taken as the VAE's ``scaling_factor``) and :data:`IGNORED_BUFFERS`
  (``logvar``, ``model_ema.decay``, ``model_ema.num_updates``: dropped). ``lvlb_weights`` is
  not persistent and never saved; ``model_ema``'s copies of the weights (``use_ema``; the
  release trains without, ``use_ema: False``) are not converted and are errors.

The Stable Diffusion parts are converted by diffusers' own single-file utilities
(``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``
and the ``create_*_diffusers_config_from_ldm`` configurations); the grey encoder goes through
the VAE encoder's conversion (same architecture), its zero convolutions renamed here. Keys that
no part consumes and no list above names, and keys a part lacks or has in another shape, raise
an error naming them.
Nothing is downloaded: the checkpoint is a local file, read with ``weights_only``.

    from lcad.weights import load_released
    module = load_released("lcad.ckpt", text_encoder="models/stable-diffusion-v1-5",
                           text_subfolder="text_encoder")
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import DDPMScheduler
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from torch import Tensor, nn

from lcad.components import SD_SAMPLING
from lcad.stages import LCADDiffusionModule

__all__ = [
    "IGNORED_BUFFERS",
    "RELEASE_CONFIG",
    "SCALE_BUFFER",
    "SCHEDULE_BUFFERS",
    "ReleasedWeights",
    "component_configs",
    "convert_released",
    "ldm_schedule",
    "load_released",
    "save_pipeline",
]

logger = logging.getLogger(__name__)

UNET = "model.diffusion_model."
VAE = "first_stage_model."
GREY = "first_stage_model.g_encoder."
TEXT = "cond_stage_model.transformer."
#: ldm's noise-schedule buffers (``DDPM.register_schedule``), all functions of ``betas``
#: (:func:`ldm_schedule`): each one a checkpoint holds is checked against the config's schedule.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip
#: ldm's latent scale: a buffer only with ``scale_by_std`` (set from the data at the start of
#: training); when present it is the VAE's ``scaling_factor`` (ldm reads it, not the config's).
SCALE_BUFFER = "scale_factor"
#: Persistent buffers that no part of L-CAD uses, dropped: ``DDPM.logvar`` (the per-timestep
#: log-variance of ldm's training loss, ``loss / exp(logvar) + logvar``: zeros unless
#: ``learn_logvar``; Eq. 6 is the plain MSE) and the bookkeeping of ``LitEma``
#: (``ldm/modules/ema.py``, with ``use_ema``).
IGNORED_BUFFERS = ("logvar", "model_ema.decay", "model_ema.num_updates")

#: The parts of the release's ``cldm_v15_ehdecoder.yaml`` the conversion reads, in its layout:
#: Stable Diffusion v1.5 (UNet 320 channels, multipliers 1-2-4-4, attention at 4-2-1, 8 heads,
#: context 768; VAE 128 channels, multipliers 1-2-4-4), at 256x256, with SD's schedule.
RELEASE_CONFIG: dict[str, Any] = {
    "model": {
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.012,
            "timesteps": 1000,
            "image_size": 32,
            "scale_factor": 0.18215,
            "unet_config": {
                "params": {
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_heads": 8,
                    "transformer_depth": 1,
                    "context_dim": 768,
                    "use_linear_in_transformer": False,
                }
            },
            "first_stage_config": {
                "params": {
                    "ddconfig": {
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "z_channels": 4,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                    }
                }
            },
        }
    }
}


class ReleasedWeights(dict):
    """The converted parts, ``{part: state dict}`` for ``vae``, ``luminance_encoder``, ``unet``
    (diffusers names, ``conv_in.extension.weight`` the extra input channels) and ``text``
    (empty when the checkpoint has no text model), with ``consumed``: the checkpoint keys used
    or checked, ``ignored``: those dropped (:data:`IGNORED_BUFFERS`), and ``scaling_factor``:
    the checkpoint's latent scale (:data:`SCALE_BUFFER`), or ``None``."""

    consumed: set[str]
    ignored: set[str]
    scaling_factor: float | None


def _read_config(config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return copy.deepcopy(RELEASE_CONFIG)
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    return yaml.safe_load(Path(config).read_text())


def component_configs(
    config: str | Path | Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The diffusers configurations of the release's VAE and UNet (diffusers'
    ``create_*_diffusers_config_from_ldm``), and its noise schedule
    (:class:`diffusers.DDPMScheduler` arguments) with Stable Diffusion's sampling settings
    (:data:`lcad.components.SD_SAMPLING`: the DDIM of converted pipelines is ldm's, with which
    the release samples), from the release's config (a YAML file, its dict, or ``None``:
    :data:`RELEASE_CONFIG`)."""
    original = _read_config(config)
    params = original["model"]["params"]
    ddconfig = params["first_stage_config"]["params"]["ddconfig"]
    factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
    size = int(ddconfig.get("resolution", params.get("image_size", 32) * factor))
    # no checkpoint keys: diffusers' default size (Stable Diffusion v1's), set from the config
    vae = create_vae_diffusers_config_from_ldm(original, {})
    unet = create_unet_diffusers_config_from_ldm(original, {})
    vae["sample_size"], unet["sample_size"] = size, size // factor
    schedule = {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",  # ldm's "linear" schedule: linear in sqrt(beta)
        "prediction_type": "epsilon",
    } | SD_SAMPLING
    return vae, unet, schedule


def _consumed(source: Mapping[str, Tensor], converted: Mapping[str, Tensor]) -> set[str]:
    """Keys of ``source`` whose tensors (or views of them) appear in ``converted``: the
    converters pass tensors through, or slice them (1x1 attention convolutions to linear)."""
    storages = {t.untyped_storage().data_ptr() for t in converted.values() if t is not None}
    return {k for k, t in source.items() if t.untyped_storage().data_ptr() in storages}


def _grey_encoder(state: Mapping[str, Tensor], vae_config: dict) -> dict[str, Tensor]:
    """``Gray_Encoder`` -> :class:`LuminanceEncoder`: the VAE encoder's conversion for its
    encoder layers, the zero convolutions renamed, the unused output head dropped."""
    grey = {k[len(GREY) :]: v for k, v in state.items() if k.startswith(GREY)}
    zero = re.compile(r"down\.(\d+)\.zero_conv\.(\d+)\.(weight|bias)$")
    mid = re.compile(r"zero_conv_mid([12])\.(weight|bias)$")
    out: dict[str, Tensor] = {}
    layers: dict[str, Tensor] = {}
    for key, value in grey.items():
        if m := zero.match(key):
            out[f"zero_convs.{m[1]}.{m[2]}.{m[3]}"] = value
        elif m := mid.match(key):
            out[f"mid_zero_convs.{int(m[1]) - 1}.{m[2]}"] = value
        else:
            layers[f"encoder.{key}"] = value
    converted = convert_ldm_vae_checkpoint(layers, vae_config)
    for key, value in converted.items():
        name = key[len("encoder.") :]
        if not name.startswith(("conv_norm_out.", "conv_out.")):  # never used by the release
            out[name] = value
    out["__consumed__"] = converted  # type: ignore[assignment]  # popped by the caller
    return out


def convert_released(
    state: Mapping[str, Tensor], config: str | Path | Mapping[str, Any] | None = None
) -> ReleasedWeights:
    """Convert a release state dict (ldm names) into this package's parts; raise on keys no
    part consumes (checked after loading into the model by :func:`load_released`, which also
    reports missing and mis-shaped ones)."""
    vae_config, unet_config, schedule = component_configs(config)
    latent = int(unet_config["in_channels"])
    first = UNET + "input_blocks.0.0.weight"
    if first not in state:
        raise ValueError(f"not an L-CAD release checkpoint: no {first!r}")
    unet_state = {k: v for k, v in state.items() if k.startswith(UNET)}
    full = unet_state[first]
    unet_state[first] = full[:, :latent]  # the latent channels: Stable Diffusion's conv_in
    unet = convert_ldm_unet_checkpoint(unet_state, unet_config)
    unet["conv_in.extension.weight"] = full[:, latent:]
    parts = ReleasedWeights(unet=unet)
    consumed = _consumed({k: v for k, v in state.items() if k.startswith(UNET)}, unet)

    vae_state = {k: v for k, v in state.items() if k.startswith(VAE) and not k.startswith(GREY)}
    parts["vae"] = convert_ldm_vae_checkpoint(vae_state, vae_config)
    consumed |= _consumed(vae_state, parts["vae"])

    grey = _grey_encoder(state, vae_config)
    grey_layers = grey.pop("__consumed__")
    parts["luminance_encoder"] = grey
    grey_state = {k: v for k, v in state.items() if k.startswith(GREY)}
    consumed |= _consumed(grey_state, {**grey, **grey_layers})

    text_state = {k: v for k, v in state.items() if k.startswith(TEXT)}
    text = convert_ldm_clip_checkpoint(text_state)
    position_ids = [k for k in text if k.endswith("position_ids")]  # a buffer, not a weight
    consumed |= {TEXT + k for k in position_ids}
    parts["text"] = {k: v for k, v in text.items() if k not in position_ids}
    consumed |= _consumed(text_state, parts["text"])

    present = [name for name in SCHEDULE_BUFFERS if name in state]
    _check_schedule(state, schedule)
    consumed |= set(present)
    parts.scaling_factor = None
    if SCALE_BUFFER in state:
        parts.scaling_factor = float(state[SCALE_BUFFER])
        consumed.add(SCALE_BUFFER)
    parts.ignored = {name for name in IGNORED_BUFFERS if name in state}
    unused = sorted(set(state) - consumed - parts.ignored)
    if unused:
        more = f", ... ({len(unused)} in all)" if len(unused) > 20 else ""
        shown = ", ".join(unused[:20]) + more
        ema = any(k.startswith("model_ema.") for k in unused)
        hint = " (model_ema.*: EMA copies of the weights, which are not converted)" if ema else ""
        raise ValueError(f"keys of the checkpoint that no part of L-CAD consumes: {shown}{hint}")
    parts.consumed = consumed
    return parts


def ldm_schedule(schedule: Mapping[str, Any]) -> dict[str, Tensor]:
    """The buffers of :data:`SCHEDULE_BUFFERS` (float64) for the noise schedule ``schedule``
    (:class:`diffusers.DDPMScheduler` arguments): from its ``betas``, the DDPM quantities of Ho,
    Jain, Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (arXiv:2006.11239,
    Eq. 4, 6-7), with the posterior variance ``β̃_t`` (ldm's ``v_posterior`` 0) and its log
    clipped at 1e-20, as ldm registers them."""
    betas = DDPMScheduler.from_config(dict(schedule)).betas.double()
    alphas = 1 - betas
    bar = torch.cumprod(alphas, 0)
    bar_prev = torch.cat((bar.new_ones(1), bar[:-1]))
    variance = betas * (1 - bar_prev) / (1 - bar)
    return {
        "betas": betas,
        "alphas_cumprod": bar,
        "alphas_cumprod_prev": bar_prev,
        "sqrt_alphas_cumprod": bar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - bar).sqrt(),
        "log_one_minus_alphas_cumprod": torch.log1p(-bar),
        "sqrt_recip_alphas_cumprod": bar.rsqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / bar - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp_min(1e-20).log(),
        "posterior_mean_coef1": betas * bar_prev.sqrt() / (1 - bar),
        "posterior_mean_coef2": (1 - bar_prev) * alphas.sqrt() / (1 - bar),
    }


def _check_schedule(state: Mapping[str, Tensor], schedule: dict[str, Any]) -> None:
    """Every schedule buffer of ``state`` against :func:`ldm_schedule` (float32 storage: a
    relative tolerance of 1e-4)."""
    present = [name for name in SCHEDULE_BUFFERS if name in state]
    if not present:
        return
    ours = ldm_schedule(schedule)
    for name in present:
        value, expected = state[name].double(), ours[name]
        if value.shape != expected.shape or not torch.allclose(
            value, expected, rtol=1e-4, atol=1e-7
        ):
            raise ValueError(
                f"the checkpoint's {name!r} differs from the config's schedule {schedule}: give "
                "the release's config (linear_start, linear_end, timesteps)"
            )


def _load(part: str, module: nn.Module, state: Mapping[str, Tensor]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:  # names the missing, unexpected and mis-shaped keys
        raise ValueError(f"the release's {part} does not fit the model: {err}") from err


def load_released(
    path: str | Path,
    text_encoder: str,
    text_subfolder: str | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    text_pretrained: bool = True,
    **options: Any,
) -> LCADDiffusionModule:
    """An :class:`LCADDiffusionModule` (``cec: first``, ``trainable: release``, the release's
    luminance scaling, DDIM 50 steps, guidance 5: the release's ``inference.py``) with the
    weights of the authors' checkpoint.

    Args:
        path: the release's checkpoint (a local file; a Lightning checkpoint or a bare state
            dict).
        text_encoder, text_subfolder: the caption encoder (its tokenizer, and its weights when
            the checkpoint has none): Stable Diffusion v1.5's pipeline folder with
            ``text_subfolder="text_encoder"``, as for ``paper-diffusion.yaml``. The
            checkpoint's CLIP weights, when present, replace the folder's.
        config: the release's model config (its YAML file or dict); default
            :data:`RELEASE_CONFIG`.
        text_pretrained: load the folder's text weights first.
        options: further :class:`LCADDiffusionModule` arguments (``sampling``, ...); a
            ``text`` mapping adds fields of :class:`lcad.text.CaptionEncoderConfig`
            (``max_length``, ``options``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (chromalab never downloads weights)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    parts = convert_released(state, config)
    vae_config, unet_config, schedule = component_configs(config)
    if parts.scaling_factor is not None:  # scale_by_std: the checkpoint's own latent scale
        vae_config["scaling_factor"] = parts.scaling_factor
    text = {"encoder": text_encoder, "subfolder": text_subfolder, "pretrained": text_pretrained}
    text |= options.pop("text", None) or {}
    settings = dict(
        vae=vae_config, unet=unet_config, text=text, schedule=schedule, cec="first",
        trainable="release", release_scale=True,
    )  # fmt: skip
    module = LCADDiffusionModule(**(settings | options))
    extension = parts["unet"]["conv_in.extension.weight"].shape[1]
    channels = module.autoencoder.luminance_encoder.mid_zero_convs[-1].out_channels
    if extension != channels:
        raise ValueError(
            f"the UNet's first convolution reads {extension} extra channels, the grey encoder "
            f"gives {channels}"
        )
    _load("VAE", module.autoencoder.vae, parts["vae"])
    _load("grey encoder", module.autoencoder.luminance_encoder, parts["luminance_encoder"])
    _load("UNet", module.unet.unet, parts["unet"])
    if parts["text"]:
        _load("text encoder", module.text.model, parts["text"])
    else:
        logger.info("the checkpoint has no text model: the caption encoder's own weights stay")
    module.mark_loaded()  # fit keeps these weights (no pretrained reload at its start)
    logger.info("L-CAD release %s: %d tensors converted", path, len(parts.consumed))
    return module


def save_pipeline(
    path: str | Path,
    output: str | Path,
    text_encoder: str,
    text_subfolder: str | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Convert the authors' checkpoint (:func:`load_released`) and write it as an
    :class:`lcad.pipeline.LCADPipeline` folder (``save_pretrained``: safetensors), which
    ``LCADPipeline.from_pretrained`` and ``chromalab colorize --model lcad --weights`` read
    without the conversion. Returns ``output``."""
    module = load_released(path, text_encoder, text_subfolder, config, **options)
    output = Path(output)
    module.pipeline().save_pretrained(output)
    logger.info("wrote the L-CAD pipeline to %s", output)
    return output


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lcad.weights RELEASE.ckpt --text-encoder SD15_DIR -o lcad-pipeline/``."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Convert the authors' L-CAD checkpoint into an LCADPipeline folder."
    )
    parser.add_argument("checkpoint", help="the release's checkpoint (local file)")
    parser.add_argument(
        "--text-encoder",
        required=True,
        help="Stable Diffusion v1.5's folder (its text_encoder/ and tokenizer/) or a CLIP folder",
    )
    parser.add_argument("--config", default=None, help="the release's model YAML (default: ours)")
    parser.add_argument("-o", "--output", required=True, help="the pipeline folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sub = "text_encoder" if (Path(args.text_encoder) / "text_encoder").is_dir() else None
    save_pipeline(args.checkpoint, args.output, args.text_encoder, sub, args.config)


if __name__ == "__main__":
    main()
