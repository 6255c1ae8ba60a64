"""The "Language" section of the shared demo report (``python -m film_color.demo``).

Trains a FILM model on CapShapes with ``configs/capshapes.yaml`` (a bounded CPU run: an FCNN,
then FILM initialised from it, as in §3.1 of the paper), or reuses the checkpoints already under
``outputs/demo/film_color/``, then writes section ``film_color`` of
:class:`chromalab.report.Report` (``outputs/demo``):

* one grey validation scene colorized under three captions that differ only in their colour
  words (:func:`chromalab.text.swap_color_words`), as in the caption-manipulation study of
  Manjunatha et al. (NAACL 2018, §3.2, Fig. 3 top row);
* the activation maps after the FiLM layers of blocks 6-8 for the first caption (Fig. 4);
* the model's validation metrics: acc@1/acc@5, caption consistency, manipulation accuracy.

::

    python -m film_color.demo [--fcnn-steps N] [--steps N] [--retrain] [--out outputs/demo]
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch

from chromalab.bins import ABBins
from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.io import recombine
from chromalab.metrics import output_grid_ceiling
from chromalab.report import Report, image_grid, metrics_table
from chromalab.text import CHROMATIC_COLORS, COLOR_LEXICON, find_color_words, swap_color_words
from cic.networks import OUTPUT_STRIDE
from film_color.datamodule import FilmColorDataModule
from film_color.explain import activation_maps, overlay
from film_color.module import FilmColorModule
from film_color.networks import GRID_SIZE, GRID_STEP
from film_color.weights import read_weights, trained_scene_size

__all__ = [
    "CAPSHAPES_CONFIG",
    "caption_variants",
    "grid_ceiling",
    "last_checkpoint",
    "main",
    "train_fcnn_then",
    "train_or_reuse",
    "validate",
]

logger = logging.getLogger(__name__)

CAPSHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "capshapes.yaml"
_METRICS = ("acc@1", "acc@5", "caption_consistency", "manipulation_accuracy")


def last_checkpoint(root: Path) -> Path | None:
    """The newest ``last.ckpt`` under ``root`` (the logger's version folders included)."""
    found = [p for p in Path(root).rglob("last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train_or_reuse(
    root: Path,
    conditioning: str = "film",
    steps: int | None = None,
    retrain: bool = False,
    extra: Sequence[str] = (),
) -> tuple[Path, float | None]:
    """Train a CapShapes model with ``film-color fit`` into ``root``, or reuse ``root``'s.

    Args:
        root: the run folder; its newest ``last.ckpt`` (under the logger's folder) is the
            checkpoint, and ``root/train_info.json`` records the steps and the cumulated
            training wall time.
        conditioning: ``"none"``, ``"concat"`` or ``"film"``.
        steps: optimizer steps (default: the config's ``max_steps``); a checkpoint with fewer
            steps is trained on from where it stopped.
        retrain: ignore an existing checkpoint.
        extra: further LightningCLI arguments (e.g. ``["--model.init_from", fcnn_ckpt]``).

    Returns:
        ``(checkpoint, seconds)``: the cumulated training wall time, ``None`` if unknown.
    """
    from film_color.cli import run

    if not CAPSHAPES_CONFIG.is_file():
        raise FileNotFoundError(
            f"{CAPSHAPES_CONFIG} not found: the demo and benchmark read the configs of a source "
            "checkout (pip install -e packages/film_color)"
        )
    last = last_checkpoint(root)
    info_path = root / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() and not retrain else {}
    resume = last is not None and not retrain
    if resume:
        done = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
        if steps is None or done >= steps:
            logger.info("reusing %s (%d steps)", last, done)
            return last, info.get("seconds")
    args = [
        "fit",
        "--config", str(CAPSHAPES_CONFIG),
        "--model.conditioning", conditioning,
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip
    if steps is not None:
        args += ["--trainer.max_steps", str(steps)]
    if resume:
        args += ["--ckpt_path", str(last)]
    argv, sys.argv = sys.argv, [sys.argv[0]]  # LightningCLI(args=...) must not see ours
    start = time.perf_counter()
    try:
        run(args)
    finally:
        sys.argv = argv
    seconds = time.perf_counter() - start + (info.get("seconds", 0.0) if resume else 0.0)
    last = last_checkpoint(root)
    if last is None:
        raise RuntimeError(f"training into {root} wrote no last.ckpt")
    done = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    info_path.write_text(json.dumps({"steps": int(done), "seconds": seconds}))
    return last, seconds


def train_fcnn_then(
    root: Path,
    conditioning: str,
    fcnn_steps: int | None = None,
    steps: int | None = None,
    retrain: bool = False,
) -> dict[str, tuple[Path, float | None]]:
    """The paper's recipe (§3.1) on CapShapes: an FCNN, then ``conditioning`` initialised from it.

    Returns:
        ``{"none": (ckpt, seconds), conditioning: (ckpt, seconds)}`` for the runs in
        ``root/fcnn`` and ``root/<conditioning>``.
    """
    runs = {"none": train_or_reuse(root / "fcnn", "none", fcnn_steps, retrain)}
    if conditioning != "none":
        fcnn = runs["none"][0]
        runs[conditioning] = train_or_reuse(
            root / conditioning, conditioning, steps, retrain, ["--model.init_from", str(fcnn)]
        )
    return runs


def _validation_data(scenes: int, size: int, batch_size: int) -> FilmColorDataModule:
    return FilmColorDataModule(
        source="capshapes",
        capshapes_size=size,
        image_size=size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        capshapes_val_length=scenes,
    )


def validate(ckpt: Path, scenes: int = 512, size: int | None = None, batch_size: int = 64) -> dict:
    """Validation metrics of a checkpoint on ``scenes`` CapShapes validation scenes.

    ``size`` is the side the scenes are drawn at; by default the one the checkpoint was trained
    on (:func:`film_color.weights.trained_scene_size`; 64 when it records none). The scenes are the
    same at every size, only drawn at another resolution.
    """
    if size is None:
        size = trained_scene_size(read_weights(ckpt)) or 64
    module = FilmColorModule.load_from_checkpoint(ckpt, map_location="cpu")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = _validation_data(scenes, size, batch_size)
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    return {k.removeprefix("val/"): float(v) for k, v in metrics.items()}


def grid_ceiling(scenes: int = 512, size: int = 64, batch_size: int = 64) -> float:
    """The best caption consistency a FCNN/CONCAT/FILM can be measured at on the validation
    scenes of :func:`validate` drawn at ``size``: the true colours seen through the networks'
    output grid (1/4 of the input, 625 classes; :func:`chromalab.metrics.output_grid_ceiling`)."""
    data = _validation_data(scenes, size, batch_size)
    data.setup("validate")
    bins = ABBins.grid(GRID_SIZE, GRID_STEP)
    return float(output_grid_ceiling(data.val_dataloader(), OUTPUT_STRIDE, bins))


def caption_variants(caption: str, count: int = 3) -> list[str]:
    """``count`` captions that differ from ``caption`` only in their colour words.

    The first is ``caption`` itself; variant ``i`` rotates every chromatic colour word ``i``
    steps along :data:`chromalab.text.CHROMATIC_COLORS` (a bijection, so distinct colours stay
    distinct).
    """
    ids = {cid for _, _, cid in find_color_words(caption) if cid in CHROMATIC_COLORS}
    if not ids:
        raise ValueError(f"caption has no chromatic colour word: {caption!r}")
    n = len(CHROMATIC_COLORS)
    variants = [caption]
    for shift in range(1, count):
        step = shift * max(1, n // count)
        mapping = {c: CHROMATIC_COLORS[(CHROMATIC_COLORS.index(c) + step) % n] for c in ids}
        variants.append(swap_color_words(caption, mapping))
    return variants


def _pick_scene(scenes: CapShapes, limit: int = 200) -> dict:
    """The first complete-level scene with two or three objects (a readable example)."""
    for i in range(min(limit, len(scenes))):
        scene = scenes[i]
        objects = int((scene["color_ids"] >= 0).sum())
        if scene["level"] == "complete" and 2 <= objects <= 3:
            return scene
    return scenes[0]


@torch.no_grad()
def write_section(ckpt: Path, out: Path, metrics: dict, train_seconds: float | None) -> Path:
    """Write the ``film_color`` section of the report in ``out`` and rebuild ``index.html``."""
    report = Report(out)
    module = FilmColorModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    size = module.input_size or 64
    scene = _pick_scene(CapShapes(length=200, size=size, seed=1))
    captions = caption_variants(scene["caption"])
    rgb = scene["rgb"][None]
    l = rgb_to_lab(rgb)[:, :1]
    batch_l = l.expand(len(captions), -1, -1, -1)
    colorized = recombine(batch_l, module.colorize(batch_l, captions))
    gray = (l / 100).expand(-1, 3, -1, -1)
    grid = image_grid(
        torch.cat([rgb, gray, colorized]), report.asset("film_color/manipulation.png"), nrow=5,
        scale=3,
    )  # fmt: skip
    maps = activation_maps(module, l, captions[:1])
    heat = torch.cat([overlay(l / 100, m) for m in maps.values()])
    heat_grid = image_grid(heat, report.asset("film_color/activations.png"), nrow=3, scale=3)
    listing = "".join(
        f"<li>{html.escape(label)}: <code>{html.escape(c)}</code></li>"
        for label, c in zip(
            ("caption 1 (the scene's own)", "caption 2", "caption 3"), captions, strict=True
        )
    )
    rows = [{"metric": k, "value": metrics[k]} for k in _METRICS if k in metrics]
    budget = (
        f"an FCNN then FILM initialised from it, {train_seconds:.0f} s of training on this CPU"
        if train_seconds is not None
        else "reused checkpoint"
    )
    colours = ", ".join(COLOR_LEXICON[c].name for c in CHROMATIC_COLORS)
    body = (
        "<p>FILM (Manjunatha et al., NAACL 2018): an FCNN whose eight blocks are modulated by "
        "<code>(1 + γ) Z + β</code> computed from a BiLSTM encoding of the caption. Trained on "
        f"CapShapes scenes (<code>{html.escape(str(ckpt))}</code>, {budget}), where only the "
        f"caption tells an object's colour ({colours}).</p>"
        f"<ul>{listing}</ul>"
        + report.figure(grid, "ground truth, grey input, then the colorizations under captions 1-3")
        + report.figure(
            heat_grid,
            "mean activation after the FiLM layers of blocks 6, 7, 8 "
            "(caption 1; Fig. 4 of the paper)",
        )  # fmt: skip
        + "<p>Validation on 512 CapShapes scenes never seen in training (acc@k: quantized ab "
        "at the output resolution; manipulation: colour words swapped, objects scored against "
        "the new colours; chance is 1/8).</p>" + metrics_table(rows)
    )
    report.write_section("film_color", "Language: Learning to Color from Language", body, order=20)
    return report.build()


def main(argv: Sequence[str] | None = None) -> None:
    """Train or reuse the demo model and write the report section."""
    parser = argparse.ArgumentParser(description="film_color demo section of the report")
    parser.add_argument("--out", default="outputs/demo", help="report folder")
    parser.add_argument("--fcnn-steps", type=int, default=1500, help="FCNN training steps")
    parser.add_argument("--steps", type=int, default=1500, help="FILM training steps")
    parser.add_argument("--retrain", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--scenes", type=int, default=512, help="validation scenes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    runs = train_fcnn_then(out / "film_color", "film", args.fcnn_steps, args.steps, args.retrain)
    ckpt = runs["film"][0]
    seconds = [s for _, s in runs.values()]
    total = None if None in seconds else sum(seconds)
    metrics = validate(ckpt, args.scenes)
    index = write_section(ckpt, out, metrics, total)
    print(f"film_color section written; report: {index}")


if __name__ == "__main__":
    main()
