"""L-CAD sampling, measured side by side: the release's setting against ours, and the cost and
effect of instance-aware sampling (Chang et al., NeurIPS 2023, "L-CAD: Language-based
Colorization with Any-level Descriptions using Diffusion Priors", arXiv:2305.15217, §3.4).

Three tables, every row measured in the same run:

1. **Solvers** (per model): DDIM-50 with classifier-free guidance batched into one UNet call
   per step on the conditional and unconditional rows (the paper's sampler as the release runs
   it, ldm's ``p_sample_ddim``, and ours), the same with the guidance split into two calls per
   step (what splitting would cost; neither does), and DPM-Solver++ at ``--dpm-steps`` steps
   (batched). Columns: UNet calls and UNet evaluations (rows) per image, how many times fewer
   evaluations than the release's DDIM (2 per step), seconds per image, and PSNR of the
   colorization against the DDIM-50 one of the same seed (and against the ground truth, for the
   trained model).
2. **Instance awareness** (trained CapShapes model; the tiny one as a smoke run): CapShapes test
   scenes with two or more objects sharing a noun, complete descriptions. Plain DDIM-50 (the
   paper's W/o ISS) against Algorithm 1 with the scenes' ground-truth masks, editing every step
   or the first ``--edit-steps``, and with automatic masks (each colour word's attention peak at
   the first step as the point prompt). No SAM weights exist offline: the automatic row's
   segmenter is the connected region of similar lightness around the point (CapShapes objects
   are flat), standing in for SAM. Columns: caption consistency, PSNR, seconds per image and
   the ratio to plain sampling, and the share of the phrase tokens' attention inside their
   masks before and after the edit step (mean over layers and steps).
3. **SD-sized UNet** (Stable Diffusion v1.5's UNet with the paper's CEC at 256x256, random
   weights): seconds per UNet call with the guidance as one call (the release's and ours) or
   two, timed over a few calls, extrapolated to each sampler's seconds per image.

    python benchmarks/lcad_sampling.py [--models tiny capshapes sd-unet-256]
        [--ckpt outputs/lcad-bench/full/checkpoints/last.ckpt] [--scenes 32]
        [--ddim-steps 50] [--dpm-steps 10 15 20] [--edit-steps 10] [--step-size 5]
        [--sd-calls 2]

Results: ``benchmarks/results/lcad_sampling.{csv,md}``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from _common import machine_description, markdown_table, write_results
from diffusers import UNet2DConditionModel
from lcad_speed import SD_UNET, stage_module
from scipy import ndimage

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from chromalab.metrics import CaptionConsistency
from chromalab.text import find_color_words
from lcad.cec import LuminanceUNet
from lcad.stages import LCADDiffusionModule

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT / "outputs" / "lcad-bench" / "full" / "checkpoints" / "last.ckpt"
MODELS = ("tiny", "capshapes", "sd-unet-256")
#: CapShapes test scenes where objects share a noun, described completely.
SHARED = {"min_objects": 2, "shared_noun_prob": 1.0, "level_probs": (1.0, 0.0, 0.0)}
TEST_SEED = 1_000_003  # test scenes: a seed the training scenes never use
#: The guidance of the release's DDIM (ldm's ``p_sample_ddim``) and of the pipeline: the
#: conditional and unconditional rows in one UNet call per step.
BATCHED = "batched (release, ours)"


@contextmanager
def counted(pipe, split: bool) -> Iterator[dict[str, int]]:
    """Count the UNet calls and rows of ``pipe``; ``split``: run a guided batch
    ``[conditional; unconditional]`` as two calls (the release, like the pipeline, runs it as
    one)."""
    unet = pipe.unet
    original = unet.forward
    stats = {"calls": 0, "rows": 0}

    def forward(sample, timestep, encoder_hidden_states, **kwargs):
        rows = sample.shape[0]
        stats["rows"] += rows
        if split and rows % 2 == 0 and rows == 2 * stats.get("batch", -1):
            stats["calls"] += 2
            halves = zip(sample.chunk(2), encoder_hidden_states.chunk(2), strict=True)
            return torch.cat([original(s, timestep, c, **kwargs) for s, c in halves])
        stats["calls"] += 1
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    unet.forward = forward
    try:
        yield stats
    finally:
        del unet.forward


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in ``[0, 1]``."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def scenes(n: int, size: int, options: dict | None = None) -> dict:
    """``n`` CapShapes test scenes at ``size``, stacked."""
    data = CapShapes(length=n, size=size, seed=TEST_SEED, **(options or {}))
    items = [data[i] for i in range(n)]
    out = {k: [it[k] for it in items] for k in items[0]}
    for key in ("rgb", "masks", "color_ids", "mentioned", "canonical"):
        out[key] = torch.stack(out[key])
    out["l"] = rgb_to_l_ab(out["rgb"])[0]
    return out


def sample(pipe, data: dict, batch: int, **options) -> tuple[torch.Tensor, float, dict, list]:
    """Colorize every scene (generator seeded by the scene index), in batches; returns the
    images, seconds per image, UNet call counts per image and the edit's attention masses."""
    split = options.pop("split", False)
    masks = options.pop("masks", None)
    out, mass = [], []
    n = data["l"].shape[0]
    with counted(pipe, split) as stats:
        start = time.perf_counter()
        for i in range(0, n, batch):
            j = min(i + batch, n)
            stats["batch"] = j - i
            extra = dict(options)
            if masks is not None:
                extra["masks"] = masks[i:j]
            result = pipe(
                data["l"][i:j],
                data["caption"][i:j],
                generator=[torch.Generator().manual_seed(k) for k in range(i, j)],
                **extra,
            )
            out.append(result.images)
            mass.extend(result.mass or [])
        seconds = (time.perf_counter() - start) / n
    counts = {"calls": stats["calls"] / math.ceil(n / batch), "rows": stats["rows"] / n}
    return torch.cat(out), seconds, counts, mass


def solver_rows(name: str, pipe, data: dict, args) -> list[dict[str, object]]:
    n = args.ddim_steps
    runs = [("DDIM", n, False, BATCHED), ("DDIM", n, True, "two calls")]
    runs += [("DPM-Solver++", k, False, BATCHED) for k in args.dpm_steps]
    reference, rows = None, []
    for solver, steps, split, guidance in runs:
        pipe.use_scheduler("ddim" if solver == "DDIM" else "dpm++")
        images, seconds, counts, _ = sample(
            pipe, data, args.batch, num_inference_steps=steps, split=split
        )
        if reference is None:
            reference = images
        row = {
            "model": name,
            "sampler": f"{solver}-{steps}",
            "guidance": guidance,
            "UNet calls per image": counts["calls"],
            "UNet evaluations per image": counts["rows"],
            "fewer evaluations than release": 2 * n / counts["rows"],
            "s/image": seconds,
            f"PSNR vs DDIM-{n} (dB)": float(psnr(images, reference).clamp(max=100).mean()),
            "PSNR vs ground truth (dB)": float(psnr(images, data["rgb"]).mean()),
        }
        print(row, flush=True)
        rows.append(row)
    pipe.use_scheduler("ddim")
    return rows


class LightnessRegion:
    """Stand-in for SAM on flat-coloured scenes: a point prompt's mask is the connected region
    of lightness within ``tolerance`` of the point's."""

    def __init__(self, tolerance: float = 3.0) -> None:
        self.tolerance = tolerance

    def __call__(self, l: torch.Tensor, prompts: dict) -> dict[str, torch.Tensor]:
        plane = l.reshape(l.shape[-2:]).numpy()
        h, w = plane.shape
        out = {}
        for phrase, (x, y) in prompts.items():
            r, c = min(int(y), h - 1), min(int(x), w - 1)
            labels, _ = ndimage.label(np.abs(plane - plane[r, c]) < self.tolerance)
            out[phrase] = torch.from_numpy(labels == labels[r, c])
        return out


def object_masks(data: dict) -> list[dict[str, torch.Tensor]]:
    """Per scene, ``{colour word: union of the masks of the mentioned objects of that colour}``
    (the colour word as the caption spells it)."""
    out = []
    for caption, masks, colors, mentioned in zip(
        data["caption"], data["masks"], data["color_ids"], data["mentioned"], strict=True
    ):
        per: dict[str, torch.Tensor] = {}
        words = {color: caption[s:e] for s, e, color in reversed(find_color_words(caption))}
        for mask, color, said in zip(masks, colors, mentioned, strict=True):
            word = words.get(int(color))
            if said and word:
                per[word] = per.get(word, torch.zeros_like(mask, dtype=torch.bool)) | mask.bool()
        out.append(per)
    return out


def consistency(images: torch.Tensor, data: dict) -> float:
    metric = CaptionConsistency()
    level = ["complete"] * images.shape[0]
    metric.update(rgb_to_l_ab(images)[1], data["masks"], data["color_ids"], data["mentioned"],
                  level, data["canonical"])  # fmt: skip
    return float(metric.compute()["accuracy"])


def instance_rows(name: str, pipe, data: dict, args) -> list[dict[str, object]]:
    masks = object_masks(data)
    runs = [
        (f"plain DDIM-{args.ddim_steps} (W/o ISS)", {}),
        ("ISS, ground-truth masks, every step", {"masks": masks}),
        (f"ISS, ground-truth masks, first {args.edit_steps} steps",
         {"masks": masks, "edit_steps": args.edit_steps}),
        (f"ISS, automatic masks, first {args.edit_steps} steps",
         {"auto_masks": True, "segmenter": LightnessRegion(), "edit_steps": args.edit_steps}),
    ]  # fmt: skip
    rows, plain = [], None
    for label, options in runs:
        edit = {"edit_step_size": args.step_size, "track_mass": True}
        images, seconds, counts, mass = sample(
            pipe,
            data,
            args.batch,
            num_inference_steps=args.ddim_steps,
            **(options | edit if options else {}),
        )
        plain = plain or seconds
        row = {
            "model": name,
            "sampling": label,
            "caption consistency": consistency(images, data),
            "PSNR (dB)": float(psnr(images, data["rgb"]).mean()),
            "UNet evaluations per image": counts["rows"],
            "s/image": seconds,
            "time vs plain": seconds / plain,
            "mask mass before edit": statistics.mean(m[0] for m in mass) if mass else "",
            "mask mass after edit": statistics.mean(m[1] for m in mass) if mass else "",
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def sd_rows(calls: int) -> list[dict[str, object]]:
    """Seconds per UNet call of SD v1.5's UNet at 256x256 (CEC), guidance as one batched call
    of 2 rows or as two calls of 1, and each sampler's seconds per image extrapolated."""
    torch.manual_seed(0)
    unet = LuminanceUNet(UNet2DConditionModel(**SD_UNET), 512, "all_down").eval()
    latent, features = torch.randn(1, 4, 32, 32), torch.randn(1, 512, 32, 32)
    context = torch.randn(2, 77, 768)
    t = torch.tensor(500)
    batched, split = [], []
    with torch.inference_mode(), unet.luminance(features):
        unet(torch.cat((latent, latent)), t, context)  # warm-up
        for _ in range(calls):
            start = time.perf_counter()
            unet(torch.cat((latent, latent)), t, context)
            batched.append(time.perf_counter() - start)
            start = time.perf_counter()
            for half in context.chunk(2):
                unet(latent, t, half)
            split.append(time.perf_counter() - start)
    step_batched, step_split = statistics.median(batched), statistics.median(split)
    rows = [
        {"sampler": "DDIM-50", "guidance": BATCHED, "UNet calls per image": 50,
         "UNet evaluations per image": 100, "s/step": step_batched,
         "s/image (extrapolated)": 50 * step_batched},
        {"sampler": "DDIM-50", "guidance": "two calls", "UNet calls per image": 100,
         "UNet evaluations per image": 100, "s/step": step_split,
         "s/image (extrapolated)": 50 * step_split},
    ]  # fmt: skip
    for k in (10, 15, 20):
        rows.append({"sampler": f"DPM-Solver++-{k}", "guidance": BATCHED,
                     "UNet calls per image": k, "UNet evaluations per image": 2 * k,
                     "s/step": step_batched,
                     "s/image (extrapolated)": k * step_batched})  # fmt: skip
    for row in rows:
        row["model"] = "sd-unet-256 (random weights)"
        print(row, flush=True)
    return rows


def load_model(name: str, ckpt: Path) -> tuple[object, int]:
    if name == "tiny":
        module, size, _ = stage_module("tiny", "diffusion")
    else:
        module = LCADDiffusionModule.load_from_checkpoint(ckpt, map_location="cpu")
        size = 64
    return module.eval().pipeline(), size


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT,
                        help="the trained CapShapes stage-2 checkpoint")  # fmt: skip
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ddim-steps", type=int, default=50, help="the paper's DDIM steps")
    parser.add_argument("--dpm-steps", type=int, nargs="+", default=[10, 15, 20])
    parser.add_argument("--edit-steps", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=5.0, help="λ of Algorithm 1")
    parser.add_argument("--sd-calls", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if "capshapes" in args.models and not args.ckpt.is_file():
        # make bench runs the scripts in name order: this one before lcad_table1.py
        print(f"NOTE: no CapShapes checkpoint at {args.ckpt} (benchmarks/lcad_table1.py trains "
              "it): the capshapes rows are left out", flush=True)  # fmt: skip
        args.models = [m for m in args.models if m != "capshapes"]

    solvers, instances, sd = [], [], []
    for name in args.models:
        if name == "sd-unet-256":
            sd = sd_rows(args.sd_calls)
            continue
        pipe, size = load_model(name, args.ckpt)
        warm = scenes(2, size)
        pipe(warm["l"], warm["caption"], num_inference_steps=2)  # warm-up, not timed
        solvers += solver_rows(name, pipe, scenes(args.scenes, size), args)
        instances += instance_rows(name, pipe, scenes(args.scenes, size, SHARED), args)

    md = [
        "# L-CAD sampling: the release's sampler against ours, and instance-aware sampling",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"`tiny`: random weights (`tiny-diffusion.yaml`); `capshapes`: `{args.ckpt.name}` of "
        f"`benchmarks/lcad_table1.py` (stage 2 on CapShapes, 64x64). {args.scenes} CapShapes "
        f"test scenes per table, batches of {args.batch}, one generator per scene. Guidance 5.",
        "",
        "## Solvers",
        "",
        "UNet evaluations per image: the rows the UNet runs on, two per guided step "
        "(conditional and unconditional). The release's DDIM (ldm's p_sample_ddim) runs both "
        "rows in one UNet call per step, as ours does; the two-call row shows what splitting "
        "them would cost. Fewer evaluations than release: against its DDIM-"
        f"{args.ddim_steps}'s {2 * args.ddim_steps}. PSNR vs DDIM-{args.ddim_steps}: against "
        f"the DDIM-{args.ddim_steps} colorization of the same seed.",
        "",
        markdown_table(solvers) if solvers else "(not run)\n",
        "## Instance-aware sampling (Algorithm 1)",
        "",
        f"Scenes with two or more objects sharing a noun, complete descriptions. λ = "
        f"{args.step_size}. An edited step costs one extra UNet pass on the conditional rows "
        "(the release: two full passes). Automatic masks: each colour word's cross-attention "
        "peak at the first step, segmented by the lightness region around it (no SAM weights "
        "offline). Mask mass: the share of the colour words' attention inside their masks, "
        "before and after the edit step.",
        "",
        markdown_table(instances) if instances else "(not run)\n",
        "## Stable Diffusion-sized UNet at 256x256",
        "",
        markdown_table(sd) if sd else "(not run)\n",
    ]
    rows = [{"table": "solvers"} | r for r in solvers]
    rows += [{"table": "instance"} | r for r in instances]
    rows += [{"table": "sd-unet"} | r for r in sd]
    csv_path, md_path = write_results("lcad_sampling", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
