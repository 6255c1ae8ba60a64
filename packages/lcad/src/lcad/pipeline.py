"""``LCADPipeline``: L-CAD sampling (§3.3-3.4) as a diffusers ``DiffusionPipeline``.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

One call colorizes a batch of grey images, one caption each, in the steps of diffusers'
pipelines (:meth:`LCADPipeline.__call__`):

1. :meth:`~LCADPipeline.check_inputs`: every rule on the inputs, before any work;
2. with masks, instance-aware sampling's edit (Algorithm 1, :mod:`lcad.attention`;
   :meth:`~LCADPipeline.prepare_edit`);
3. the luminance encoder's features of each image, computed once (§3.2-3.3), and the captions'
   context ``[conditional; unconditional]``, the unconditional one the empty caption with the
   same luminance (as in the authors' release);
4. the denoising loop of any diffusers scheduler (:data:`SCHEDULERS`; the paper: DDIM, 50
   steps), one :meth:`~LCADPipeline.denoise_step` per step: classifier-free guidance as one UNet
   call on the batch ``[conditional; unconditional]``, and at an edited step, first, a UNet pass
   on the conditional rows that records every cross-attention layer's logits moved one BCE
   gradient step toward each phrase's mask, which the guided pass then uses. Only the first
   ``edit_steps`` steps can be edited (the layout forms early), which bounds the cost;
5. decoding with the luminance-guided decoder (``lic``; else the VAE's own decoder), the colours
   joined with the input lightness (:meth:`~LCADPipeline.decode_latents`).

Each image has its own generator when a list is given: the same seed gives the same colours
whatever the batch. Nothing is cached between calls. The sampling defaults (:data:`DEFAULT_STEPS`,
:data:`DEFAULT_GUIDANCE`, :data:`DEFAULT_SCHEDULER`, :data:`DEFAULT_EDIT_STEP_SIZE`) are defined
here once; the module, the colorizer and the weight converter use them.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Mapping, Sequence, Sized
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
from lcad.attention import AttentionEdit, EditMode, attention_edit
from lcad.cec import LuminanceUNet
from lcad.compression import LuminanceEncoder, LuminanceGuidedAutoencoder
from lcad.text import encode_captions

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EDIT_STEP_SIZE",
    "DEFAULT_GUIDANCE",
    "DEFAULT_SCHEDULER",
    "DEFAULT_STEPS",
    "SCHEDULERS",
    "LCADPipeline",
    "SamplingConfig",
    "LCADPipelineOutput",
    "check_one_mask_source",
    "color_word_tokens",
    "edit_mode",
    "make_scheduler",
    "phrase_tokens",
]

#: Sampling steps (the paper: "DDIM ... with 50 sampling steps", §3.5).
DEFAULT_STEPS = 50
#: Classifier-free guidance scale (the authors' release; the paper does not give it).
DEFAULT_GUIDANCE = 5.0
#: The sampler (:data:`SCHEDULERS`): the paper's DDIM.
DEFAULT_SCHEDULER = "ddim"
#: ``λ`` of Algorithm 1 (the paper does not give it).
DEFAULT_EDIT_STEP_SIZE = 5.0


@dataclass(frozen=True)
class SamplingConfig:
    """How validation, test and predict sample (the module's ``sampling`` argument).

    Args:
        steps: denoising steps (the paper: 50, DDIM).
        guidance: classifier-free guidance scale.
        lic: decode with the luminance-guided decoder (§3.2); ``False`` decodes with the VAE's
            own decoder (the paper's W/o LIC ablation; training is the same, so it can be set
            when loading a checkpoint: ``load_with_overrides(path, {"sampling.lic": False})``).
    """

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    lic: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampling steps must be >= 1, got {self.steps}")


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


#: What a scheduler's configuration says of the noise schedule itself and of its ends (carried
#: from one scheduler to another; each solver's own settings are not): ``steps_offset`` and
#: ``set_alpha_to_one`` make DDIM Stable Diffusion's and the release's (timesteps 981 to 1,
#: ``alphas_cumprod[0]`` after the last; :data:`lcad.components.SD_SAMPLING`).
SCHEDULE_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "steps_offset", "timestep_spacing", "rescale_betas_zero_snr",
    "set_alpha_to_one",
)  # fmt: skip


def make_scheduler(name: str, config: Mapping[str, Any]):
    """The scheduler ``name`` (:data:`SCHEDULERS`) on the noise schedule of ``config`` (a
    scheduler's ``config`` or the training schedule)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    cls, options = SCHEDULERS[name]
    schedule = {k: v for k, v in config.items() if k in SCHEDULE_KEYS}
    return cls.from_config(schedule | options)


def check_one_mask_source(sources: Mapping[str, Any]) -> None:
    """Instance-aware sampling takes its masks from one source at most: ``sources`` maps each
    source's name (as the caller spells it: ``masks``, ``--masks``, ...) to its value, which
    counts as given unless ``None``, ``False`` or empty. The one place of this rule, for the
    pipeline (:meth:`LCADPipeline.check_inputs`) and the command line."""
    given = [name for name, value in sources.items() if _given(value)]
    if len(given) > 1:
        names = list(sources)
        raise ValueError(
            f"give one of {', '.join(names[:-1])} and {names[-1]}, got {' and '.join(given)}"
        )


def _given(value: Any) -> bool:
    if value is None or value is False:
        return False
    return not (isinstance(value, Sized) and len(value) == 0)


def edit_mode(
    step: int, edit_steps: int | None, observe_first: bool = False, observe_all: bool = False
) -> EditMode | None:
    """What the UNet's cross-attention does at sampling step ``step`` (0: the noisiest) of an
    edited sampling: :attr:`EditMode.OBSERVE` at every step (``observe_all``: attention maps) or
    at the first (``observe_first``: automatic masks, estimated from that step's attention), else
    Algorithm 1's :attr:`EditMode.RECORD` (then apply) in the first ``edit_steps`` steps (``None``:
    every step), else plain attention (``None``)."""
    if observe_all or (observe_first and step == 0):
        return EditMode.OBSERVE
    if edit_steps is None or step < edit_steps:
        return EditMode.RECORD
    return None


def _spans_overlap(a: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(a[0] < e and s < a[1] for s, e in spans)


def _phrase_span(caption: str, phrase: str) -> tuple[int, int]:
    """Where ``phrase`` (stripped, case-insensitive, its first occurrence) is in ``caption``."""
    start = caption.lower().find(phrase.lower().strip()) if isinstance(phrase, str) else -1
    if start < 0 or not phrase.strip():
        raise ValueError(f"phrase {phrase!r} is not in the caption {caption!r}")
    return start, start + len(phrase.strip())


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
    for p, phrase in enumerate(phrases):
        span = _phrase_span(caption, phrase)
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


def _mask_plane(mask: Any) -> Tensor:
    """A mask (tensor, array or PIL image; non-zero = inside) as one float ``(H, W)`` plane."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).float()
    m = m.squeeze()
    if m.dim() != 2:
        raise ValueError(f"a mask must be one (H, W) plane, got shape {tuple(m.shape)}")
    return m


def _mask_tensor(mask: Any, size: tuple[int, int]) -> Tensor:
    """A mask as float ``(H, W)`` in ``[0, 1]`` at ``size``."""
    m = _mask_plane(mask)
    if m.max() > 1:
        m = m / m.max()
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="area")[0, 0]
    return m


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _non_negative(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _to_output_type(rgb: Tensor, output_type: str) -> Any:
    """RGB ``(B, 3, H, W)`` in ``[0, 1]`` as ``output_type`` (see :class:`LCADPipelineOutput`)."""
    if output_type == "pt":
        return rgb
    images = rgb.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "pil":
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in images]
    return images


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

    def lightness(self, image: Any) -> Tensor:
        """Lightness ``(B, 1, H, W)`` in ``[0, 100]`` of ``image``: a tensor ``(B, 1, H, W)``
        of lightness, a tensor ``(B, 3, H, W)`` of RGB in ``[0, 1]``, or PIL images."""
        if isinstance(image, Image.Image):
            image = [image]
        if isinstance(image, list | tuple):
            tensors = [from_pil(im) for im in image]
            if len({t.shape for t in tensors}) != 1:
                sizes = sorted({tuple(t.shape[-2:]) for t in tensors})
                raise ValueError(f"PIL images of one call must share their size, got {sizes}")
            image = torch.stack(tensors)
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] not in (1, 3):
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(
                f"image: lightness (B, 1, H, W), RGB (B, 3, H, W) or PIL images, got {got}"
            )
        if image.shape[1] == 3:
            return rgb_to_l_ab(image.float())[0]
        if image.min() < 0 or image.max() > L_SCALE:
            raise ValueError(
                f"lightness must lie in [0, {L_SCALE}], got [{float(image.min()):g}, "
                f"{float(image.max()):g}]"
            )
        return image.float()

    def check_inputs(
        self,
        l: Tensor,
        prompt: str | Sequence[str],
        masks: Sequence[Mapping[str, Any] | None] | None = None,
        prompts: Sequence[Mapping[str, Any] | None] | None = None,
        segmenter: Any = None,
        auto_masks: bool = False,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        edit_step_size: float = DEFAULT_EDIT_STEP_SIZE,
        edit_steps: int | None = None,
        attention_maps: bool = False,
        output_type: str = "pt",
    ) -> None:
        """Every rule on :meth:`__call__`'s arguments (``l``: the lightness of its ``image``,
        :meth:`lightness`), checked before any work: a ``ValueError`` that names the offending
        value or shape."""
        b, (h, w), f = l.shape[0], l.shape[-2:], self.vae_scale_factor
        if h % f or w % f:
            raise ValueError(f"image sides must be multiples of {f}, got {(h, w)}")
        if not isinstance(prompt, str | Sequence):
            raise ValueError(f"prompt: a caption or one per image, got {type(prompt).__name__}")
        captions = [prompt] * b if isinstance(prompt, str) else list(prompt)
        if len(captions) != b:
            raise ValueError(f"{b} images but {len(captions)} captions")
        if not all(isinstance(c, str) for c in captions):
            raise ValueError(
                f"captions must be strings, got {[type(c).__name__ for c in captions]}"
            )
        limit = self.scheduler.config.get("num_train_timesteps", num_inference_steps)
        if not _count(num_inference_steps, 1) or num_inference_steps > limit:
            raise ValueError(
                f"num_inference_steps must be in [1, {limit}], got {num_inference_steps!r}"
            )
        if not _non_negative(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if not _non_negative(edit_step_size):
            raise ValueError(f"edit_step_size must be a finite number >= 0, got {edit_step_size!r}")
        if edit_steps is not None and not _count(edit_steps, 0):
            raise ValueError(f"edit_steps must be None or an integer >= 0, got {edit_steps!r}")
        gens = generator if isinstance(generator, list | tuple) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in gens):
            raise ValueError(f"generator: a torch.Generator or one per image, got {generator!r}")
        if isinstance(generator, list | tuple) and len(generator) != b:
            raise ValueError(f"{len(generator)} generators for {b} images")
        if output_type not in ("pt", "np", "pil"):
            raise ValueError(f"output_type must be 'pt', 'np' or 'pil', got {output_type!r}")
        check_one_mask_source({"masks": masks, "prompts": prompts, "auto_masks": auto_masks})
        if attention_maps and (masks is not None or prompts is not None or auto_masks):
            raise ValueError("attention_maps shows plain sampling: not with masks or prompts")
        if (prompts is not None or auto_masks) and segmenter is None:
            what = "SAM prompts need" if prompts is not None else "auto_masks needs"
            raise ValueError(f"{what} a segmenter (lcad.segment.SamSegmenter)")
        for name, sets, what in (("masks", masks, "captions"), ("prompts", prompts, "images")):
            if sets is None:
                continue
            if isinstance(sets, Mapping) or len(sets) != b:
                got = "one mapping" if isinstance(sets, Mapping) else len(sets)
                raise ValueError(f"{b} {what} but {got} {name[:-1]} sets")
            kinds = [type(m).__name__ for m in sets if not isinstance(m, Mapping | None)]
            if kinds:
                raise ValueError(
                    f"{name}: a {{phrase: ...}} mapping or None per image, got {kinds}"
                )
        for caption, per in zip(captions, masks or [], strict=False):
            for phrase, mask in (per or {}).items():
                _phrase_span(caption, phrase)
                _mask_plane(mask)

    def encode_prompt(self, captions: Sequence[str]) -> Tensor:
        """Context ``(B, caption_length, width)`` of ``captions``."""
        return encode_captions(
            self.tokenizer, self.text_encoder, captions, self.config.caption_length
        )

    def prepare_edit(
        self,
        l: Tensor,
        captions: Sequence[str],
        masks: Sequence[Mapping[str, Any] | None] | None = None,
        prompts: Sequence[Mapping[str, Any] | None] | None = None,
        segmenter: Any = None,
        auto_masks: bool = False,
        attention_maps: bool = False,
        step_size: float = DEFAULT_EDIT_STEP_SIZE,
        track_mass: bool = False,
    ) -> tuple[AttentionEdit | None, list[list[str]]]:
        """Algorithm 1's edit (``λ = step_size``, on ``l``'s device) of ``masks`` (per image
        ``{phrase: mask}``), or of the masks ``segmenter`` finds from ``prompts``; with
        ``auto_masks``, of every colour word, its masks to be estimated; with ``attention_maps``,
        every colour word observed, not edited. Returns the edit (``None``: nothing to edit or
        observe) and each caption's colour words (``[]`` without ``auto_masks`` or
        ``attention_maps``)."""
        size = (l.shape[-2], l.shape[-1])
        latent = (size[0] // self.vae_scale_factor, size[1] // self.vae_scale_factor)
        if prompts is not None:
            masks = [segmenter(l[i], p) if p else None for i, p in enumerate(prompts)]
        if masks is not None:
            edit, words = self._edit(captions, masks, size, latent, step_size), []
        elif auto_masks or attention_maps:
            step_size = 0.0 if attention_maps else step_size
            edit, words = self._auto_edit(captions, size, latent, step_size)
        else:
            return None, []
        if edit is not None:
            edit.masks = edit.masks.to(l.device)
            edit.track_mass = track_mass
        return edit, words

    def _edit(
        self,
        captions: Sequence[str],
        masks: Sequence[Mapping[str, Any] | None],
        size: tuple[int, int],
        latent: tuple[int, int],
        step_size: float,
    ) -> AttentionEdit | None:
        """The edit of user masks ``{phrase: mask}`` per image."""
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

    def estimate_masks(
        self, edit: AttentionEdit, words: Sequence[Sequence[str]], segmenter, l: Tensor
    ) -> list[dict[str, Tensor]]:
        """Automatic masks: each colour word's observed attention peak prompts SAM; the masks
        become ``edit``'s, and are returned per image ``{word: mask}``."""
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

    def prepare_latents(
        self, batch_size: int, height: int, width: int, generator, device, dtype
    ) -> Tensor:
        """Initial latents of ``batch_size`` images ``height x width``, scaled to the scheduler's
        initial noise: each image's from its own generator (on the generator's device, so a CPU
        generator gives the same noise whatever device samples)."""
        f = self.vae_scale_factor
        shape = (batch_size, self.vae.config.latent_channels, height // f, width // f)
        if isinstance(generator, list | tuple):
            z = torch.stack(
                [torch.randn(shape[1:], generator=g, device=g.device) for g in generator]
            )
        elif generator is not None:
            z = torch.randn(shape, generator=generator, device=generator.device)
        else:
            z = torch.randn(shape)
        return z.to(device, dtype) * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator) -> dict[str, Any]:
        """The scheduler's ``step`` arguments beyond the model output: the generator of the
        stochastic ones."""
        if "generator" not in inspect.signature(self.scheduler.step).parameters:
            return {}
        return {"generator": list(generator) if isinstance(generator, tuple) else generator}

    def denoise_step(
        self,
        latents: Tensor,
        t: Tensor,
        context: Tensor,
        guidance_scale: float,
        edit: AttentionEdit | None = None,
        mode: EditMode | None = None,
        **extra: Any,
    ) -> Tensor:
        """One sampling step ``z_t -> z_{t-1}`` of ``latents`` ``(B, C, h, w)`` with
        ``context`` ``[conditional; unconditional]`` ``(2B, T, width)``.

        The noise is guided as ``ε_u + s (ε_c - ε_u)`` (classifier-free guidance, scale ``s``),
        both predictions from one UNet call on the batch ``[conditional; unconditional]``. With
        ``mode`` :attr:`EditMode.RECORD` this is Algorithm 1's step: a first pass on the
        conditional rows records each cross-attention layer's logits moved one BCE step toward
        ``edit``'s masks, and the guided pass applies them (``ε̂_t``);
        :attr:`EditMode.OBSERVE`: the guided pass adds the phrases' attention to ``edit``'s;
        ``None``: plain attention. ``extra``: the scheduler's :meth:`prepare_extra_step_kwargs`.
        """
        if mode is not None and edit is None:
            raise ValueError(f"{mode} needs an edit")
        x = self.scheduler.scale_model_input(latents, t)
        if edit is not None:
            edit.mode = mode
        if mode is EditMode.RECORD:
            self.unet(x, t, context[: x.shape[0]])
            edit.mode = EditMode.APPLY
        eps = self.unet(torch.cat((x, x)), t, context)
        if edit is not None:  # nothing recorded carries over to the next step
            edit.mode, edit.edited = None, {}
        cond, uncond = eps.chunk(2)
        eps = uncond + guidance_scale * (cond - uncond)
        return self.scheduler.step(eps, t, latents, **extra).prev_sample

    def decode_latents(self, latents: Tensor, features: Sequence[Tensor], l: Tensor) -> Tensor:
        """RGB ``(B, 3, H, W)`` in ``[0, 1]``: ``latents`` decoded with the luminance-guided
        decoder and the luminance ``features`` (``lic``, §3.2; else the VAE's own decoder),
        their colours joined with the lightness ``l``."""
        autoencoder, z = self.autoencoder, latents.to(self.vae.dtype)
        if self.config.lic:
            decoded = autoencoder.decode(z, features)
        else:
            decoded = self.vae.decode(z / autoencoder.scaling_factor).sample
        rgb = ((decoded.float() + 1) / 2).clamp(0, 1)
        return recombine(l, rgb_to_l_ab(rgb)[1]).clamp(0, 1)

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self, image: Any, prompt: str | Sequence[str],
        masks: Sequence[Mapping[str, Any] | None] | None = None,
        prompts: Sequence[Mapping[str, Any] | None] | None = None,
        segmenter: Any = None, auto_masks: bool = False,
        num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        edit_step_size: float = DEFAULT_EDIT_STEP_SIZE, edit_steps: int | None = None,
        track_mass: bool = False, attention_maps: bool = False,
        output_type: str = "pt", return_dict: bool = True,
    ) -> LCADPipelineOutput | tuple:  # fmt: skip
        """Colorize ``image`` (:meth:`lightness`) with ``prompt`` (one caption, or one per image).

        Args:
            masks: per image ``{phrase: mask}``, instance-aware sampling (Algorithm 1): each phrase
                a part of the caption, each mask ``(H, W)`` in ``[0, 1]`` at any resolution.
            prompts, segmenter: per image ``{phrase: point, points or box}`` in pixels, the masks
                from SAM (:class:`lcad.segment.SamSegmenter`; also for ``auto_masks``).
            auto_masks: each colour word's mask from SAM prompted with its attention peak at the
                first step; the edit starts at the second.
            num_inference_steps, guidance_scale, generator: sampling steps, classifier-free
                guidance, one generator per image (reproducible per image) or one for the batch.
            edit_step_size, edit_steps: ``λ`` of Algorithm 1; edit the first ``edit_steps`` steps
                only (``None``: every step, as the paper).
            track_mass, attention_maps: return the output's ``mass``, ``attention``
                (:class:`LCADPipelineOutput`; attention maps are of plain sampling).
            output_type: ``"pt"``, ``"np"`` or ``"pil"``.
        """
        # 1. Check inputs
        l = self.lightness(image)
        self.check_inputs(l, prompt, masks, prompts, segmenter, auto_masks, num_inference_steps,
                          guidance_scale, generator, edit_step_size, edit_steps, attention_maps,
                          output_type)  # fmt: skip
        # 2. Call parameters; instance-aware sampling's edit (Algorithm 1)
        b, device, dtype = l.shape[0], self.unet.device, self.unet.dtype
        captions, l = ([prompt] * b if isinstance(prompt, str) else list(prompt)), l.to(device)
        edit, words = self.prepare_edit(l, captions, masks, prompts, segmenter, auto_masks,
                                        attention_maps, edit_step_size, track_mass)  # fmt: skip
        # 3. Luminance features and the context [conditional; unconditional]
        features = self.autoencoder.luminance_features(l)
        context = self.encode_prompt(captions + [""] * b).to(device, dtype)
        # 4. Timesteps, initial latents, the scheduler's extra arguments
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        z = self.prepare_latents(b, *l.shape[-2:], generator, device, dtype)
        extra = self.prepare_extra_step_kwargs(generator)
        # 5. Denoising loop
        estimated = None
        with self.unet.luminance(features[-1].to(dtype)), attention_edit(self.unet.unet, edit):
            for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
                mode = edit_mode(i, edit_steps, bool(words), attention_maps) if edit else None
                z = self.denoise_step(z, t, context, guidance_scale, edit, mode, **extra)
                if mode is EditMode.OBSERVE and not attention_maps:  # automatic masks
                    estimated = self.estimate_masks(edit, words, segmenter, l)
        # 6. Decode, keeping the input lightness
        images = _to_output_type(self.decode_latents(z, features, l), output_type)
        self.maybe_free_model_hooks()
        mass = edit.mass if edit is not None and track_mass else None
        attention = _normalised_maps(edit, words, b) if attention_maps else None
        out = LCADPipelineOutput(images=images, masks=estimated, mass=mass, attention=attention)
        return out if return_dict else (images,)


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
