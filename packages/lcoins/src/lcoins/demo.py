"""The "Instance awareness" section of the shared demo report (``python -m lcoins.demo``).

The published CapShapes L-CoIns (``benchmarks/weights/capshapes-lcoins-v1``), loaded without
training, written as section ``lcoins`` of :class:`chromalab.report.Report`:

* scenes of two or more objects that share a noun (told apart by position words), each
  colorized under captions that differ only in their colour words, beside the hard group
  assignment of every colorization (Eq. 11, ``lcoins explain``);
* its scores on held-out test scenes, all scenes and shared-noun scenes
  (:func:`lcoins.evaluate.evaluate`).

::

    python -m lcoins.demo [--out outputs/demo] [--scenes 512] [--weights FOLDER]
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
from chromalab.text import caption_variants
from lcoins.evaluate import evaluate
from lcoins.explain import group_maps, group_overlay
from lcoins.module import LCoInsModule

__all__ = ["PUBLISHED", "SHARED_NOUN", "main", "write_section"]

logger = logging.getLogger(__name__)

#: The published CapShapes L-CoIns, a ``save_pretrained`` folder (in a source checkout).
PUBLISHED = Path(__file__).resolve().parents[4] / "benchmarks" / "weights" / "capshapes-lcoins-v1"
#: CapShapes options of the instance-awareness scenes: two or more objects sharing a noun.
SHARED_NOUN = {"min_objects": 2, "shared_noun_prob": 1.0}
_METRICS = ("caption_consistency", "manipulation_accuracy", "psnr", "ssim")


def _shared_noun_scenes(size: int, count: int, limit: int = 400) -> list[dict]:
    """The first ``count`` complete-level shared-noun test scenes of two or three objects."""
    scenes = CapShapes(length=limit, size=size, seed=2, **SHARED_NOUN)
    picked = []
    for i in range(limit):
        scene = scenes[i]
        if scene["level"] == "complete" and int((scene["color_ids"] >= 0).sum()) <= 3:
            picked.append(scene)
            if len(picked) == count:
                break
    return picked or [scenes[0]]


@torch.no_grad()
def _figure(report: Report, module: LCoInsModule, count: int) -> str:
    """Rows of truth, grey input, three colorizations and their three group maps."""
    size = int(module.network_config.image_size)
    groups = module.network.num_groups
    rows, listings = [], []
    for n, scene in enumerate(_shared_noun_scenes(size, count), 1):
        captions = caption_variants(scene["caption"])
        rgb = scene["rgb"][None]
        l = rgb_to_lab(rgb)[:, :1].expand(len(captions), -1, -1, -1)
        colorized = recombine(l, module.colorize(l, captions))
        maps = group_overlay(l / 100, group_maps(module, l, captions), groups)
        rows.append(torch.cat([rgb, (l[:1] / 100).expand(-1, 3, -1, -1), colorized, maps]))
        items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in captions)
        listings.append(f"<p>Row {n}:</p><ol>{items}</ol>")
    grid = image_grid(torch.cat(rows), report.asset("lcoins/shared-noun.png"), nrow=8, scale=4)
    caption = (
        "each row: ground truth, grey input, the colorizations under captions 1-3, then the "
        "hard group assignment of each (one colour per group token, Eq. 11)"
    )
    return "".join(listings) + report.figure(grid, caption)


def write_section(out: Path, weights: Path, scores: dict[str, dict], scenes: int) -> Path:
    """Write the ``lcoins`` section of the report in ``out`` and rebuild ``index.html``.

    ``scores``: ``{"all scenes": metrics, "shared-noun scenes": metrics}`` of
    :func:`lcoins.evaluate.evaluate` on ``scenes`` test scenes each."""
    report = Report(out)
    module = LCoInsModule.load_trained(weights, "cpu").eval()
    rows = [
        {"scenes": kind} | {k: round(m[k], 4) for k in _METRICS if k in m}
        for kind, m in scores.items()
    ]
    body = (
        "<p>L-CoIns (Chang et al., CVPR 2023): image tokens of a ViT, the caption's tokens of a "
        "frozen MiniLM and learned group tokens meet in a grouping transformer; each image "
        "token is assigned to one group (Eq. 11), so objects of the same noun can take the "
        "colours their position words give them.</p>"
        f"<h3>The published model</h3><p><code>{html.escape(_shown(weights))}</code>, loaded "
        "without training. Scenes where two objects share a noun:</p>"
        + _figure(report, module, 3)
        + f"<p>Scores on the first {scenes} CapShapes test scenes (never seen in training; "
        "manipulation: colour words swapped, objects scored against the new colours; chance "
        "for both caption scores is 1/8):</p>" + metrics_table(rows)
    )
    report.write_section("lcoins", "Instance awareness: L-CoIns", body, order=30)
    return report.build()


def _shown(path: Path) -> str:
    """``path`` relative to the source checkout when inside it (no machine's absolute path)."""
    root, path = PUBLISHED.parents[2], Path(path).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def main(argv: Sequence[str] | None = None) -> Path | None:
    """Score the published model and write the report section."""
    parser = argparse.ArgumentParser(description="lcoins demo section of the report")
    parser.add_argument("--out", default="outputs/demo", help="report folder")
    parser.add_argument("--weights", default=str(PUBLISHED), help="the published weights")
    parser.add_argument("--scenes", type=int, default=512, help="held-out test scenes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    weights = Path(args.weights)
    if not weights.exists():
        logger.warning("no published L-CoIns at %s: no lcoins section", weights)
        return None
    print(f"== lcoins: the published model {weights} on {args.scenes} test scenes")
    scores = {
        "all scenes": evaluate(weights, args.scenes, "test", progress=True),
        "shared-noun scenes": evaluate(weights, args.scenes, "test", SHARED_NOUN, progress=True),
    }
    index = write_section(Path(args.out), weights, scores, args.scenes)
    print(f"lcoins section written; report: {index}")
    return index


if __name__ == "__main__":
    main()
