"""``LCADPipeline``: L-CAD sampling (§3.3-3.4) as a diffusers ``DiffusionPipeline``.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2310.15277).

One call colorizes a batch of grey images, one caption each:

1. the luminance encoder's features of each image, computed once (§3.2-3.3);
2. the denoising loop of any diffusers scheduler (:data:`SCHEDULERS`; the paper: DDIM, 50
   steps), with classifier-free guidance as one UNet call per step on the batch
   ``[conditional; unconditional]``, the unconditional input being the empty caption with the
   same luminance (as in the authors' release);
3. with masks, instance-aware sampling (Algorithm 1, :mod:`lcad.attention`): at an edited step
   a first UNet pass on the conditional rows records every cross-attention layer's logits moved
   one BCE gradient step toward each phrase's mask, and the guided pass uses them. Only the
   first ``edit_steps`` steps can be edited (the layout forms early), which bounds the cost;
4. decoding with the luminance-guided decoder (``lic``; else the VAE's own decoder), the colours
   joined with the input lightness.

Each image has its own generator when a list is given: the same seed gives the same colours
whatever the batch. Nothing is cached between calls.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import BaseOutput
from PIL import Image
from torch import Tensor

from chromalab.color import L_SCALE, rgb_to_l_ab
from chromalab.io import from_pil, recombine
from chromalab.report import unit_range
from chromalab.text import find_color_words
from lcad.attention import AttentionEdit, attention_edit, install_editable_attention
from lcad.cec import LuminanceUNet
from lcad.compression import LuminanceEncoder, LuminanceGuidedAutoencoder
from lcad.text import encode_captions

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEDULERS",
    "LCADPipeline",
    "LCADPipelineOutput",
    "color_word_tokens",
    "make_scheduler",
    "phrase_tokens",
]

#: Scheduler names of :func:`make_scheduler` (and ``--scheduler``).
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "ddpm": (DDPMScheduler, {"clip_sample": False}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpm++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
    "deis": (DEISMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
}


#: What a scheduler's configuration says of the noise schedule itself (carried from one
#: scheduler to another; each solver's own settings are not).
SCHEDULE_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "steps_offset", "timestep_spacing", "rescale_betas_zero_snr",
)  # fmt: skip


def make_scheduler(name: str, config: Mapping[str, Any]):
    """The scheduler ``name`` (:data:`SCHEDULERS`) on the noise schedule of ``config`` (a
    scheduler's ``config`` or the training schedule)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    cls, options = SCHEDULERS[name]
    schedule = {k: v for k, v in config.items() if k in SCHEDULE_KEYS}
    return cls.from_config(schedule | options)


def _spans_overlap(a: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(a[0] < e and s < a[1] for s, e in spans)


def _offsets(tokenizer, caption: str, max_length: int) -> list[tuple[int, int]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("instance-aware sampling needs a fast tokenizer (character offsets)")
    enc = tokenizer(
        caption,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
    )
    return [tuple(o) for o in enc["offset_mapping"]]


def _span_tokens(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], what: str
) -> Tensor:
    out = torch.tensor([e > s and _spans_overlap((s, e), spans) for s, e in offsets])
    if not out.any():  # truncated away: the model does not read it, there is nothing to edit
        logger.warning("%s lies beyond the %d caption tokens: not edited", what, len(offsets))
    return out


def phrase_tokens(tokenizer, caption: str, phrases: Sequence[str], max_length: int) -> Tensor:
    """Bool ``(P, max_length)``: the tokens whose attention Algorithm 1 edits for each phrase
    of ``caption`` (a substring, case-insensitive, its first occurrence): the colour words
    inside the phrase ("attention maps ... for each color word", §3.4), or all its tokens if it
    names no colour; none for a phrase truncated away, with a warning). Needs a fast tokenizer
    (character offsets)."""
    offsets = _offsets(tokenizer, caption, max_length)
    colors = [(s, e) for s, e, _ in find_color_words(caption)]
    out = torch.zeros(len(phrases), max_length, dtype=torch.bool)
    lower = caption.lower()
    for p, phrase in enumerate(phrases):
        start = lower.find(phrase.lower().strip())
        if not phrase.strip() or start < 0:
            raise ValueError(f"phrase {phrase!r} is not in the caption {caption!r}")
        span = (start, start + len(phrase.strip()))
        inner = [c for c in colors if span[0] <= c[0] and c[1] <= span[1]] or [span]
        out[p] = _span_tokens(offsets, inner, f"phrase {phrase!r}")
    return out


def color_word_tokens(tokenizer, caption: str, max_length: int) -> tuple[list[str], Tensor]:
    """The colour words of ``caption`` (each occurrence, in order) and their tokens
    ``(P, max_length)``: the phrases of automatic masks."""
    offsets = _offsets(tokenizer, caption, max_length)
    words, rows = [], []
    for s, e, _ in find_color_words(caption):
        words.append(caption[s:e])
        rows.append(_span_tokens(offsets, [(s, e)], f"colour word {caption[s:e]!r}"))
    if not rows:
        return [], torch.zeros(0, max_length, dtype=torch.bool)
    return words, torch.stack(rows)


def _mask_tensor(mask: Any, size: tuple[int, int]) -> Tensor:
    """A mask (tensor, array or PIL image; non-zero = inside) as float ``(H, W)`` at ``size``."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).float()
    m = m.squeeze()
    if m.dim() != 2:
        raise ValueError(f"a mask must be one (H, W) plane, got shape {tuple(m.shape)}")
    if m.max() > 1:
        m = m / m.max()
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="area")[0, 0]
    return m


@dataclass
class LCADPipelineOutput(BaseOutput):
    """``images``: RGB ``(B, 3, H, W)`` in ``[0, 1]`` (``"pt"``), ``(B, H, W, 3)`` (``"np"``)
    or a list of PIL images (``"pil"``); ``masks``: with ``auto_masks``, the estimated mask
    of each colour word per image; ``mass``: with ``track_mass``, per edited layer and step, the
    share of the phrase tokens' attention inside their masks before and after the edit;
    ``attention``: with ``attention_maps``, each colour word's cross-attention ``(h, w)`` on the
    latent grid, summed over layers and steps and scaled to ``[0, 1]``, per image."""

    images: Tensor | np.ndarray | list[Image.Image]
    masks: list[dict[str, Tensor]] | None = None
    mass: list[tuple[float, float]] | None = None
    attention: list[dict[str, Tensor]] | None = None


class LCADPipeline(DiffusionPipeline):
    """Language-based colorization with L-CAD (any batch, any size that is a multiple of the VAE's
    downsampling factor, any scheduler).

    Components: ``vae`` (``AutoencoderKL``), ``luminance_encoder``
    (:class:`lcad.compression.LuminanceEncoder`), ``unet`` (:class:`lcad.cec.LuminanceUNet`),
    ``text_encoder`` and ``tokenizer`` (transformers), ``scheduler`` (diffusers).

    Args:
        release_scale: the luminance scaling of the authors' release
            (:func:`lcad.compression.luminance_input`).
        lic: decode with the luminance-guided decoder (§3.2); ``False``: the VAE's own decoder
            (the paper's W/o LIC).
        caption_length: tokens per caption (the trained model's; ``None``: the tokenizer's
            maximum).
    """

    model_cpu_offload_seq = "text_encoder->luminance_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        luminance_encoder: LuminanceEncoder,
        unet: LuminanceUNet,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        release_scale: bool = False,
        lic: bool = True,
        caption_length: int | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            luminance_encoder=luminance_encoder,
            unet=unet,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
        )
        limit = int(tokenizer.model_max_length)
        length = min(caption_length or limit, limit)
        self.register_to_config(release_scale=release_scale, lic=lic, caption_length=length)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------------- parts
    @property
    def autoencoder(self) -> LuminanceGuidedAutoencoder:
        """The VAE and luminance encoder as stage 1 uses them (a view: no copy)."""
        return LuminanceGuidedAutoencoder(
            self.vae, self.luminance_encoder, self.config.release_scale
        )

    def use_scheduler(self, name: str) -> LCADPipeline:
        """Switch to the scheduler ``name`` (:data:`SCHEDULERS`) on the same noise schedule."""
        self.scheduler = make_scheduler(name, self.scheduler.config)
        return self

    def encode_prompt(self, captions: Sequence[str]) -> Tensor:
        """Context ``(B, caption_length, width)`` of ``captions``."""
        return encode_captions(
            self.tokenizer, self.text_encoder, captions, self.config.caption_length
        )

    def lightness(self, image: Any) -> Tensor:
        """Lightness ``(B, 1, H, W)`` in ``[0, 100]`` of ``image``: a tensor ``(B, 1, H, W)``
        of lightness, a tensor ``(B, 3, H, W)`` of RGB in ``[0, 1]``, or PIL images."""
        if isinstance(image, Image.Image):
            image = [image]
        if isinstance(image, list | tuple):
            tensors = [from_pil(im) for im in image]
            if len({t.shape for t in tensors}) != 1:
                raise ValueError("PIL images of one call must share their size")
            image = torch.stack(tensors)
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] not in (1, 3):
            raise ValueError("image: lightness (B, 1, H, W), RGB (B, 3, H, W) or PIL images")
        if image.shape[1] == 3:
            return rgb_to_l_ab(image.float())[0]
        if image.min() < 0 or image.max() > L_SCALE:
            raise ValueError(f"lightness must lie in [0, {L_SCALE}]")
        return image.float()

    def _edit(
        self,
        captions: Sequence[str],
        masks: Sequence[Mapping[str, Any] | None],
        size: tuple[int, int],
        latent: tuple[int, int],
        step_size: float,
    ) -> AttentionEdit | None:
        """The edit of user masks ``{phrase: mask}`` per image."""
        if len(masks) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(masks)} mask sets")
        phrases = [list((m or {}).keys()) for m in masks]
        p = max((len(x) for x in phrases), default=0)
        if p == 0:
            return None
        length = self.config.caption_length
        mask = torch.zeros(len(captions), p, *size)
        tokens = torch.zeros(len(captions), p, length, dtype=torch.bool)
        for i, (caption, names) in enumerate(zip(captions, phrases, strict=True)):
            if not names:
                continue
            tokens[i, : len(names)] = phrase_tokens(self.tokenizer, caption, names, length)
            for j, name in enumerate(names):
                mask[i, j] = _mask_tensor(masks[i][name], size)
        return AttentionEdit(mask, tokens, latent, step_size)

    def _auto_edit(
        self,
        captions: Sequence[str],
        size: tuple[int, int],
        latent: tuple[int, int],
        step_size: float,
    ) -> tuple[AttentionEdit | None, list[list[str]]]:
        """An edit on every colour word of each caption, its masks to be estimated."""
        length = self.config.caption_length
        found = [color_word_tokens(self.tokenizer, c, length) for c in captions]
        p = max(len(words) for words, _ in found)
        if p == 0:
            return None, []
        tokens = torch.zeros(len(captions), p, length, dtype=torch.bool)
        for i, (words, rows) in enumerate(found):
            tokens[i, : len(words)] = rows
        edit = AttentionEdit(torch.zeros(len(captions), p, *size), tokens, latent, step_size)
        return edit, [words for words, _ in found]

    def _segment(
        self, segmenter, l: Tensor, prompts: Sequence[Mapping[str, Any] | None]
    ) -> list[dict[str, Tensor] | None]:
        if segmenter is None:
            raise ValueError("SAM prompts need a segmenter (lcad.segment.SamSegmenter)")
        if len(prompts) != l.shape[0]:
            raise ValueError(f"{l.shape[0]} images but {len(prompts)} prompt sets")
        return [segmenter(l[i], p) if p else None for i, p in enumerate(prompts)]

    def _estimate_masks(
        self, edit: AttentionEdit, words, segmenter, l: Tensor
    ) -> list[dict[str, Tensor]]:
        """Automatic masks: each colour word's attention peak prompts SAM."""
        h, w = l.shape[-2:]
        peaks = edit.peaks().cpu()
        masks = torch.zeros_like(edit.masks)
        for i, names in enumerate(words):
            points = {
                str(j): (float(peaks[i, j, 0]) * w, float(peaks[i, j, 1]) * h)
                for j in range(len(names))
            }
            if points:
                for j, m in segmenter(l[i], points).items():
                    masks[i, int(j)] = m.to(masks)
        edit.set_masks(masks)
        return [{name: masks[i, j].cpu() for j, name in enumerate(names)}
                for i, names in enumerate(words)]  # fmt: skip

    def _noise(self, shape: tuple[int, ...], generator, device, dtype) -> Tensor:
        """Initial latents: each image's from its own generator (on the generator's device, so
        a CPU generator gives the same noise whatever device samples)."""
        if isinstance(generator, list | tuple):
            if len(generator) != shape[0]:
                raise ValueError(f"{len(generator)} generators for {shape[0]} images")
            z = torch.stack(
                [torch.randn(shape[1:], generator=g, device=g.device) for g in generator]
            )
        elif generator is not None:
            z = torch.randn(shape, generator=generator, device=generator.device)
        else:
            z = torch.randn(shape)
        return z.to(device, dtype)

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        prompt: str | Sequence[str],
        masks: Sequence[Mapping[str, Any] | None] | None = None,
        prompts: Sequence[Mapping[str, Any] | None] | None = None,
        segmenter: Any = None,
        auto_masks: bool = False,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        edit_step_size: float = 5.0,
        edit_steps: int | None = None,
        track_mass: bool = False,
        attention_maps: bool = False,
        output_type: str = "pt",
        return_dict: bool = True,
    ) -> LCADPipelineOutput | tuple:
        """Colorize ``image`` (see :meth:`lightness`) with ``prompt`` (one caption, or one per
        image).

        Args:
            masks: per image, ``{phrase: mask}`` for instance-aware sampling (Algorithm 1):
                each phrase a part of the caption (its colour words' attention is edited), each
                mask ``(H, W)`` in ``[0, 1]`` at any resolution (resized to the image); ``None``
                or empty: plain sampling for that image.
            prompts: per image, ``{phrase: point, points or box}`` in pixels: the masks come
                from ``segmenter`` (:class:`lcad.segment.SamSegmenter`).
            segmenter: SAM, for ``prompts`` and ``auto_masks``.
            auto_masks: every colour word's mask from SAM, prompted with the word's
                cross-attention peak at the first step; the edit starts at the second step.
            num_inference_steps, guidance_scale: sampling steps and classifier-free guidance.
            generator: one per image (reproducible per image), one for the batch, or ``None``.
            edit_step_size: ``λ`` of Algorithm 1 (the paper does not give it).
            edit_steps: edit the first ``edit_steps`` steps only (``None``: every step, as
                the paper).
            track_mass: report the edit's effect on the attention (``mass`` of the output).
            attention_maps: return each colour word's cross-attention, summed over the layers
                and steps of this sampling (``attention`` of the output; plain sampling only).
            output_type: ``"pt"``, ``"np"`` or ``"pil"``.
        """
        l = self.lightness(image)
        b = l.shape[0]
        captions = [prompt] * b if isinstance(prompt, str) else list(prompt)
        if len(captions) != b:
            raise ValueError(f"{b} images but {len(captions)} captions")
        h, w = l.shape[-2:]
        f = self.vae_scale_factor
        if h % f or w % f:
            raise ValueError(f"image sides must be multiples of {f}, got {(h, w)}")
        if output_type not in ("pt", "np", "pil"):
            raise ValueError(f"output_type must be 'pt', 'np' or 'pil', got {output_type!r}")
        device, dtype = self.unet.device, self.unet.dtype
        l = l.to(device)
        latent = (h // f, w // f)
        if sum(x is not None and x is not False for x in (masks, prompts, auto_masks)) > 1:
            raise ValueError("give one of masks, prompts and auto_masks")
        edit, words, estimated = None, [], None
        if attention_maps and (masks is not None or prompts is not None or auto_masks):
            raise ValueError("attention_maps shows plain sampling: not with masks or prompts")
        if prompts is not None:
            masks = self._segment(segmenter, l, prompts)
        if masks is not None:
            edit = self._edit(captions, masks, (h, w), latent, edit_step_size)
        elif auto_masks:
            if segmenter is None:
                raise ValueError("auto_masks needs a segmenter (lcad.segment.SamSegmenter)")
            edit, words = self._auto_edit(captions, (h, w), latent, edit_step_size)
        elif attention_maps:
            edit, words = self._auto_edit(captions, (h, w), latent, 0.0)
        if edit is not None:
            edit.masks = edit.masks.to(device)
            edit.track_mass = track_mass
        autoencoder = self.autoencoder
        features = autoencoder.luminance_features(l)
        context = self.encode_prompt(captions + [""] * b).to(device, dtype)
        shape = (b, self.vae.config.latent_channels, *latent)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        z = self._noise(shape, generator, device, dtype) * self.scheduler.init_noise_sigma
        extra = {}
        if "generator" in _step_parameters(self.scheduler):
            extra["generator"] = list(generator) if isinstance(generator, tuple) else generator
        unet = self.unet
        install_editable_attention(unet.unet)
        edited = len(self.scheduler.timesteps) if edit_steps is None else int(edit_steps)
        with unet.luminance(features[-1].to(dtype)), attention_edit(unet.unet, edit):
            for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
                x = self.scheduler.scale_model_input(z, t)
                if attention_maps and edit is not None:
                    edit.mode = "observe"  # sum the colour words' maps over every step
                elif edit is not None:
                    edit.mode = "record" if i < edited else None
                    if words and i == 0:  # automatic masks: observe the layout first
                        edit.mode = "observe"
                    if edit.mode == "record":  # Algorithm 1: read, edit the conditional maps
                        unet(x, t, context[:b])
                        edit.mode = "apply"
                eps = unet(torch.cat((x, x)), t, context)
                if edit is not None and not attention_maps:
                    if edit.mode == "observe":
                        estimated = self._estimate_masks(edit, words, segmenter, l)
                    edit.mode, edit.edited = None, {}
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
                z = self.scheduler.step(eps, t, z, **extra).prev_sample
        if self.config.lic:
            decoded = autoencoder.decode(z.to(self.vae.dtype), features)
        else:
            decoded = self.vae.decode(z.to(self.vae.dtype) / autoencoder.scaling_factor).sample
        rgb = ((decoded.float() + 1) / 2).clamp(0, 1)
        rgb = recombine(l, rgb_to_l_ab(rgb)[1]).clamp(0, 1)
        self.maybe_free_model_hooks()
        images: Any = rgb
        if output_type != "pt":
            images = rgb.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                images = [Image.fromarray((a * 255).round().astype(np.uint8)) for a in images]
        if not return_dict:
            return (images,)
        mass = edit.mass if edit is not None and track_mass else None
        attention = None
        if attention_maps:
            attention = _normalised_maps(edit, words, b)
        return LCADPipelineOutput(images=images, masks=estimated, mass=mass, attention=attention)


def _normalised_maps(edit: AttentionEdit | None, words, b: int) -> list[dict[str, Tensor]]:
    """Each colour word's summed attention ``(h, w)`` of the latent, scaled to ``[0, 1]``."""
    if edit is None or edit.observed is None:
        return [{} for _ in range(b)]
    maps = unit_range(edit.observed.float().cpu())
    out = []
    for i, names in enumerate(words):
        labels = [w if names.count(w) == 1 else f"{w} ({names[: j + 1].count(w)})"
                  for j, w in enumerate(names)]  # fmt: skip
        out.append({label: maps[i, j] for j, label in enumerate(labels)})
    return out


def _step_parameters(scheduler) -> set[str]:
    return set(inspect.signature(scheduler.step).parameters)
