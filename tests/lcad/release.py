"""A tiny checkpoint in the key layout of the authors' L-CAD release (ldm/ControlNet names),
with random tensors, built from a tiny version of the release's config.

The models are made in diffusers' layout with random weights, then written under ldm's names
(ldm's ``UNetModel``, ``Encoder``/``Decoder``, the release's ``Gray_Encoder``). The names are
this file's own reading of ldm's module structure; that diffusers' converter consumes them and
rebuilds the same models is part of what the tests check.

Beside the weights, the checkpoint holds every persistent buffer the release's model classes
can save (changzheng123/L-CAD: ``DDPM.register_schedule``, ``logvar`` and ``scale_factor`` in
``ldm/models/diffusion/ddpm.py``, ``LitEma`` in ``ldm/modules/ema.py``, the text model's
``position_ids``): :func:`ldm_buffers`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import Tensor

from lcad.compression import LuminanceEncoder
from lcad.text import CaptionEncoder
from lcad.weights import component_configs

#: The release's config at toy size: UNet 32-64-64 channels (attention at the first two
#: levels, 2 heads, 12-wide context), VAE 32-64 channels (ldm's GroupNorm has 32 groups).
TINY_RELEASE = {
    "model": {
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.012,
            "timesteps": 1000,
            "scale_factor": 0.18215,
            "unet_config": {
                "params": {
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 32,
                    "attention_resolutions": [1, 2],
                    "num_res_blocks": 1,
                    "channel_mult": [1, 2, 2],
                    "num_heads": 2,
                    "transformer_depth": 1,
                    "context_dim": 12,
                    "use_linear_in_transformer": False,
                }
            },
            "first_stage_config": {
                "params": {
                    "ddconfig": {
                        "resolution": 32,
                        "in_channels": 3,
                        "out_ch": 3,
                        "z_channels": 4,
                        "ch": 32,
                        "ch_mult": [1, 2],
                        "num_res_blocks": 1,
                    }
                }
            },
        }
    }
}

_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}  # fmt: skip
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                  "to_out.0": "proj_out"}  # fmt: skip


def _resnet(rest: str) -> str:
    layer, _, param = rest.rpartition(".")
    return f"{_RESNET[layer]}.{param}"


def ldm_unet(unet: UNet2DConditionModel) -> dict[str, Tensor]:
    """The UNet's state dict under ldm's ``UNetModel`` names."""
    per = unet.config.layers_per_block + 1
    out = {}
    for key, value in unet.state_dict().items():
        if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(.+)", key):
            name = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            name = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"output_blocks.{int(m[1]) * per + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            name = f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            index = 2 if hasattr(unet.up_blocks[block], "attentions") else 1  # after attention
            name = f"output_blocks.{block * per + per - 1}.{index}.conv.{m[2]}"
        else:
            name = {
                "conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
                "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0",
                "conv_out": "out.2",
            }[key.rpartition(".")[0]] + "." + key.rpartition(".")[2]  # fmt: skip
        out[name] = value.clone()
    return out


def _ldm_coder(key: str, value: Tensor, blocks: int) -> tuple[str, Tensor]:
    """A diffusers ``Encoder``/``Decoder`` key (``encoder.`` or ``decoder.`` prefixed) in ldm's
    names; attention projections back to 1x1 convolutions."""
    side, _, rest = key.partition(".")
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        rest = f"down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        rest = f"down.{m[1]}.downsample.conv.{m[2]}"
    elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        level = blocks - 1 - int(m[1])
        rest = f"up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        rest = f"up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    elif m := re.match(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        rest = f"mid.block_{int(m[1]) + 1}.{m[2]}"
    elif m := re.match(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        rest = f"mid.attn_1.{_VAE_ATTENTION[m[1]]}.{m[2]}"
        if value.dim() == 2:
            value = value[:, :, None, None]
    elif rest.startswith("conv_norm_out."):
        rest = rest.replace("conv_norm_out", "norm_out")
    return f"{side}.{rest}", value.clone()


def ldm_vae(vae: AutoencoderKL) -> dict[str, Tensor]:
    """The VAE's state dict under ldm's ``AutoencoderKL`` names."""
    blocks = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        if key.startswith(("encoder.", "decoder.")):
            key, value = _ldm_coder(key, value, blocks)
        out[key] = value.clone()
    return out


def ldm_grey(encoder: LuminanceEncoder, latent_channels: int) -> dict[str, Tensor]:
    """A :class:`LuminanceEncoder` under the release's ``Gray_Encoder`` names, with the output
    head the release has and never uses (``norm_out``, ``conv_out`` to 2x the latent)."""
    blocks = len(encoder.down_blocks)
    out = {}
    for key, value in encoder.state_dict().items():
        if m := re.match(r"zero_convs\.(\d+)\.(\d+)\.(.+)", key):
            out[f"down.{m[1]}.zero_conv.{m[2]}.{m[3]}"] = value.clone()
        elif m := re.match(r"mid_zero_convs\.(\d)\.(.+)", key):
            out[f"zero_conv_mid{int(m[1]) + 1}.{m[2]}"] = value.clone()
        else:
            name, value = _ldm_coder(f"encoder.{key}", value, blocks)
            out[name.removeprefix("encoder.")] = value
    width = encoder.mid_zero_convs[-1].out_channels
    out["norm_out.weight"], out["norm_out.bias"] = torch.randn(width), torch.randn(width)
    out["conv_out.weight"] = torch.randn(2 * latent_channels, width, 3, 3)
    out["conv_out.bias"] = torch.randn(2 * latent_channels)
    return out


def ldm_schedule(schedule: dict) -> dict[str, Tensor]:
    """ldm's noise-schedule buffers (``DDPM.register_schedule``: its "linear" schedule, linear
    in ``sqrt(beta)``, ``v_posterior`` 0) for a diffusers ``scaled_linear`` schedule, computed
    in float64 and stored in float32 as ldm does; transcribed from their definitions (Ho, Jain,
    Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239, Eq. 4,
    6-7)."""
    n, start, end = (schedule[k] for k in ("num_train_timesteps", "beta_start", "beta_end"))
    betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    alphas = 1 - betas
    bar = torch.cumprod(alphas, 0)
    bar_prev = torch.cat((torch.ones(1, dtype=torch.float64), bar[:-1]))
    variance = betas * (1 - bar_prev) / (1 - bar)
    buffers = {
        "betas": betas,
        "alphas_cumprod": bar,
        "alphas_cumprod_prev": bar_prev,
        "sqrt_alphas_cumprod": bar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - bar).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - bar).log(),
        "sqrt_recip_alphas_cumprod": bar.rsqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / bar - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp_min(1e-20).log(),
        "posterior_mean_coef1": betas * bar_prev.sqrt() / (1 - bar),
        "posterior_mean_coef2": (1 - bar_prev) * alphas.sqrt() / (1 - bar),
    }
    return {k: v.float() for k, v in buffers.items()}


def ldm_buffers(schedule: dict, text_positions: int) -> dict[str, Tensor]:
    """Every persistent buffer of the release's ``ControlLDM_cat`` beside the weights: the
    schedule's (:func:`ldm_schedule`), ``logvar`` (zeros: ``learn_logvar`` off),
    ``scale_factor`` (a buffer with ``scale_by_std``), ``model_ema.decay`` and
    ``model_ema.num_updates`` (``use_ema``), the text model's ``position_ids``."""
    n = schedule["num_train_timesteps"]
    return ldm_schedule(schedule) | {
        "logvar": torch.zeros(n),
        "scale_factor": torch.tensor(0.18215),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(0, dtype=torch.int32),
        "cond_stage_model.transformer.embeddings.position_ids": torch.arange(text_positions)[None],
    }


def tiny_release(folder: Path, text: CaptionEncoder) -> tuple[Path, dict]:
    """Write ``folder/lcad.ckpt`` (a Lightning-style ``{"state_dict": ...}``) and return it
    with the source models: ``vae``, ``unet`` (4 input channels), ``extension`` (the extra
    input channels' weight), ``grey`` (:class:`LuminanceEncoder`), ``text`` (``text``'s
    model), ``state`` (the ldm state dict)."""
    vae_config, unet_config, schedule = component_configs(TINY_RELEASE)
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config).eval()
    unet = UNet2DConditionModel(**unet_config).eval()
    grey = LuminanceEncoder.from_vae(vae, copy_weights=False).eval()
    for seed, module in enumerate((vae, unet, grey, text.model)):
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    channels = grey.mid_zero_convs[-1].out_channels
    extension = torch.randn(unet.conv_in.out_channels, channels, 3, 3) * 0.05
    state = {f"model.diffusion_model.{k}": v for k, v in ldm_unet(unet).items()}
    first = "model.diffusion_model.input_blocks.0.0.weight"
    state[first] = torch.cat((state[first], extension), dim=1)  # CatUNet: 4 + N_ext channels
    state |= {f"first_stage_model.{k}": v for k, v in ldm_vae(vae).items()}
    latent = vae.config.latent_channels
    state |= {f"first_stage_model.g_encoder.{k}": v for k, v in ldm_grey(grey, latent).items()}
    state |= {f"cond_stage_model.transformer.{k}": v.clone()
              for k, v in text.model.state_dict().items()}  # fmt: skip
    state |= ldm_buffers(schedule, text.model.config.max_position_embeddings)
    path = folder / "lcad.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, path)
    sources = {"vae": vae, "unet": unet, "extension": extension, "grey": grey,
               "text": text.model, "state": state}  # fmt: skip
    return path, sources
