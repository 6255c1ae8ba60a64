"""chromalab: the shared core of the chromalab colorization monorepo.

Submodules: :mod:`chromalab.color` (colour spaces, normalization), :mod:`chromalab.bins`
(quantized ab space, soft-encoding, decoding), :mod:`chromalab.rebalance` (class
rebalancing), :mod:`chromalab.metrics`, :mod:`chromalab.io` (robust image I/O),
:mod:`chromalab.text` (colour lexicon, captions), :mod:`chromalab.data` (datasets and the
data module), :mod:`chromalab.training` (what the packages' Lightning commands share),
:mod:`chromalab.inference` (colorize photos with any installed model; ``chromalab.colorize(...)``)
and :mod:`chromalab.cli` (the ``chromalab`` command).
"""

from typing import Any

__version__ = "0.1.0"


def colorize(*args: Any, **kwargs: Any) -> Any:
    """:func:`chromalab.inference.colorize`: colorize images in memory with an installed model
    (imported on first use, so ``import chromalab`` stays light)."""
    from chromalab.inference import colorize as run

    return run(*args, **kwargs)
