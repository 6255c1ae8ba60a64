"""``chromalab colorize`` throughput on a folder of photos: the one-at-a-time loop (batch 1,
decoding in the main process, fp32, channels-last as the colorizers run by default) against the
same loop with the network in the contiguous (NCHW) layout, batched inference with decoding in
DataLoader workers, and bfloat16 autocast. Every row runs the same code path
(:func:`chromalab.inference.colorize_jobs`) on the same files, in one run.

The model is CIC (Zhang et al., ECCV 2016) at the paper's width, input 256, random weights
(the speed does not depend on them), channels-last. The photos are JPEGs of two sizes and both
orientations (CapShapes scenes, upscaled), so every batch mixes aspect ratios.

    python benchmarks/colorize_throughput.py [--photos 48] [--batch-size 8] [--workers 1]
        [--width 1.0] [--size 256]

Results: ``benchmarks/results/colorize_throughput.{csv,md}``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import machine_description, markdown_table, write_results
from PIL import Image

from chromalab.bins import ABBins
from chromalab.data import CapShapes
from chromalab.inference import colorize_jobs, plan_jobs
from cic.colorizer import CICColorizer
from cic.networks import CICNetwork

SIZES = ((640, 480), (480, 640), (800, 600), (600, 800))


def write_photos(folder: Path, n: int) -> None:
    scenes = CapShapes(length=n, size=96, seed=5)
    for i in range(n):
        rgb = (scenes[i]["rgb"] * 255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(rgb).resize(SIZES[i % len(SIZES)], Image.BICUBIC)
        image.save(folder / f"photo{i:03d}.jpg", quality=90)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--width", type=float, default=1.0, help="CIC width (1.0: the paper's)")
    parser.add_argument("--size", type=int, default=256, help="network input side")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    bins = ABBins.gamut()
    network = CICNetwork(width=args.width, num_classes=bins.num_bins)
    nchw = CICColorizer(copy.deepcopy(network), bins, 0.38, input_size=args.size,
                        channels_last=False)  # fmt: skip
    model = CICColorizer(network, bins, 0.38, input_size=args.size)  # channels-last
    runs = [
        ("one at a time (batch 1, no workers)", model, 1, 0, "fp32"),
        ("one at a time, contiguous NCHW network", nchw, 1, 0, "fp32"),
        (f"batched ({args.batch_size}, no workers)", model, args.batch_size, 0, "fp32"),
        (f"batched ({args.batch_size}, {args.workers} worker)", model, args.batch_size,
         args.workers, "fp32"),
        (f"batched ({args.batch_size}, {args.workers} worker), bf16", model, args.batch_size,
         args.workers, "bf16"),
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        write_photos(photos, args.photos)
        warm = plan_jobs([photos], Path(tmp) / "warm")[: args.batch_size]
        for warm_model in (model, nchw):
            colorize_jobs(warm_model, warm, batch_size=args.batch_size, progress=False)
        base = None
        for label, colorizer, batch, workers, precision in runs:
            jobs = plan_jobs([photos], Path(tmp) / f"out-{len(rows)}")
            start = time.perf_counter()
            written, failed = colorize_jobs(colorizer, jobs, batch_size=batch,
                                            num_workers=workers, progress=False,
                                            precision=precision)  # fmt: skip
            seconds = time.perf_counter() - start
            assert written == args.photos and not failed
            speed = written / seconds
            base = base or speed
            rows.append({"run": label, "precision": precision, "images": written,
                         "seconds": seconds, "images/s": speed,
                         "vs one at a time": speed / base})  # fmt: skip
            print(rows[-1], flush=True)
    md = "\n".join([
        "# `chromalab colorize` throughput: one at a time against batched",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"CIC at width {args.width}, input {args.size}, channels-last unless said, random "
        "weights; "
        f"{args.photos} JPEG photos of 640x480 to 800x600 in both orientations (decoded, "
        "converted to Lab, resized longer side first onto the square canvas, colorized, joined "
        "with the full-resolution L, written as PNG). Each row the same files, one run, after "
        "a warm-up batch.",
        "",
        markdown_table(rows),
    ])  # fmt: skip
    csv_path, md_path = write_results("colorize_throughput", rows, md)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
