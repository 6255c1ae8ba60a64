"""The "Language" section of the shared demo report (``python -m film_color.demo``).

Two parts, written as section ``film_color`` of :class:`chromalab.report.Report`
(``outputs/demo``):

1. **The published CapShapes FILM**, no training: grey validation scenes colorized under their
   own caption and under captions that differ only in their colour words
   (:func:`chromalab.text.swap_color_words`), as in the caption-manipulation study of
   Manjunatha et al. (NAACL 2018, §3.2, Fig. 3 top row), the activation maps after the FiLM
   layers of blocks 6-8 (Fig. 4), and the model's measured metrics on validation scenes.
2. **The pipeline at work**: a bounded CPU run of the paper's recipe (§3.1: an FCNN, then FILM
   initialised from it; ``configs/capshapes.yaml``) with Lightning's progress bar, reused when
   already done (:func:`chromalab.runs.train_or_reuse`), and its validation metrics.

::

    python -m film_color.demo [--fcnn-steps N] [--steps N] [--retrain] [--out outputs/demo]
"""

from __future__ import annotations

import argparse
import html
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes
from chromalab.io import recombine
from chromalab.report import Report, image_grid, metrics_table
from chromalab.runs import RunResult, train_or_reuse
from chromalab.text import CHROMATIC_COLORS, COLOR_LEXICON, caption_variants
from film_color.cli import run
from film_color.evaluate import PUBLISHED, evaluate
from film_color.explain import activation_maps, overlay
from film_color.module import FilmColorModule
from film_color.weights import load_trained, read_weights, trained_steps

__all__ = ["CAPSHAPES_CONFIG", "caption_variants", "main", "train_fcnn_then", "write_section"]

logger = logging.getLogger(__name__)

CAPSHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "capshapes.yaml"
_METRICS = ("acc@1", "acc@5", "caption_consistency", "manipulation_accuracy")


def train_fcnn_then(
    root: Path,
    conditioning: str,
    fcnn_steps: int,
    steps: int,
    retrain: bool = False,
    progress: bool = True,
) -> dict[str, RunResult]:
    """The paper's recipe (§3.1) on CapShapes: an FCNN, then ``conditioning`` initialised from it.

    Returns:
        ``{"none": (ckpt, seconds), conditioning: (ckpt, seconds)}`` for the runs in
        ``root/fcnn`` and ``root/<conditioning>``.
    """
    if not CAPSHAPES_CONFIG.is_file():
        raise FileNotFoundError(
            f"{CAPSHAPES_CONFIG} not found: the demo reads the configs of a source checkout "
            "(pip install -e packages/film_color)"
        )
    fcnn = ["--model.network.conditioning", "none"]
    runs = {
        "none": train_or_reuse(
            run, root / "fcnn", CAPSHAPES_CONFIG, fcnn_steps, fcnn, progress=progress,
            retrain=retrain,
        )
    }  # fmt: skip
    if conditioning != "none":
        init = ["--model.network.conditioning", conditioning,
                "--model.init_from", str(runs["none"][0])]  # fmt: skip
        runs[conditioning] = train_or_reuse(
            run, root / conditioning, CAPSHAPES_CONFIG, steps, init, progress=progress,
            retrain=retrain,
        )  # fmt: skip
    return runs


def _pick_scenes(scenes: CapShapes, count: int, limit: int = 400) -> list[dict]:
    """The first ``count`` complete-level scenes with two or three objects (readable examples)."""
    picked = []
    for i in range(min(limit, len(scenes))):
        scene = scenes[i]
        objects = int((scene["color_ids"] >= 0).sum())
        if scene["level"] == "complete" and 2 <= objects <= 3:
            picked.append(scene)
            if len(picked) == count:
                break
    return picked or [scenes[0]]


@torch.no_grad()
def _manipulation_figure(
    report: Report, module: FilmColorModule, name: str, scenes: int = 3
) -> tuple[str, list[str]]:
    """A grid of ``scenes`` rows (truth, grey input, colorizations under 3 captions) and the
    activation maps of the first scene; returns the HTML and the first scene's captions."""
    size = module.input_size or 64
    rows, first_captions, heat = [], [], None
    for scene in _pick_scenes(CapShapes(length=400, size=size, seed=1), scenes):
        captions = caption_variants(scene["caption"])
        rgb = scene["rgb"][None]
        l = rgb_to_lab(rgb)[:, :1]
        batch_l = l.expand(len(captions), -1, -1, -1)
        colorized = recombine(batch_l, module.colorize(batch_l, captions))
        rows.append(torch.cat([rgb, (l / 100).expand(-1, 3, -1, -1), colorized]))
        if heat is None:
            first_captions = captions
            maps = activation_maps(module, l, captions[:1])
            heat = torch.cat([overlay(l / 100, m) for m in maps.values()])
    grid = image_grid(torch.cat(rows), report.asset(f"film_color/{name}.png"), nrow=5, scale=3)
    heat_grid = image_grid(heat, report.asset(f"film_color/{name}-maps.png"), nrow=3, scale=3)
    listing = "".join(
        f"<li>{html.escape(label)}: <code>{html.escape(c)}</code></li>"
        for label, c in zip(
            ("caption 1 (the scene's own)", "caption 2", "caption 3"), first_captions, strict=True
        )
    )
    body = (
        f"<p>First row's captions:</p><ul>{listing}</ul>"
        + report.figure(
            grid, "each row: ground truth, grey input, then the colorizations under captions 1-3"
        )
        + report.figure(
            heat_grid,
            "mean activation after the FiLM layers of blocks 6, 7, 8 "
            "(first row, caption 1; Fig. 4 of the paper)",
        )
    )
    return body, first_captions


def _metrics_rows(metrics: dict) -> list[dict]:
    return [{"metric": k, "value": round(metrics[k], 4)} for k in _METRICS if k in metrics]


def write_section(
    out: Path,
    published: tuple[Path, dict] | None,
    trained: tuple[Path, dict, float | None] | None,
    scenes: int,
) -> Path:
    """Write the ``film_color`` section of the report in ``out`` and rebuild ``index.html``.

    Args:
        out: the report folder.
        published: ``(checkpoint, metrics)`` of the published model, or ``None``.
        trained: ``(checkpoint, metrics, training seconds or None)`` of the demo's own run, or
            ``None``.
        scenes: validation scenes behind the metrics.
    """
    report = Report(out)
    colours = ", ".join(COLOR_LEXICON[c].name for c in CHROMATIC_COLORS)
    scoring = (
        f"<p>Validation on {scenes} CapShapes scenes never seen in training (acc@k: quantized "
        "ab at the output resolution; manipulation: colour words swapped, objects scored "
        "against the new colours; chance is 1/8).</p>"
    )
    body = (
        "<p>FILM (Manjunatha et al., NAACL 2018): an FCNN whose eight blocks are modulated by "
        "<code>(1 + γ) Z + β</code> computed from a BiLSTM encoding of the caption. On "
        f"CapShapes scenes only the caption tells an object's colour ({colours}).</p>"
    )
    if published is not None:
        ckpt, metrics = published
        module = load_trained(ckpt)
        figure, _ = _manipulation_figure(report, module, "published")
        body += (
            f"<h3>The published model</h3><p><code>{html.escape(str(ckpt))}</code>, "
            f"{trained_steps(read_weights(ckpt))} training steps, loaded without training.</p>"
            + figure + scoring + metrics_table(_metrics_rows(metrics))
        )  # fmt: skip
    if trained is not None:
        ckpt, metrics, seconds = trained
        module = load_trained(ckpt)
        figure, _ = _manipulation_figure(report, module, "trained", scenes=1)
        budget = f"{seconds:.0f} s of training on this CPU" if seconds else "a reused checkpoint"
        body += (
            "<h3>The pipeline at work: a bounded run</h3><p>An FCNN, then FILM initialised from "
            f"it ({trained_steps(read_weights(ckpt))} FILM steps, {budget}; "
            f"<code>{html.escape(str(ckpt))}</code>). A short run binds few colour words yet: "
            "compare with the published model above.</p>"
            + figure + scoring + metrics_table(_metrics_rows(metrics))
        )  # fmt: skip
    report.write_section("film_color", "Language: Learning to Color from Language", body, order=20)
    return report.build()


def main(argv: Sequence[str] | None = None) -> Path:
    """Show the published model, then train (or reuse) the demo run; write the report section."""
    parser = argparse.ArgumentParser(description="film_color demo section of the report")
    parser.add_argument("--out", default="outputs/demo", help="report folder")
    parser.add_argument("--published", default=str(PUBLISHED), help="the published weights")
    parser.add_argument("--fcnn-steps", type=int, default=1000, help="FCNN training steps")
    parser.add_argument("--steps", type=int, default=1000, help="FILM training steps (0: none)")
    parser.add_argument("--retrain", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--scenes", type=int, default=512, help="validation scenes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    published = None
    if Path(args.published).exists():  # a weights folder or a checkpoint file
        print(f"== film_color: the published model {args.published} on {args.scenes} scenes")
        published = (Path(args.published), evaluate(args.published, args.scenes, progress=True))
        print(f"manipulation accuracy {published[1]['manipulation_accuracy']:.4f}")
    else:
        logger.warning("no published model at %s: showing the trained run only", args.published)
    trained = None
    if args.steps > 0:
        print(f"== film_color: FCNN {args.fcnn_steps} steps, then FILM {args.steps} steps")
        runs = train_fcnn_then(
            out / "film_color", "film", args.fcnn_steps, args.steps, args.retrain
        )
        ckpt = runs["film"][0]
        seconds = [s for _, s in runs.values()]
        total = None if None in seconds else sum(seconds)
        trained = (ckpt, evaluate(ckpt, args.scenes, progress=True), total)
    index = write_section(out, published, trained, args.scenes)
    print(f"film_color section written; report: {index}")
    return index


if __name__ == "__main__":
    main()
