"""Tiny film_color components for CPU tests, one factory per kind (the diffusers
``get_dummy_components`` habit): tests change only what they are about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from film_color.language import Vocabulary
from film_color.module import FilmColorModule
from film_color.networks import FilmColorNetwork

CONFIGS = Path(__file__).resolve().parents[2] / "packages" / "film_color" / "configs"
#: the tiny CLI config (32x32 scenes, 2 steps)
TINY_CONFIG = str(CONFIGS / "tiny.yaml")

#: sizes of a tiny network: width 1/8 (8-64 channels), 4-d words, 3-d LSTM states (dim(h) = 6)
NETWORK = {"width": 0.125, "embedding_dim": 4, "hidden_size": 3}
#: words of the tiny vocabulary (ids 0..VOCAB_SIZE-1)
VOCAB_SIZE = 6


def tiny_network(conditioning: str = "film", **overrides: Any) -> FilmColorNetwork:
    """A :class:`FilmColorNetwork` of :data:`NETWORK` sizes, its vocabulary set."""
    kwargs = {**NETWORK, "vocab_size": VOCAB_SIZE, **overrides}
    return FilmColorNetwork(conditioning=conditioning, **kwargs)


def tiny_module(
    conditioning: str = "film",
    vocab_size: int = 12,
    network: dict[str, Any] | None = None,
    **overrides: Any,
):
    """A :class:`FilmColorModule` of tiny sizes whose network has a ``vocab_size`` embedding;
    ``network``: fields of the network's configuration over the tiny ones."""
    sizes = {"conditioning": conditioning, "width": 0.125, "embedding_dim": 8, "hidden_size": 8}
    kwargs = {"optimizer": {"lr": 1e-3}, **overrides}
    module = FilmColorModule(network={**sizes, **(network or {})}, **kwargs)
    module.network.set_vocab_size(vocab_size)
    return module


def tiny_vocabulary() -> Vocabulary:
    """A 6-word vocabulary: padding, unknown, "a", "red", "blue", "circle"."""
    return Vocabulary(["<pad>", "<unk>", "a", "red", "blue", "circle"])
