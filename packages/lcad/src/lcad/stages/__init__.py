"""L-CAD's LightningModules, one file per training stage.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

* :class:`LCADAutoencoderModule` (stage 0, not in the paper; :mod:`lcad.stages.autoencoder`): a
  VAE trained from scratch for the CPU configurations, where no Stable Diffusion weights exist.
* :class:`LCADCompressionModule` (stage 1, §3.2; :mod:`lcad.stages.compression`): the luminance
  encoder trained with Eq. 4 on a frozen VAE.
* :class:`LCADDiffusionModule` (stage 2, §3.3, §3.5; :mod:`lcad.stages.diffusion`): the
  channel-extended UNet trained with Eq. 6 on the frozen VAE, luminance encoder and text encoder.

Images are RGB in ``[0, 1]`` in batches (``rgb``, ``l`` in ``[0, 100]``, ``caption``) and
``[-1, 1]`` inside the models. Component settings (``vae``, ``unet``, ...) are folders or
constructor arguments (:mod:`lcad.components`). Each module stands on
:class:`chromalab.tasks.ColorizationTask`: pretrained weights and earlier stages' checkpoints are
loaded at the start of ``fit`` only, not into a restored model, so ``load_from_checkpoint``
needs no weight file.
"""

from lcad.pipeline import SamplingConfig
from lcad.stages.autoencoder import LCADAutoencoderModule
from lcad.stages.compression import DiscriminatorConfig, LCADCompressionModule
from lcad.stages.diffusion import LCADDiffusionModule

__all__ = [
    "DiscriminatorConfig",
    "LCADAutoencoderModule",
    "LCADCompressionModule",
    "LCADDiffusionModule",
    "SamplingConfig",
]
