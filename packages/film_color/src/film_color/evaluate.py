"""Evaluation of FCNN / CONCAT / FILM on CapShapes scenes, as in Table 1 and §3.2 of Manjunatha
et al., "Learning to Color from Language", NAACL 2018 (arXiv:1804.06026).

* :func:`evaluate` scores a checkpoint on the CapShapes validation or test scenes through the
  module's own metrics (Lightning's ``validate``/``test`` loop): acc@1/acc@5 over the 625 ab
  classes at the output grid, caption consistency, and caption-manipulation accuracy (every
  colour word of a caption swapped for another colour, objects judged against their new
  colours; each scene's swap is seeded by its index, so the figure does not depend on the batch
  size or the number of ranks).
* :func:`grid_ceiling`: the best caption consistency any model with this output grid can be
  measured at (:func:`chromalab.metrics.output_grid_ceiling`).
* :data:`PUBLISHED`: the published CapShapes FILM of a source checkout.

::

    python -m film_color.evaluate                  # the published model, 2048 test scenes
    python -m film_color.evaluate path/to.ckpt --split val --scenes 512
    python -m film_color.evaluate --options '{"min_objects": 2, "shared_noun_prob": 1.0}'
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl

from chromalab.bins import ABBins
from chromalab.hub import is_hub_folder
from chromalab.metrics import output_grid_ceiling
from cic.networks import OUTPUT_STRIDE
from film_color.datamodule import FilmColorDataModule
from film_color.networks import GRID_SIZE, GRID_STEP
from film_color.weights import load_trained, read_weights, trained_scene_size

__all__ = ["PUBLISHED", "evaluate", "grid_ceiling", "main", "scene_data"]

#: The published CapShapes FILM, a ``save_pretrained`` folder (in a source checkout; see the
#: package README).
PUBLISHED = Path(__file__).resolve().parents[4] / "benchmarks" / "weights" / "capshapes-film-v1"

Split = Literal["val", "test"]


def scene_data(
    scenes: int, size: int, batch_size: int = 64, options: Mapping[str, Any] | None = None
) -> FilmColorDataModule:
    """The CapShapes data module whose validation and test splits hold ``scenes`` scenes drawn
    at ``size`` pixels (the scenes are the same at every size, drawn at another resolution),
    with CapShapes ``options`` (e.g. ``{"min_objects": 2, "shared_noun_prob": 1.0}``)."""
    return FilmColorDataModule(
        source="capshapes",
        capshapes_size=size,
        image_size=size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        capshapes_val_length=scenes,
        capshapes_options=dict(options or {}),
    )


def evaluate(
    ckpt: str | Path,
    scenes: int = 512,
    split: Split = "val",
    size: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """The metrics of a ``film-color`` checkpoint (or ``save_pretrained`` folder) on ``scenes``
    CapShapes scenes of ``split``, drawn with CapShapes ``options`` (:func:`scene_data`).

    ``size`` is the side the scenes are drawn at; by default the one the checkpoint was trained
    on (:func:`film_color.weights.trained_scene_size`; 64 when it records none). Returns
    ``{"acc@1", "acc@5", "caption_consistency", "manipulation_accuracy", "loss", ...}`` as
    fractions.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if size is None:
        size = trained_scene_size(read_weights(ckpt)) or 64
    module = load_trained(ckpt)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = scene_data(scenes, size, batch_size, options)
    loop = trainer.validate if split == "val" else trainer.test
    (metrics,) = loop(module, datamodule=data, verbose=False)
    return {k.split("/", 1)[1]: float(v) for k, v in metrics.items()}


def grid_ceiling(scenes: int = 512, size: int = 64, batch_size: int = 64) -> float:
    """The best caption consistency a FCNN/CONCAT/FILM can be measured at on the validation
    scenes of :func:`evaluate` drawn at ``size``: the true colours seen through the networks'
    output grid (1/4 of the input, 625 classes; :func:`chromalab.metrics.output_grid_ceiling`)."""
    data = scene_data(scenes, size, batch_size)
    data.setup("validate")
    bins = ABBins.grid(GRID_SIZE, GRID_STEP)
    return float(output_grid_ceiling(data.val_dataloader(), OUTPUT_STRIDE, bins))


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """``python -m film_color.evaluate [CKPT] [--split test] [--scenes N]``: print the metrics
    as JSON (the published model by default)."""
    parser = argparse.ArgumentParser(description="film_color metrics on CapShapes scenes")
    parser.add_argument(
        "ckpt", nargs="?", default=str(PUBLISHED), help="a film-color checkpoint or weights folder"
    )
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--scenes", type=int, default=2048, help="scenes of the split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--options", type=json.loads, default=None,
        help='CapShapes options as JSON, e.g. \'{"min_objects": 2, "shared_noun_prob": 1.0}\'',
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (Path(args.ckpt).is_file() or is_hub_folder(args.ckpt)):
        raise SystemExit(
            f"error: no film-color checkpoint or weights folder (config.json + "
            f"model.safetensors) at {args.ckpt}"
        )
    metrics = evaluate(
        args.ckpt, args.scenes, args.split, batch_size=args.batch_size, progress=True,
        options=args.options,
    )  # fmt: skip
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


if __name__ == "__main__":
    main()
