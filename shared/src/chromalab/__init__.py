"""chromalab: the shared core of the chromalab colorization monorepo.

Submodules: :mod:`chromalab.color` (colour spaces, normalization), :mod:`chromalab.bins`
(quantized ab space, soft-encoding, decoding), :mod:`chromalab.rebalance` (class
rebalancing), :mod:`chromalab.metrics`, :mod:`chromalab.io` (robust image I/O),
:mod:`chromalab.text` (colour lexicon, captions), :mod:`chromalab.data` (datasets and the
data module), :mod:`chromalab.training` (what the packages' Lightning commands share) and
:mod:`chromalab.cli` (the ``chromalab`` command).
"""

__version__ = "0.1.0"
