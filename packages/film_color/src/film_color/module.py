"""``FilmColorModule``: training and evaluation of FCNN, CONCAT and FILM.

Manjunatha, Iyyer, Boyd-Graber, Davis, "Learning to Color from Language", NAACL 2018
(arXiv:1804.06026).


* Classes: the 25x25 ab grid, 625 labels (§2.2, :meth:`chromalab.bins.ABBins.grid`).
* Targets: one-hot (§2.2, "we use a one-hot encoding for the ab channels instead of soft
  targets"): the ground-truth ab is area-averaged to the network's output resolution (1/4 of
  the input, 56x56 for 224 inputs; footnote 2) and hard-encoded to its nearest bin.
* Loss: per-pixel cross-entropy weighted by the class-rebalancing weight of the target bin,
  "downweighted by a factor inversely proportional to its frequency in the training set".
  The weights come from the core (:func:`chromalab.rebalance.rebalance_weights`):
  ``w ∝ 1 / ((1 - lam) p~ + lam / Q)`` with ``p~`` the Gaussian-smoothed (sigma = 5) prior.
  ``lam = 0`` is the pure inverse frequency the paper states; it gives weights of order
  ``1 / p`` to bins seen a handful of times (and infinite ones to unseen bins of the 625-grid,
  most of which lie outside the sRGB gamut), which makes training unstable. We use CIC's
  ``lam = 1/2`` by default: still inverse to frequency for common colours, bounded by ``2Q``
  for rare ones. ``lam = 1`` turns rebalancing off. Beyond the paper, off by default:
  ``named_object_weight`` weighs the cells of the objects a CapShapes caption names more.
* Decoding: annealed mean (Zhang et al. 2016, Eq. 8) at ``temperature`` (default 0.38).
* Evaluation: top-1 / top-5 accuracy in the quantized ab space at the output resolution
  (:class:`chromalab.metrics.ABAccuracy`, Table 1) and, on CapShapes scenes, caption
  consistency and the caption-manipulation accuracy (§3.2, automated with
  :func:`chromalab.metrics.manipulate_batch`). Each scene's colour swap is drawn from a
  generator seeded by ``manipulation_seed`` and the scene's index, so the metric is the same
  for any batch size and any number of ranks.

The caption vocabulary is built from the training captions at the start of ``fit`` (LightningCLI
constructs the model before the data exist), or taken from the ``init_from`` checkpoint of the
same conditioning, and stored in the checkpoint with the class weights,
so ``FilmColorModule.load_from_checkpoint(path)`` rebuilds a ready model with no other file.

The network, the vocabulary and the optimizer are each one nested argument (``network``,
``vocabulary``, ``optimizer``; ``--model.network.width 0.25`` on the command line). Checkpoints
and weights folders of the earlier versions, which took their fields flat (``width``,
``min_count``, ``lr_step_size``, ...), still load (:data:`film_color.weights.FLAT_HPARAMS`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import IterableDataset

from chromalab.bins import ABBins
from chromalab.io import recombine
from chromalab.metrics import ABAccuracy
from chromalab.modules import (
    ClassRebalancing,
    SceneCaptionMetrics,
    StagedEvaluation,
    StepDecayAdam,
    adam_step_decay,
)
from chromalab.rebalance import pixel_weights
from chromalab.tasks import ColorizationTask, as_config
from cic.networks import OUTPUT_STRIDE
from film_color.language import Vocabulary, VocabularyConfig
from film_color.networks import GRID_SIZE, GRID_STEP, FilmNetworkConfig
from film_color.weights import (
    CHECKPOINT_KEY,
    FLAT_HPARAMS,
    film_network_state,
    init_from_cic,
    load_film_network,
    network_hparams,
    read_weights,
    trained_steps,
)

__all__ = [
    "CHECKPOINT_KEY",
    "DEFAULT_OPTIMIZER",
    "FilmColorModule",
    "downsample_ab",
    "output_grid_ab",
    "training_captions",
]

logger = logging.getLogger(__name__)

#: ``FilmColorModule``'s optimizer unless a config says otherwise (the paper states none): Adam
#: 1e-4, betas (0.9, 0.999), no weight decay, the rate divided by 10 every 100k steps.
DEFAULT_OPTIMIZER = StepDecayAdam(
    lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, step_size=100_000, gamma=0.1
)


def downsample_ab(ab: Tensor, size: Sequence[int]) -> Tensor:
    """Area-average ab ``(B, 2, H, W)`` (or any ``(B, C, H, W)`` map) to ``size`` (the
    network's output resolution)."""
    if tuple(ab.shape[2:]) == tuple(size):
        return ab
    return F.interpolate(ab.float(), size=tuple(size), mode="area")


def output_grid_ab(ab: Tensor) -> Tensor:
    """ab ``(B, 2, H, W)`` area-averaged to the network's output grid ``(H/4, W/4)``."""
    return downsample_ab(ab, (ab.shape[2] // OUTPUT_STRIDE, ab.shape[3] // OUTPUT_STRIDE))


def training_captions(dataset: Any, limit: int) -> Iterator[str]:
    """Captions of a training dataset, for the vocabulary.

    Datasets holding caption records (:class:`chromalab.data.CaptionedImageDataset`) give every
    caption of every image without reading images; other datasets give the captions of their
    first ``limit`` items (generated scenes, or a shard stream). A dataset whose items carry
    no ``caption`` gives nothing.
    """
    records = getattr(dataset, "records", None)
    if records is not None:
        for record in records:
            yield from record.captions
        return
    if isinstance(dataset, IterableDataset):
        items: Iterator[Any] = iter(dataset)
    else:
        items = (dataset[i] for i in range(min(len(dataset), limit)))
    for count, item in enumerate(items):
        if count >= limit:
            break
        if item is None:  # a skipped sample
            continue
        if "caption" not in item:  # a dataset without captions: stop at its first item
            return
        yield item["caption"]


class FilmColorModule(ClassRebalancing, SceneCaptionMetrics, StagedEvaluation, ColorizationTask):
    """Language-conditioned colorization (FCNN / CONCAT / FILM) as a LightningModule.

    Args:
        network: the network (:class:`film_color.networks.FilmNetworkConfig`): ``conditioning``
            (``"none"`` FCNN, ``"concat"`` Eq. 1, ``"film"`` Eq. 2-3), ``width`` (channel
            multiplier of the FCNN, 1.0 = the paper's), ``embedding_dim`` and ``hidden_size``
            of the caption encoder, and beyond the paper ``relative_maps`` (``K`` learned
            centroids whose relative coordinates follow every block) and
            ``input_normalization`` (``"paper"`` or ``"image"``: each grey image standardized;
            a ``film-color fit`` checkpoint given to ``init_from`` must have been trained with
            the same setting). Default: the paper's FILM. In a config file ``network:
            {conditioning: film, width: 0.25}``, on the command line
            ``--model.network.width 0.25``; fields not given keep their defaults.
        vocabulary: how the caption vocabulary is built at the start of ``fit`` and captions
            are cut (:class:`film_color.language.VocabularyConfig`: ``min_count``,
            ``max_vocab_size``, ``vocab_scan``, ``max_caption_length``).
        init_from: CIC weights for the convolutional layers (§3.1): a ``cic fit`` or
            ``film-color fit`` checkpoint, or the released ``colorization_release_v2-*.pth``
            (see :mod:`film_color.weights`). A ``film-color fit`` checkpoint of the same
            conditioning (``concat`` or ``film``) gives all its weights and its vocabulary: a
            trained model continues with a fresh optimizer and the learning-rate settings given
            here. Loaded at the start of ``fit`` only, and not into a model whose weights came
            from a checkpoint (``load_from_checkpoint``).
        lam: rebalancing mix (see the module documentation; 0 = pure inverse frequency,
            1 = no rebalancing).
        sigma: Gaussian smoothing of the prior, in ab units.
        prior: prior file from ``chromalab prior --bins grid``; without it the prior is
            estimated from the first ``prior_batches`` training batches (all ranks together).
        prior_batches: batches used to estimate the prior when no file is given.
        temperature: annealed-mean temperature for decoding.
        optimizer: Adam with step decay (:class:`chromalab.modules.StepDecayAdam`: ``lr``,
            ``betas``, ``weight_decay``, and the rate multiplied by ``gamma`` every
            ``step_size`` optimizer steps); default :data:`DEFAULT_OPTIMIZER` (1e-4,
            (0.9, 0.999), 0, x0.1 every 100k steps). A partial setting keeps the other
            defaults: ``optimizer: {lr: 1.0e-3}``, ``--model.optimizer.lr 1e-3``.
        relative_lr_scale: the attentions of ``network.relative_maps`` learn at
            ``relative_lr_scale * optimizer.lr`` (they start at zero, usually beside a trained
            network continued at a small rate). A training setting, kept beside ``optimizer``
            rather than in ``network``: it does not change the network that is built.
        named_object_weight: training only, beyond the paper (0, the default, is the paper's
            loss): output cells covered by objects the caption names weigh
            ``1 + named_object_weight * coverage`` times their rebalanced weight, ``coverage``
            the fraction of the cell they cover. The colour of a named object is what a caption
            decides; on scenes whose background fills most of the image, those cells are a
            small share of the loss. Needs batches with ``masks`` and ``mentioned``
            (CapShapes); other batches keep the paper's weights.
        manipulation_seed: seed of the colour swaps of the manipulation metric (each scene's
            swap is seeded by it and the scene's index).
        channels_last: run the image network in channels-last memory format (default: on, as
            in :class:`cic.module.CICModule`; same results up to float rounding, faster on CPU
            and GPU, most of all under ``trainer.precision: bf16-mixed``: see
            ``benchmarks/film_speed.py``).
    """

    #: the flat arguments of earlier versions, now fields of ``network``, ``vocabulary`` and
    #: ``optimizer``: their checkpoints and weights folders still load
    moved_hparams = FLAT_HPARAMS

    def __init__(
        self,
        network: FilmNetworkConfig = FilmNetworkConfig(),  # noqa: B008 (frozen)
        vocabulary: VocabularyConfig = VocabularyConfig(),  # noqa: B008 (frozen)
        init_from: str | None = None,
        lam: float = 0.5,
        sigma: float = 5.0,
        prior: str | None = None,
        prior_batches: int = 50,
        temperature: float = 0.38,
        optimizer: StepDecayAdam = DEFAULT_OPTIMIZER,
        relative_lr_scale: float = 1.0,
        manipulation_seed: int = 0,
        channels_last: bool = True,
        named_object_weight: float = 0.0,
    ):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if relative_lr_scale <= 0:
            raise ValueError(f"relative_lr_scale must be > 0, got {relative_lr_scale}")
        if named_object_weight < 0:
            raise ValueError(f"named_object_weight must be >= 0, got {named_object_weight}")
        super().__init__()  # completes and checks network, vocabulary and optimizer

    def configure_models(self) -> None:
        hp = self.hparams
        #: the network's configuration (``hparams.network`` as its dataclass)
        self.network_config = as_config(FilmNetworkConfig, hp.network)
        #: how the vocabulary is built and captions cut (``hparams.vocabulary``)
        self.vocabulary_config = as_config(VocabularyConfig, hp.vocabulary)
        self.bins = ABBins.grid(GRID_SIZE, GRID_STEP)
        self.network = self.network_config.build(num_classes=self.bins.num_bins)
        self._memory_format = torch.channels_last if hp.channels_last else torch.contiguous_format
        self.network.fcnn.to(memory_format=self._memory_format)
        self.register_buffer("class_weights", torch.ones(self.bins.num_bins))
        self.register_buffer("weights_ready", torch.tensor(hp.lam == 1.0))
        #: the caption vocabulary (built by ``fit`` from the training captions, checkpointed)
        self.vocabulary: Vocabulary | None = None
        #: side of the square images the model was trained on (set by ``fit``, checkpointed)
        self.input_size: int | None = None
        #: optimizer steps of the checkpoints this model continued through ``init_from``
        #: (checkpointed; :attr:`total_steps` adds this run's)
        self.steps_before = 0

    def configure_metrics(self) -> None:
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_accuracy": ABAccuracy(self.bins, (1, 5)) for stage in ("val", "test")}
            | self.scene_metrics()
        )

    # ------------------------------------------------------------------------- language
    @property
    def uses_captions(self) -> bool:
        return self.network.uses_captions

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Use ``vocabulary`` (creates the word embedding for its size)."""
        self.vocabulary = vocabulary
        self.network.set_vocab_size(len(vocabulary))

    def encode_captions(self, captions: Sequence[str] | None, batch: int) -> tuple[Tensor, Tensor]:
        """Token ids ``(B, T)`` and lengths ``(B,)`` of ``batch`` captions, on this device."""
        if self.vocabulary is None:
            raise RuntimeError(
                f"conditioning {self.network_config.conditioning!r} needs the caption "
                "vocabulary: fit the model first or load it from a checkpoint"
            )
        if captions is None:
            raise ValueError(f"conditioning {self.network_config.conditioning!r} needs captions")
        captions = list(captions)
        if len(captions) != batch:
            raise ValueError(f"{batch} images but {len(captions)} captions")
        tokens, lengths = self.vocabulary.encode(
            captions, self.vocabulary_config.max_caption_length
        )
        return tokens.to(self.device), lengths

    def caption_encoding(self, captions: Sequence[str] | None, batch: int) -> Tensor | None:
        """``h`` ``(B, dim(h))`` of ``batch`` captions; ``None`` for the FCNN, which ignores
        them."""
        if not self.uses_captions:
            return None
        return self.network.encode_caption(*self.encode_captions(captions, batch))

    # ------------------------------------------------------------------------- inference
    def forward(self, l: Tensor, captions: Sequence[str] | None = None) -> Tensor:
        """Class scores ``(B, 625, H/4, W/4)`` for lightness ``l`` ``(B, 1, H, W)`` in [0, 100].

        ``captions`` (``B`` strings) is required for CONCAT and FILM and ignored by the FCNN.
        """
        l = l.contiguous(memory_format=self._memory_format)
        return self.network.decode(l, self.caption_encoding(captions, l.shape[0]))

    def colorize(
        self, l: Tensor, captions: Sequence[str] | None = None, temperature: float | None = None
    ) -> Tensor:
        """Predicted ab ``(B, 2, H/4, W/4)`` by the annealed mean at ``temperature``."""
        t = self.hparams.temperature if temperature is None else temperature
        return self.bins.annealed_mean(self(l, captions).float(), t)

    def features(self, l: Tensor, captions: Sequence[str] | None = None) -> list[Tensor]:
        """The 8 block outputs after conditioning (after the FiLM layers for FILM)."""
        l = l.contiguous(memory_format=self._memory_format)
        return self.network.conditioned_features(l, self.caption_encoding(captions, l.shape[0]))

    # ------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            source = getattr(datamodule, "source", None)
            size = getattr(datamodule, "capshapes_size" if source == "capshapes" else "image_size")
            self.input_size = int(size) if size is not None else None
        super().setup(stage)  # init_from (load_initial_weights), unless restored
        if self.uses_captions and self.vocabulary is None:
            self.set_vocabulary(self._build_vocabulary(datamodule))

    def load_initial_weights(self) -> None:
        if self.hparams.init_from:
            self._initialise_from(Path(self.hparams.init_from))

    def _initialise_from(self, path: Path) -> None:
        """``init_from``: a checkpoint of this conditioning whole, else the CIC layers (§3.1)."""
        blob = read_weights(path)
        # the released CIC weights and older checkpoints were all trained on CIC's own input
        theirs = network_hparams(blob).get("input_normalization", "paper")
        ours = self.network_config.input_normalization
        if theirs != ours:
            raise ValueError(
                f"init_from {path} was trained with input_normalization {theirs!r}, this model "
                f"uses {ours!r}: its weights expect other inputs"
            )
        whole = film_network_state(blob, self.network_config.conditioning)
        if whole is None:
            init_from_cic(self.network.fcnn, path, self.bins, blob)
        else:
            state, tokens = whole
            self.set_vocabulary(Vocabulary(tokens))
            self.steps_before = trained_steps(blob)
            report = load_film_network(self.network, state, self.bins, str(path))
            logger.info(
                "initialised the whole network and vocabulary from %s (%d steps trained; %d "
                "convolutions widened with zero input channels)",
                path,
                self.steps_before,
                len(report.widened),
            )
        self.network.fcnn.to(memory_format=self._memory_format)  # widened weights are new

    def _build_vocabulary(self, datamodule: Any) -> Vocabulary:
        tokens = None
        if self.trainer.is_global_zero:
            dataset = getattr(datamodule, "train_dataset", None)
            if dataset is None:
                raise RuntimeError("no training dataset to build the caption vocabulary from")
            config = self.vocabulary_config
            vocab = config.build(training_captions(dataset, config.vocab_scan))
            if len(vocab) <= 2:
                raise ValueError(
                    f"the training data of {datamodule!r} has no caption words; conditioning "
                    f"{self.network_config.conditioning!r} needs captioned data (source "
                    "capshapes, captions or webdataset with captions)"
                )
            tokens = vocab.to_list()
            logger.info("caption vocabulary: %d tokens", len(tokens))
        tokens = self.trainer.strategy.broadcast(tokens, src=0)
        return Vocabulary(tokens)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "vocabulary": None if self.vocabulary is None else self.vocabulary.to_list(),
            "input_size": self.input_size,
            "steps_before": self.steps_before,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # marks the weights restored
        extras = checkpoint.get(CHECKPOINT_KEY, {})
        tokens = extras.get("vocabulary")
        if tokens is not None:
            self.set_vocabulary(Vocabulary(tokens))
        elif self.uses_captions:
            raise ValueError(
                f"checkpoint has no caption vocabulary (key {CHECKPOINT_KEY!r}) but conditioning "
                f"is {self.network_config.conditioning!r}"
            )
        self.input_size = extras.get("input_size")
        self.steps_before = int(extras.get("steps_before") or 0)

    @property
    def total_steps(self) -> int:
        """Optimizer steps behind the current weights, across ``init_from`` continuations."""
        return self.steps_before + self.global_step

    def on_fit_start(self) -> None:
        self.set_class_weights()

    def prior_targets(self, ab: Tensor) -> Tensor:
        return output_grid_ab(ab)

    # ------------------------------------------------------------------------- training
    def loss(self, logits: Tensor, ab: Tensor, scale: Tensor | None = None) -> Tensor:
        """Rebalanced one-hot cross-entropy (§2.2).

        ``mean_{b,i,j} w[q*] * -log softmax(logits)[q*]`` with ``q*`` the nearest bin of the
        ground truth ab ``(B, 2, H, W)`` area-averaged to the scores' ``(h, w)``; ``logits``
        ``(B, Q, h, w)``; ``scale`` ``(B, h, w)``, when given, multiplies ``w``. Returns a
        scalar.
        """
        target = self.bins.encode_hard(downsample_ab(ab, logits.shape[2:]))
        per_pixel = F.cross_entropy(logits.float(), target, reduction="none")
        weights = pixel_weights(self.class_weights, target)
        if scale is not None:
            weights = weights * scale
        return (per_pixel * weights).mean()

    def named_object_scale(self, batch: dict, size: Sequence[int]) -> Tensor | None:
        """``1 + named_object_weight * coverage`` on the output grid ``size`` (see
        ``named_object_weight``), or ``None`` when the option is off or the batch has no
        object masks."""
        weight = self.hparams.named_object_weight
        if weight == 0 or "masks" not in batch or "mentioned" not in batch:
            return None
        named = (batch["masks"] & batch["mentioned"][:, :, None, None]).any(1, keepdim=True)
        # the same area average that brings the targets to the grid: cells line up with them
        coverage = downsample_ab(named.float(), size).squeeze(1)
        return 1.0 + weight * coverage

    def training_step(self, batch: dict | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every sample of the batch was unreadable
            return None
        l = batch["l"].contiguous(memory_format=self._memory_format)
        h = self.caption_encoding(batch.get("caption"), l.shape[0])
        logits = self.network.decode(l, h)
        loss = self.loss(logits, batch["ab"], self.named_object_scale(batch, logits.shape[2:]))
        self.log("train/loss", loss, prog_bar=True, batch_size=l.shape[0])
        return loss

    def evaluate_batch(self, batch: dict, stage: str) -> None:
        logits = self(batch["l"], batch.get("caption"))
        size = batch["l"].shape[0]
        self.log(f"{stage}/loss", self.loss(logits, batch["ab"]), sync_dist=True, batch_size=size)
        self.metrics[f"{stage}_accuracy"].update(logits, batch["ab"])
        if "masks" in batch:
            shape = batch["ab"].shape[2:]
            self.update_scene_metrics(
                batch,
                self._upsampled_ab(logits, shape),
                lambda captions: self._upsampled_ab(self(batch["l"], captions), shape),
                stage,
            )

    def _upsampled_ab(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        ab = self.bins.annealed_mean(logits.float(), self.hparams.temperature)
        return F.interpolate(ab, size=tuple(size), mode="bilinear", align_corners=False)

    def log_stage_metrics(self, stage: str) -> None:
        accuracy = self.metrics[f"{stage}_accuracy"]
        if int(accuracy.total) == 0 and self.trainer.world_size == 1:
            return
        # three metrics of different inputs: not one MetricCollection, one log_dict each
        self.log_dict({f"{stage}/{k}": v for k, v in accuracy.compute().items()}, prog_bar=True)
        accuracy.reset()
        scenes = getattr(self.trainer.datamodule, "source", None) == "capshapes"
        scores = self.scene_scores(stage, scenes)
        if scores:
            self.log_dict({f"{stage}/{k}": v for k, v in scores.items()})

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        """``rgb``: the colorization at the input resolution (:func:`chromalab.io.recombine` of
        the input L and the upsampled ab); ``ab``: the prediction at the network's 1/4."""
        ab = self.colorize(batch["l"], batch.get("caption"))
        return {"rgb": recombine(batch["l"], ab), "ab": ab}

    def configure_optimizers(self):
        """Adam with step decay (:func:`chromalab.modules.adam_step_decay`, the ``optimizer``
        settings); the relative-map attentions in a group of their own at
        ``relative_lr_scale * optimizer.lr`` when that is not 1."""
        settings = as_config(StepDecayAdam, self.hparams.optimizer)
        relative = self.network.relative
        scale = self.hparams.relative_lr_scale
        if relative is None or scale == 1.0:
            return adam_step_decay(self.network.parameters(), settings)
        own = {id(p) for p in relative.parameters()}
        rest = [p for p in self.network.parameters() if id(p) not in own]
        groups = [
            {"params": rest},
            {"params": list(relative.parameters()), "lr": settings.lr * scale},
        ]
        return adam_step_decay(groups, settings)
