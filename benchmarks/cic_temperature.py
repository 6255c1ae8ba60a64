"""Fig. 4 of Zhang et al. 2016: the annealed-mean temperature sweep.

T ∈ {1, 1/2, 1/4, 1/6, 1/8, 1/12, 0} (and the released model's 0.38): AuC CMF (raw,
rebalanced) and colorfulness on CapShapes validation scenes, plus a PNG strip of images across
T (left: mean, right: mode). Uses the CapShapes model of ``make demo`` (reused or trained).

    python benchmarks/cic_temperature.py [--steps 600]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import REPO, RESULTS, machine_description, markdown_table, write_results
from torch.utils.data import DataLoader

from chromalab.color import lab_to_rgb, rgb_to_l_ab
from chromalab.data import CapShapes, sample_photos
from chromalab.data.folders import resize_and_crop
from chromalab.report import image_grid
from chromalab.runs import train_or_reuse
from cic.cli import CONFIGS, run
from cic.evaluate import evaluate, model_predictor
from cic.module import CICModule

TEMPERATURES = (1.0, 1 / 2, 0.38, 1 / 4, 1 / 6, 1 / 8, 1 / 12, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--runs", default=str(REPO / "outputs" / "demo"))
    args = parser.parse_args()
    config = CONFIGS / "capshapes.yaml"
    ckpt, _ = train_or_reuse(run, Path(args.runs) / "cic", config, args.steps, progress=False)
    module = CICModule.load_from_checkpoint(ckpt, map_location="cpu").eval()

    batches = list(DataLoader(CapShapes(length=256, size=64, seed=1), batch_size=64))
    batches = [{**b, **dict(zip(("l", "ab"), rgb_to_l_ab(b["rgb"]), strict=True))} for b in batches]
    rows = []
    for t in TEMPERATURES:
        result = evaluate(model_predictor(module, t), batches)
        rows.append({
            "T": "0 (mode)" if t == 0 else ("1 (mean)" if t == 1 else f"{t:.3g}"),
            "AuC CMF (%)": round(result["auc_cmf"], 2),
            "AuC CMF rebalanced (%)": round(result["auc_cmf_rebalanced"], 2),
            "colorfulness": round(result["colorfulness"], 2),
            "reference colorfulness": round(result["reference_colorfulness"], 2),
        })  # fmt: skip
        print(rows[-1])

    # strip: rows = images (4 scenes + 2 photos at 64x64), columns = temperatures, then GT
    scenes = batches[0]["rgb"][:4]
    photos = torch.stack(
        [resize_and_crop(rgb, 64) for _, rgb in sample_photos(["astronaut", "coffee"])]
    )
    rgb = torch.cat([scenes, photos])
    l, _ = rgb_to_l_ab(rgb)
    columns = []
    for t in TEMPERATURES:
        ab = model_predictor(module, t)({"l": l})
        columns.append(lab_to_rgb(torch.cat([l, ab], 1)))
    columns.append(rgb)
    strip = torch.stack(columns, 1).reshape(-1, 3, 64, 64)  # row-major: image, then T
    png = image_grid(strip, RESULTS / "cic_temperature.png", nrow=len(columns), scale=2)
    md = (
        "# cic — annealed-mean temperature sweep (Fig. 4 of Zhang et al. 2016)\n\n"
        f"Machine: {machine_description()}. Model: `{ckpt}` (CapShapes, "
        f"{torch.load(ckpt, weights_only=False)['global_step']} steps). Data: 256 CapShapes "
        "validation scenes. The paper chooses T=1/6 on ImageNet; the released model uses 0.38.\n\n"
        + markdown_table(rows)
        + f"\n![temperature strip]({png.name}) — columns: T = "
        + ", ".join(r["T"] for r in rows)
        + ", ground truth.\n"
    )
    write_results("cic_temperature", rows, md)
    print(md)


if __name__ == "__main__":
    main()
