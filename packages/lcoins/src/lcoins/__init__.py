"""lcoins: L-CoIns, Language-based Colorization with Instance Awareness (Chang, Weng, Zhang, Li,
Li, Shi, CVPR 2023) on chromalab.

* :class:`~lcoins.networks.LCoInsNetwork` — ViT image tokens, BERT language tokens, learnable
  group tokens with modal-type embeddings (§3.3), the grouping transformer (§3.4, Eq. 4-9),
  the upsampler (§3.5, Eq. 10) and the grouping layer (§3.6, Eq. 11-12);
* :mod:`~lcoins.losses` — smooth-ℓ1 and the counter-colour loss (§3.7, Eq. 13-16);
* :class:`~lcoins.module.LCoInsModule` — training with the luminance augmentation (§3.2,
  :mod:`chromalab.augment`), evaluation with PSNR, SSIM, LPIPS and caption metrics;
* :class:`~lcoins.datamodule.LCoInsDataModule` — 224 inputs, batch 64;
* the ``lcoins`` command (LightningCLI fit / validate / test / predict, and ``explain``).
"""

from lcoins.datamodule import LCoInsDataModule
from lcoins.module import LCoInsModule
from lcoins.networks import LCoInsNetwork, LCoInsOutput

__all__ = ["LCoInsDataModule", "LCoInsModule", "LCoInsNetwork", "LCoInsOutput"]
__version__ = "0.1.0"
