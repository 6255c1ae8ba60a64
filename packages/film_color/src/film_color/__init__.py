"""film_color: Learning to Color from Language (Manjunatha et al., NAACL 2018) on chromalab.

* :class:`~film_color.networks.FilmColorNetwork` — FCNN (CIC network, 625 classes), CONCAT
  (Eq. 1) and FILM (Eq. 2-3) conditioning on a bidirectional-LSTM caption encoding (§2.3);
* :class:`~film_color.module.FilmColorModule` — rebalanced one-hot training (§2.2) and
  evaluation (acc@1/acc@5, caption consistency and manipulation on CapShapes); its ``network``
  and ``vocabulary`` arguments are :class:`~film_color.networks.FilmNetworkConfig` and
  :class:`~film_color.language.VocabularyConfig`;
* :class:`~film_color.datamodule.FilmColorDataModule` — 224 inputs, 56x56 outputs;
* :func:`~film_color.weights.init_from_cic` — initialisation from a CIC network (§3.1);
* the ``film-color`` command (LightningCLI fit / validate / test / predict, and ``explain``).
"""

from film_color.datamodule import FilmColorDataModule
from film_color.language import CaptionEncoder, Vocabulary, VocabularyConfig
from film_color.module import FilmColorModule
from film_color.networks import FiLM, FilmColorNetwork, FilmNetworkConfig

__all__ = [
    "CaptionEncoder",
    "FiLM",
    "FilmColorDataModule",
    "FilmColorModule",
    "FilmColorNetwork",
    "FilmNetworkConfig",
    "Vocabulary",
    "VocabularyConfig",
]
__version__ = "0.1.0"
