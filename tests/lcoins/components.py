"""Tiny L-CoIns parts for CPU tests: a 1-block ViT and a 1-layer random BERT with the real
MiniLM WordPiece vocabulary (offline)."""

from __future__ import annotations

from lcoins.cli import CONFIGS
from lcoins.encoders import EMBEDDED_TEXT_ENCODER, TextEncoder, build_vit
from lcoins.networks import LCoInsNetwork

TINY_CONFIG = str(CONFIGS / "tiny.yaml")
TEXT_OPTIONS = {
    "num_hidden_layers": 1,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}
IMAGE_OPTIONS = {"patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2}


def tiny_network(size: int = 32, frozen_text: bool = False, **options) -> LCoInsNetwork:
    """An :class:`LCoInsNetwork` of width 16 for ``size`` x ``size`` inputs (patch 8)."""
    settings = {"width": 16, "depth": 2, "heads": 2, "groups": 3, "counter_dim": 8} | options
    return LCoInsNetwork(
        image_encoder=build_vit("vit_tiny_patch16_224", size, IMAGE_OPTIONS),
        text_encoder=TextEncoder(EMBEDDED_TEXT_ENCODER, 16, TEXT_OPTIONS, frozen=frozen_text),
        **settings,
    )
