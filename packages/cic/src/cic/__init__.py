"""cic: Colorful Image Colorization (Zhang, Isola, Efros, ECCV 2016) on the chromalab core.

* :class:`~cic.networks.CICNetwork` — the 8-block network of §3.4;
* :class:`~cic.module.CICModule` — training (Eq. 3, 5-6) and evaluation (AuC CMF, §4.1);
* :class:`~cic.datamodule.CICDataModule` — the shared data module with CIC's defaults;
* :func:`~cic.weights.load_released` — the authors' released PyTorch weights;
* the ``cic`` command (LightningCLI: fit / validate / test / predict).
"""

from cic.datamodule import CICDataModule
from cic.module import CICModule
from cic.networks import CICNetwork

__all__ = ["CICDataModule", "CICModule", "CICNetwork"]
__version__ = "0.1.0"
