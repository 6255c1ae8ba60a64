"""How fast does the FCNN learn to tell CapShapes' shapes apart? CIC's input vs per-image input.

On CapShapes scenes where every shape has its own colour and always takes it
(``canonical_prob=1`` with :data:`chromalab.data.capshapes.ONE_COLOR_PER_SHAPE`, the
"ImageNet-like" prior of the film_color README), an FCNN can colour an object right only by
recognising its shape: its caption consistency on these scenes (validation, seed 1, the same
distribution) measures shape recognition. Four FCNNs are trained with the real ``film-color
fit`` entry point (``configs/capshapes.yaml``, ``--model.network.conditioning none``), identical
but for

* the network input: ``paper``, CIC's ``(L - 50) / 100``, or ``image``, each grey image
  standardized to zero mean and unit variance (``--model.network.input_normalization image``,
  :func:`chromalab.color.standardize_l`);
* the scene size: 64 or 96 pixels (``--data.capshapes_size``).

CapShapes draws each object's and the background's lightness independently of colour, so the
absolute lightness an FCNN sees with CIC's input is a nuisance it must learn to discount before
edges and shapes become usable. Finished runs under ``outputs/film_color-bench/input-
normalization/`` are reused (a run trained further is read up to ``--steps``). Results:
``benchmarks/results/film_input_normalization.{csv,md}``.

    python benchmarks/film_input_normalization.py [--steps 2000] [--precision bf16-mixed]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from _common import machine_description, markdown_table, write_results

from chromalab.data.capshapes import ONE_COLOR_PER_SHAPE
from chromalab.runs import train_or_reuse
from film_color.cli import run
from film_color.demo import CAPSHAPES_CONFIG

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "film_color-bench" / "input-normalization"
NORMALIZATIONS = ("paper", "image")
SIZES = (64, 96)
#: Scenes whose colours follow from the shapes alone (training and validation).
SHAPE_COLORS = {"canonical_prob": 1.0, "canonical_colors": ONE_COLOR_PER_SHAPE}
VALIDATE_EVERY = 1000


def run_args(normalization: str, size: int | str, precision: str) -> list[str]:
    """``film-color fit`` arguments of one run (over the config and
    ``--model.network.conditioning``)."""
    return [
        "--model.network.input_normalization", normalization,
        "--data.capshapes_size", str(size),
        "--data.capshapes_options", json.dumps(SHAPE_COLORS),
        "--trainer.precision", precision,
        "--model.optimizer.step_size", "4000",
        "--trainer.val_check_interval", str(VALIDATE_EVERY),
    ]  # fmt: skip


def logged_consistency(root: Path, steps: int) -> dict[int, float]:
    """``{step: val/caption_consistency}`` of every validation of the run, up to ``steps``."""
    out: dict[int, float] = {}
    for path in sorted(root.rglob("metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                value = row.get("val/caption_consistency")
                if value and int(row["step"]) + 1 <= steps:
                    out[int(row["step"]) + 1] = float(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="FCNN training steps")
    parser.add_argument("--precision", default="bf16-mixed", help="trainer precision")
    parser.add_argument("--retrain", action="store_true", help="ignore existing runs")
    args = parser.parse_args()
    if args.steps < VALIDATE_EVERY:
        raise SystemExit(f"--steps must be at least {VALIDATE_EVERY} (one validation)")
    rows = []
    for size in SIZES:
        for normalization in NORMALIZATIONS:
            root = RUNS / f"{normalization}-{size}"
            extra = run_args(normalization, size, args.precision)
            fcnn = ["--model.network.conditioning", "none", *extra]
            train_or_reuse(
                run, root, CAPSHAPES_CONFIG, args.steps, fcnn, progress=False, retrain=args.retrain
            )
            consistency = logged_consistency(root, args.steps)
            row: dict[str, object] = {"scenes (px)": size, "input": normalization}
            for step in range(VALIDATE_EVERY, args.steps + 1, VALIDATE_EVERY):
                row[f"consistency at {step} steps (%)"] = 100 * consistency.get(step, float("nan"))
            rows.append(row)
            print(row, flush=True)
    md = [
        "# FCNN shape recognition on CapShapes: CIC's input vs per-image standardized input",
        "",
        f"Machine: {machine_description()}.",
        "",
        "Each row: `film-color fit --config packages/film_color/configs/capshapes.yaml "
        "--model.network.conditioning none` plus `"
        + " ".join(run_args("NORM", "SIZE", args.precision))
        + "` (NORM and the size as in the row; CIC width 0.25, batch 16, Adam 1e-3, seed 0). "
        "Training and validation scenes give every shape its own colour, always "
        f"(`{SHAPE_COLORS['canonical_prob']}` x `ONE_COLOR_PER_SHAPE`), so the caption "
        "consistency of the FCNN (which ignores captions) is the fraction of caption-coloured "
        "validation objects (512 scenes, seed 1) whose colour it infers from the shape alone; "
        "chance is 1/8. `paper`: CIC's `(L - 50) / 100`; `image`: each image standardized "
        "(`--model.network.input_normalization image`).",
        "",
        markdown_table(rows),
    ]
    csv_path, md_path = write_results("film_input_normalization", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
