"""L-CAD (Chang et al., NeurIPS 2023, arXiv:2305.15217) on the chromalab core and diffusers:
language-based colorization with any-level descriptions using a Stable Diffusion prior.

The pipeline's own model classes are exported here: diffusers finds a saved
:class:`~lcad.pipeline.LCADPipeline`'s components by this package's name."""

from lcad.cec import LuminanceUNet
from lcad.compression import LuminanceEncoder
from lcad.pipeline import LCADPipeline

__all__ = ["LCADPipeline", "LuminanceEncoder", "LuminanceUNet"]
