"""Table 1 of Chang et al. (CVPR 2023), "L-CoIns: Language-based Colorization with Instance
Awareness", on CapShapes, and the instance-awareness comparison.

Rows: the full model and the four ablations (W/o GE, W/o GA, W/o LA, W/o CL), each trained with
the real ``lcoins fit`` entry point on CapShapes scenes (``packages/lcoins/configs/capshapes.yaml``
plus the ablation's switch) for a bounded number of steps on this machine, or reused from
``outputs/lcoins-bench/<row>/`` when that run already has them (an interrupted one is resumed).
Columns, on CapShapes test scenes never seen in training:

* PSNR and SSIM of the colorization (sRGB, the input L with the predicted ab), LPIPS when
  ``--lpips-weights`` gives the AlexNet weights (otherwise the table says it was not computed);
* caption consistency and caption-manipulation accuracy (every colour word of a caption swapped
  for another colour; objects judged against the new colours);
* instance awareness: the same two caption scores on scenes of two or more objects that share a
  noun and differ by a position word ("the left circle is red and the right circle is blue"),
  for the full model and W/o GE;
* training steps and minutes;
* a reference row, ``no colour (ab = 0)``: the grey input itself, scored the same way (what a
  model that has learned no colour gets);
* unseen pairs (Fig. 1, "unobserved correspondences"): one more full model trained on scenes
  that never show the colour-shape pairs of :data:`HELD_OUT` (``--unseen-steps``, 0 to leave it
  out), scored by caption consistency on objects that show those pairs, beside the other named
  objects of the same scenes (:func:`lcoins.evaluate.unseen_pair_consistency`).

``--captions FILE --image-root DIR`` adds PSNR/SSIM on a captioned dataset of the user's (the
release's ``[[file, caption], ...]`` format, COCO or JSON lines). The paper's own numbers
(extended COCO-Stuff, Table 1) are quoted beside ours and labelled as such: other data at another
scale, not comparable in value. Results: ``benchmarks/results/lcoins_table1.{csv,md}``.

    python benchmarks/lcoins_table1.py [--steps 6000] [--scenes 512] [--retrain]
        [--unseen-steps 6000] [--lpips-weights alexnet.pth]
        [--captions val.json --image-root images/]

At the published model's scale (its recipe, the ablations trained for the main run's first
1,000 steps on its schedule, the full row from the main run's kept checkpoint at that step, and
the unseen pairs scored on the main model, which was trained without them)::

    python benchmarks/lcoins_table1.py \
        --recipe packages/lcoins/configs/recipes/capshapes-lcoins-v1.yaml \
        --steps 1000 --schedule-steps 4500 --scenes 2048 --runs outputs/lcoins-bench-v1 \
        --full-checkpoint outputs/lcoins-capshapes-v1/kept/step=1000.ckpt \
        --unseen-checkpoint outputs/lcoins-capshapes-v1/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from _common import (
    machine_description,
    markdown_table,
    no_colour_reference,
    repo_relative,
    write_results,
)

from chromalab.runs import train_or_reuse, trained_steps
from lcoins.cli import CONFIGS
from lcoins.cli import run as lcoins_run
from lcoins.evaluate import evaluate, evaluate_captions, unseen_pair_consistency

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "lcoins-bench"
CAPSHAPES = CONFIGS / "capshapes.yaml"
#: row -> (run folder, the ablation's switches)
ROWS: dict[str, tuple[str, list[str]]] = {
    "L-CoIns": ("full", []),
    "W/o GE": ("wo-ge", ["--model.network.group_tokens", "false"]),
    "W/o GA": ("wo-ga", ["--model.network.grouping_attention", "false"]),
    "W/o LA": ("wo-la", ["--model.augmentation", "null"]),
    "W/o CL": ("wo-cl", ["--model.beta", "0"]),
}
#: Table 1 of the paper, extended COCO-Stuff: PSNR, SSIM, LPIPS.
PAPER = {
    "L-CoIns": (25.511, 0.92104, 0.157),
    "W/o GE": (25.249, 0.91832, 0.163),
    "W/o GA": (25.373, 0.91913, 0.160),
    "W/o LA": (25.475, 0.91965, 0.161),
    "W/o CL": (25.361, 0.91866, 0.158),
}
#: Colour-shape pairs kept out of the unseen-pairs run's training (none is a canonical colour).
HELD_OUT = {
    "circle": ["green"],
    "square": ["purple"],
    "triangle": ["cyan"],
    "heart": ["blue"],
    "star": ["pink"],
    "leaf": ["orange"],
}
#: Scenes for instance awareness: two or more objects, sharing a noun whenever possible.
INSTANCES = {"min_objects": 2, "shared_noun_prob": 1.0}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="training steps per row")
    parser.add_argument("--scenes", type=int, default=512, help="test scenes per evaluation")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--unseen-steps", type=int, default=6000, help="0: no unseen-pairs run")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--lpips-weights", default=None)
    parser.add_argument("--captions", default=None)
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--recipe", default=None, help="a recipe config over capshapes.yaml")
    parser.add_argument(
        "--schedule-steps", type=int, default=None, help="the cosine's length (a longer run's)"
    )
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the rows' runs")
    parser.add_argument("--full-checkpoint", default=None, help="the L-CoIns row's checkpoint")
    parser.add_argument(
        "--unseen-checkpoint", default=None,
        help="score the unseen pairs on this model (trained without them) instead of training one",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = [Path(CAPSHAPES)] + ([Path(args.recipe)] if args.recipe else [])
    schedule = (
        [] if args.schedule_steps is None else ["--model.schedule_steps", str(args.schedule_steps)]
    )
    trained: dict[str, tuple[Path, float | None]] = {}
    for label in args.rows:  # train first: a shared machine evaluates after every run is done
        if label == "L-CoIns" and args.full_checkpoint:
            trained[label] = (Path(args.full_checkpoint), None)
            continue
        folder, switches = ROWS[label]
        trained[label] = train_or_reuse(
            lcoins_run, args.runs / folder, configs, args.steps, [*switches, *schedule],
            retrain=args.retrain, checkpoint_every=500,
        )  # fmt: skip
    rows = []
    for label in args.rows:
        ckpt, seconds = trained[label]
        scores = evaluate(ckpt, args.scenes, "test", lpips_weights=args.lpips_weights)
        paper = PAPER[label]
        row: dict[str, object] = {
            "model": label,
            "PSNR": scores["psnr"],
            "SSIM": scores["ssim"],
            "LPIPS": scores.get("lpips", "no weights"),
            "caption consistency": scores["caption_consistency"],
            "manipulation accuracy": scores["manipulation_accuracy"],
        }
        if label in ("L-CoIns", "W/o GE"):
            twins = evaluate(ckpt, args.scenes, "test", INSTANCES)
            row["shared-noun consistency"] = twins["caption_consistency"]
            row["shared-noun manipulation"] = twins["manipulation_accuracy"]
        else:
            row["shared-noun consistency"] = row["shared-noun manipulation"] = ""
        if args.captions:
            own = evaluate_captions(ckpt, args.captions, args.image_root)
            row["PSNR (your data)"], row["SSIM (your data)"] = own["psnr"], own["ssim"]
        row |= {
            "train steps": trained_steps(ckpt),
            "train minutes": "" if seconds is None else seconds / 60,
            "paper PSNR": paper[0],
            "paper SSIM": paper[1],
            "paper LPIPS": paper[2],
        }
        rows.append(row)
        print(row, flush=True)
    size = _image_size(configs)
    reference = no_colour_reference(args.scenes, size)
    rows.append({key: reference.get(key, "") for key in rows[0]})
    fit_configs = " ".join(f"--config {repo_relative(c)}" for c in configs)
    md = [
        "# L-CoIns Table 1 on CapShapes: the model and its ablations",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"Each row trained with `lcoins fit {fit_configs}` "
        f"and its ablation switch for {args.steps} steps (batch 16, {size}x{size} scenes"
        + (f", the cosine schedule of a {args.schedule_steps}-step run" if schedule else "")
        + (f"; the L-CoIns row is `{args.full_checkpoint}`" if args.full_checkpoint else "")
        + f"), evaluated on {args.scenes} CapShapes test scenes. Shared-noun columns: scenes "
        "of two or more objects sharing a noun (told apart by position words). `paper` "
        "columns: the paper's Table 1 on extended COCO-Stuff, quoted for reference (other "
        "data and scale, not comparable in value).",
        "",
        markdown_table(rows),
    ]
    if args.unseen_checkpoint or args.unseen_steps > 0:
        if args.unseen_checkpoint:
            ckpt = args.unseen_checkpoint
        else:
            options = json.dumps({"held_out_pairs": HELD_OUT})
            ckpt, _ = train_or_reuse(
                lcoins_run, args.runs / "held-out-pairs", configs, args.unseen_steps,
                ["--data.capshapes_options", options, *schedule], retrain=args.retrain,
                checkpoint_every=500,
            )  # fmt: skip
        unseen = unseen_pair_consistency(ckpt, HELD_OUT, args.scenes)
        print(unseen, flush=True)
        md += [
            "",
            "## Unseen colour-shape pairs",
            "",
            f"L-CoIns (`{repo_relative(ckpt)}`) trained for {trained_steps(ckpt)} steps on scenes "
            "without the pairs "
            f"{HELD_OUT}; test scenes in which every object of those shapes shows one of them.",
            "",
            markdown_table([unseen]),
        ]
    csv_path, md_path = write_results("lcoins_table1", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


def _image_size(configs: Sequence[Path]) -> int:
    """The scene size of the last config that sets the network's ``image_size``."""
    size = 64
    for path in configs:
        network = (yaml.safe_load(path.read_text()).get("model") or {}).get("network") or {}
        size = int(network.get("image_size", size))
    return size


if __name__ == "__main__":
    main()
