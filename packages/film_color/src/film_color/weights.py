"""Initialising FCNN / CONCAT / FILM from a trained CIC network (Manjunatha et al. 2018, §3.1).

"For our final models, we initialize all convolutional layers with a FCNN pretrained on
ImageNet; we finetune both FILM and CONCAT's convolutional weights during training."

Sources accepted by :func:`init_from_cic`:

* a Lightning checkpoint of ``cic fit`` (keys ``network.*``, bin centres ``bins.centers``);
* a Lightning checkpoint of ``film-color fit`` (keys ``network.fcnn.*``), e.g. a trained FCNN;
* the authors' released CIC weights (``colorization_release_v2-*.pth``), read with
  :func:`cic.weights.load_released`;
* a ``save_pretrained`` folder of a ``FilmColorModule`` (``config.json``, ``model.safetensors``,
  ``chromalab_state.json``; :func:`publish` writes one from a checkpoint), read by
  :func:`read_weights` as if it were a slim checkpoint.

Transfer rules, applied to every tensor of the target :class:`~cic.networks.CICNetwork`:

* same shape: copied;
* CONCAT's widened input convolutions (blocks 2-8, and the readout): the source weights fill
  the image channels and the ``dim(h)`` new input channels are set to zero, so the widened
  network computes what the source did until training moves them;
* the 1x1 readout: copied only when the source predicts over the same bin table (a CIC model
  trained with ``bins="grid"``); otherwise (CIC's 313 in-gamut classes vs our 625) it keeps its
  fresh initialisation and is reported as skipped;
* anything else that does not fit (another width, a missing block) raises ``ValueError`` naming
  the tensor and both shapes.

Checkpoints and weights folders of every version are read: the flat hyper-parameters of the
versions before :class:`~film_color.module.FilmColorModule` took nested ``network``,
``vocabulary`` and ``optimizer`` arguments are brought to today's form by
:func:`nested_hparams` (:data:`FLAT_HPARAMS`).

A ``film-color fit`` checkpoint of a caption-conditioned model with the *same* conditioning is
taken whole instead (:func:`film_network_state`): every network weight (convolutions, readout,
caption encoder, FiLM/CONCAT layers) and the vocabulary. That is how a run goes on with a new
optimizer or learning-rate schedule, which ``--ckpt_path`` (an exact resume) does not allow
(:func:`load_film_network`). Its convolutions follow the rules above, so a model that adds the
relative maps of :mod:`film_color.networks` continues one without them, the new input channels
at zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chromalab.bins import ABBins
from chromalab.hub import STATE_FILE, is_hub_folder
from chromalab.modules import FLAT_OPTIMIZER_HPARAMS
from chromalab.tasks import as_config, nest_flat_hparams
from cic.networks import CICNetwork
from film_color.networks import FilmNetworkConfig

__all__ = [
    "CHECKPOINT_KEY",
    "FLAT_HPARAMS",
    "TransferReport",
    "init_from_cic",
    "film_network_state",
    "load_film_network",
    "load_cic_state",
    "load_trained",
    "nested_hparams",
    "network_hparams",
    "publish",
    "read_weights",
    "slim_checkpoint",
    "trained_scene_size",
    "trained_steps",
    "transfer_cic_weights",
]

logger = logging.getLogger(__name__)

#: Key of the film_color extras (vocabulary, input size, steps before init_from) in a Lightning
#: checkpoint.
CHECKPOINT_KEY = "film_color"

#: Parts of a Lightning checkpoint that only an exact resume (``--ckpt_path``) reads: what
#: Lightning's ``save_weights_only`` leaves out. They are two thirds of a ``film-color fit``
#: checkpoint (Adam keeps two moments per weight).
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers", "callbacks")

#: The fields of ``network`` and ``vocabulary`` that ``FilmColorModule`` took flat before them.
_FLAT_NETWORK = ("conditioning", "width", "embedding_dim", "hidden_size", "relative_maps",
                 "input_normalization")  # fmt: skip
_FLAT_VOCABULARY = ("min_count", "max_vocab_size", "vocab_scan", "max_caption_length")
#: Where the flat hyper-parameters of ``FilmColorModule`` before its nested configurations went:
#: flat name -> (argument, field) (:attr:`film_color.module.FilmColorModule.moved_hparams`).
FLAT_HPARAMS: dict[str, tuple[str, str]] = {
    **{name: ("network", name) for name in _FLAT_NETWORK},
    **{name: ("vocabulary", name) for name in _FLAT_VOCABULARY},
    **FLAT_OPTIMIZER_HPARAMS,  # lr, betas, weight_decay; lr_step_size, lr_gamma renamed
}


def nested_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``FilmColorModule`` hyper-parameters (a checkpoint's, a ``config.json``) in today's
    form: the flat ones of earlier versions (:data:`FLAT_HPARAMS`) put into ``network``,
    ``vocabulary`` and ``optimizer`` (``lr_step_size`` and ``lr_gamma`` become
    ``optimizer.step_size`` and ``optimizer.gamma``); nested ones come back unchanged.

    >>> nested_hparams({"conditioning": "film", "width": 0.25, "lr_gamma": 0.3, "lam": 0.5})
    {'lam': 0.5, 'network': {'conditioning': 'film', 'width': 0.25}, 'optimizer': {'gamma': 0.3}}
    """
    return nest_flat_hparams(hparams, FLAT_HPARAMS)


def network_hparams(blob: Mapping[str, Any]) -> dict[str, Any]:
    """The ``network`` hyper-parameters of the weights ``blob`` (:func:`read_weights`): of a
    ``film-color fit`` checkpoint or weights folder of any version, every field of
    :class:`~film_color.networks.FilmNetworkConfig` (those a ``config.json`` leaves out at
    their defaults); of a ``cic fit`` checkpoint, its ``width``; of the released CIC weights,
    ``{}``."""
    hparams = blob.get("hyper_parameters") or {}
    network = nested_hparams(hparams).get("network") or {}
    if "network" in hparams or "conditioning" in hparams:  # a FilmColorModule's
        return asdict(as_config(FilmNetworkConfig, network))
    return dict(network)


@dataclass
class TransferReport:
    """What :func:`transfer_cic_weights` did, by target key."""

    copied: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_weights(path: str | Path) -> dict:
    """The dictionary saved in ``path`` (a Lightning checkpoint or a bare ``state_dict``), on
    the CPU; read once and handed to the functions below. A ``save_pretrained`` folder reads as
    a slim checkpoint (``state_dict``, ``hyper_parameters``, the film_color extras), without
    unpickling anything."""
    path = Path(path)
    if is_hub_folder(path):
        return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CIC weights not found: {path} (a cic/film-color checkpoint or the released .pth; "
            "chromalab never downloads weights)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise ValueError(
            f"{path}: expected a checkpoint or a state_dict, got {type(blob).__name__}"
        )
    return blob


def _read_folder(folder: Path) -> dict:
    import json

    from huggingface_hub import constants
    from safetensors.torch import load_file

    state_file = folder / STATE_FILE
    extras = json.loads(state_file.read_text()) if state_file.is_file() else {}
    return {
        "state_dict": load_file(folder / constants.SAFETENSORS_SINGLE_FILE, device="cpu"),
        "hyper_parameters": json.loads((folder / constants.CONFIG_NAME).read_text()),
        "global_step": 0,
        **extras,
    }


def load_trained(path: str | Path, device: str = "cpu"):
    """A trained :class:`~film_color.module.FilmColorModule` (eval mode) from a ``film-color
    fit`` checkpoint or a ``save_pretrained`` folder."""
    from film_color.module import FilmColorModule

    if is_hub_folder(path):
        return FilmColorModule.from_pretrained(str(path), map_location=device).eval()
    if not Path(path).is_file():
        raise FileNotFoundError(f"no film-color checkpoint or weights folder at {path}")
    return FilmColorModule.load_from_checkpoint(path, map_location=device).eval()


def publish(ckpt: str | Path, folder: str | Path) -> Path:
    """Write the weights of the checkpoint ``ckpt`` as a ``save_pretrained`` folder (safetensors
    and JSON, no pickle) that records every optimizer step behind them (:func:`trained_steps`)
    and the scene size they were trained on."""
    module = load_trained(ckpt)
    module.steps_before = trained_steps(read_weights(ckpt))
    folder = Path(folder)
    module.save_pretrained(folder)
    h = module.network_config
    (folder / "README.md").write_text(
        "---\nlibrary_name: chromalab\ntags: [colorization, chromalab, film_color]\n---\n\n"
        'A FILM colorization network (Manjunatha, Iyyer, Boyd-Graber and Davis, "Learning to '
        f'Color from Language", NAACL 2018, arXiv:1804.06026), conditioning {h.conditioning}, '
        f"width {h.width}, trained for {module.steps_before} steps on {module.input_size}-pixel "
        "scenes. Load it with `film_color.weights.load_trained(folder)` or "
        "`FilmColorModule.from_pretrained(folder)`; colorize with `chromalab colorize --model "
        "film_color --weights FOLDER --caption ...`.\n"
    )
    return folder


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the checkpoint ``src`` to ``dst`` without its optimizer, scheduler and callback
    state (:data:`TRAINING_STATE_KEYS`), e.g. to publish trained weights.

    The result still rebuilds the model (``FilmColorModule.load_from_checkpoint``), is read by
    :func:`read_weights`, ``init_from`` (a continuation with a fresh optimizer, which keeps
    counting the steps behind the weights) and ``film-color validate/test/predict
    --ckpt_path``; it cannot resume a run exactly (``fit --ckpt_path``).
    """
    blob = read_weights(src)
    if "state_dict" not in blob or "hyper_parameters" not in blob:
        raise ValueError(f"{src}: not a Lightning checkpoint (no state_dict / hyper_parameters)")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in blob.items() if k not in TRAINING_STATE_KEYS}, dst)
    return dst


def film_network_state(blob: dict, conditioning: str) -> tuple[dict[str, Tensor], list[str]] | None:
    """The whole :class:`~film_color.networks.FilmColorNetwork` state and the vocabulary of a
    ``film-color fit`` checkpoint (:func:`read_weights`) whose model uses ``conditioning``
    (``concat`` or ``film``).

    Returns:
        ``(state, vocabulary tokens)``, or ``None`` when ``blob`` is anything else (another
        conditioning, an FCNN, a ``cic`` checkpoint, the released weights): those give only
        their convolutional layers, through :func:`init_from_cic`.
    """
    extras = blob.get(CHECKPOINT_KEY)
    if (
        conditioning == "none"
        or "state_dict" not in blob
        or not isinstance(extras, dict)
        or extras.get("vocabulary") is None
        or network_hparams(blob).get("conditioning") != conditioning
    ):
        return None
    prefix = "network."
    state = {k[len(prefix) :]: v for k, v in blob["state_dict"].items() if k.startswith(prefix)}
    return state, list(extras["vocabulary"])


def trained_steps(blob: dict) -> int:
    """Optimizer steps behind the weights of a ``film-color fit`` checkpoint (:func:`read_weights`):
    its own ``global_step`` plus those of the checkpoints it continued through ``init_from``
    (:func:`film_network_state`), which restarts the step counter. 0 for other weights."""
    extras = blob.get(CHECKPOINT_KEY)
    before = extras.get("steps_before") if isinstance(extras, dict) else None
    return int(blob.get("global_step", 0)) + int(before or 0)


def trained_scene_size(blob: dict) -> int | None:
    """Side of the images a ``film-color fit`` checkpoint was trained on (:func:`read_weights`),
    the CapShapes scene size for CapShapes: the ``input_size`` its module recorded
    (:attr:`film_color.module.FilmColorModule.input_size`), ``None`` when it has none."""
    extras = blob.get(CHECKPOINT_KEY)
    size = extras.get("input_size") if isinstance(extras, dict) else None
    return None if size is None else int(size)


def load_cic_state(
    path: str | Path, blob: dict | None = None
) -> tuple[dict[str, Tensor], Tensor | None]:
    """The CIC network ``state_dict`` (``CICNetwork`` key names) and bin centres of ``path``.

    ``blob``: the file's contents when already read (:func:`read_weights`).

    Returns:
        ``(state, centers)``; ``centers`` ``(Q, 2)`` is ``None`` when the file has none.
    """
    path = Path(path)
    blob = read_weights(path) if blob is None else blob
    if "state_dict" in blob:
        full = blob["state_dict"]
        prefix = "network.fcnn." if any(k.startswith("network.fcnn.") for k in full) else "network."
        state = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path}: checkpoint has no CIC network weights ('{prefix}*' keys)")
        return state, full.get("bins.centers")
    if "model_out.weight" in blob:
        from cic.weights import load_released

        network, bins = load_released(path)
        return network.state_dict(), bins.centers
    raise ValueError(
        f"{path}: neither a Lightning checkpoint ('state_dict') nor a released CIC state_dict "
        "('model_out.weight')"
    )


def _input_dims(network: CICNetwork) -> dict[str, int]:
    """``{weight key: input-channel dimension}`` of every convolution of ``network``."""
    dims = {}
    for name, module in network.named_modules():
        if isinstance(module, nn.ConvTranspose2d):
            dims[f"{name}.weight"] = 0
        elif isinstance(module, nn.Conv2d):
            dims[f"{name}.weight"] = 1
    return dims


def _same_bins(centers: Tensor | None, bins: ABBins) -> bool:
    return (
        centers is not None
        and centers.shape == bins.centers.shape
        and torch.allclose(centers.float().cpu(), bins.centers.cpu(), atol=1e-4)
    )


def transfer_cic_weights(
    target: CICNetwork,
    state: dict[str, Tensor],
    centers: Tensor | None,
    bins: ABBins,
    source: str = "source",
) -> TransferReport:
    """Copy a CIC ``state`` into ``target`` following the rules of this module.

    Args:
        target: the FCNN of a :class:`~film_color.networks.FilmColorNetwork` (possibly widened
            for CONCAT).
        state: source ``state_dict`` with ``CICNetwork`` key names.
        centers: the source's ``(Q, 2)`` bin centres, or ``None`` if unknown.
        bins: the target's bin table (decides whether the readout can be copied).
        source: name used in error messages.
    """
    report = TransferReport()
    own = target.state_dict()
    dims = _input_dims(target)
    readout_fits = _same_bins(centers, bins)
    missing = sorted(k for k in own if k not in state and not k.startswith("readout."))
    if missing:
        raise ValueError(f"{source}: CIC weights lack {missing[:8]}")
    new_state = {}
    for key, tensor in own.items():
        if key.startswith("readout.") and (not readout_fits or key not in state):
            report.skipped.append(key)
            continue
        value = state[key].to(tensor.dtype)
        if value.shape == tensor.shape:
            new_state[key] = value
            report.copied.append(key)
            continue
        dim = dims.get(key)
        expected = list(tensor.shape)
        if dim is not None and value.dim() == tensor.dim():
            expected[dim] = value.shape[dim]
        if dim is None or list(value.shape) != expected or value.shape[dim] > tensor.shape[dim]:
            raise ValueError(
                f"{source}: '{key}' has shape {tuple(value.shape)}, this model needs "
                f"{tuple(tensor.shape)} (same CIC width? width is set by model.network.width)"
            )
        widened = torch.zeros_like(tensor)
        widened.narrow(dim, 0, value.shape[dim]).copy_(value)
        new_state[key] = widened
        report.widened.append(key)
    target.load_state_dict(new_state, strict=False)
    return report


def init_from_cic(
    target: CICNetwork, path: str | Path, bins: ABBins, blob: dict | None = None
) -> TransferReport:
    """Initialise ``target`` from the CIC weights in ``path`` (see :func:`load_cic_state`;
    ``blob``: the file's contents when already read)."""
    state, centers = load_cic_state(path, blob)
    report = transfer_cic_weights(target, state, centers, bins, source=str(path))
    logger.info(
        "initialised the FCNN from %s: %d copied, %d widened (zero language channels), "
        "%d skipped (%s)",
        path,
        len(report.copied),
        len(report.widened),
        len(report.skipped),
        ", ".join(report.skipped) or "-",
    )
    return report


def load_film_network(
    network: nn.Module, state: dict[str, Tensor], bins: ABBins, source: str = "source"
) -> TransferReport:
    """Load the whole-network ``state`` of :func:`film_network_state` into ``network`` (a
    :class:`~film_color.networks.FilmColorNetwork` of the same conditioning and sizes).

    The FCNN goes through :func:`transfer_cic_weights` (same bins, so the readout is copied;
    input channels the source lacks, i.e. relative maps, start at zero); the caption encoder
    and the FiLM/CONCAT layers must match exactly; relative-map attentions the source lacks keep
    their initial zeros. Raises ``ValueError`` on any mismatch.
    """
    prefix = "fcnn."
    fcnn_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    report = transfer_cic_weights(network.fcnn, fcnn_state, bins.centers, bins, source)
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    try:
        result = network.load_state_dict(rest, strict=False)
    except RuntimeError as err:
        raise ValueError(
            f"{source}: a checkpoint of another size than this model (network.width, "
            f"embedding_dim, hidden_size must match): {err}"
        ) from None
    # relative maps a source lacks keep their zero attention: uniform, centroid at the centre
    missing = [k for k in result.missing_keys if not k.startswith((prefix, "relative."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source}: the checkpoint's network does not fit this model: missing "
            f"{missing[:8]}, unexpected {result.unexpected_keys[:8]}"
        )
    return report
