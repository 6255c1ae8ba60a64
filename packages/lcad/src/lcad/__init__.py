"""L-CAD (Chang et al., NeurIPS 2023, arXiv:2310.15277) on the chromalab core and diffusers:
language-based colorization with any-level descriptions using a Stable Diffusion prior."""
