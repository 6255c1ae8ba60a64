"""Short L-CoIns probes on CapShapes: which fixes, rates and sizes learn to colour by language
fastest per CPU-second, before a long run.

Each probe trains ``lcoins fit`` (``packages/lcoins/configs/capshapes.yaml`` plus its switches)
for ``--steps`` steps on one thread, with no validation during training, then scores 512
validation scenes: PSNR, caption consistency and caption-manipulation accuracy (chance is about
1/8). The CPU time of the training (this process and its data workers) is measured with
``resource.getrusage``.

Two probes change the code rather than a setting, to measure a fix against the code before it:

* ``eps-merge``: Eq. 12 divides a group's merged tokens by ``count + 1e-6`` (the code before
  the ``max(count, 1)`` fix), so an empty group's straight-through gradient is ``1e6`` times
  a chosen group's;
* ``modal-0.02``: the modal-type embedding of Eq. 3 starts at ViLT's N(0, 0.02) instead of
  PyTorch's N(0, 1) for ``nn.Embedding`` (the code's).

Results are appended to ``benchmarks/results/lcoins_probes.csv`` (one row per probe, kept
across invocations, so a probe already there is not run again).

    OMP_NUM_THREADS=1 python benchmarks/lcoins_probes.py --probes full wo-ge eps-merge \
        [--steps 600] [--size 32]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import resource
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import yaml
from torch import nn

from chromalab.runs import train_or_reuse
from lcoins import grouping, networks
from lcoins.cli import CONFIGS
from lcoins.cli import run as lcoins_run
from lcoins.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "lcoins-probes"
RESULTS = ROOT / "benchmarks" / "results" / "lcoins_probes.csv"
CAPSHAPES = CONFIGS / "capshapes.yaml"

#: probe -> (switches of ``lcoins fit``, code change or None)
PROBES: dict[str, tuple[list[str], str | None]] = {
    "full": ([], None),
    "wo-ge": (["--model.network.group_tokens", "false"], None),
    "eps-merge": ([], "eps-merge"),
    "modal-0.02": ([], "modal-0.02"),
    "wo-ge-modal-0.02": (["--model.network.group_tokens", "false"], "modal-0.02"),
    "eps-merge-modal-0.02": ([], "eps-merge+modal-0.02"),
    "lr1e-3-warm": (["--model.lr", "1e-3", "--model.warmup_steps", "100"], None),
    "lr2e-4": (["--model.lr", "2e-4"], None),
    "warm-cosine": (
        ["--model.warmup_steps", "100", "--model.lr_schedule", "cosine"],
        None,
    ),
    "batch32": (["--data.batch_size", "32"], None),
    "width64": (["--model.network.width", "64"], None),
    "depth2": (["--model.network.depth", "2"], None),
    "patch8": ([], "patch8"),
}


def _eps_merge(self: grouping.GroupingLayer, images, groups):  # the code before the fix
    soft = self.similarity(images, groups)
    hard = torch.nn.functional.one_hot(soft.argmax(dim=1), soft.shape[1]).transpose(1, 2)
    assignment = hard.to(soft.dtype) + soft - soft.detach()
    merged = assignment @ self.value(images)
    return groups + merged / (assignment.sum(-1, keepdim=True) + 1e-6), assignment


@contextlib.contextmanager
def code_change(name: str | None) -> Iterator[None]:
    """Apply one probe's code change for the duration of its run."""
    names = set((name or "").split("+"))
    saved_forward, saved_init = grouping.GroupingLayer.forward, networks.LCoInsNetwork.__init__

    def init(self, *args, **kwargs):
        saved_init(self, *args, **kwargs)
        nn.init.normal_(self.modal_type.weight, std=0.02)

    if "eps-merge" in names:
        grouping.GroupingLayer.forward = _eps_merge
    if "modal-0.02" in names:
        networks.LCoInsNetwork.__init__ = init
    try:
        yield
    finally:
        grouping.GroupingLayer.forward = saved_forward
        networks.LCoInsNetwork.__init__ = saved_init


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def size_switches(size: int, patch: int) -> list[str]:
    """``fit`` switches for scenes of ``size`` pixels and a ViT patch of ``patch``."""
    network = yaml.safe_load(Path(CAPSHAPES).read_text())["model"]["network"]
    image = network.get("image_options", {}) | {"patch_size": patch}
    return [
        "--data.image_size", str(size), "--data.capshapes_size", str(size),
        "--model.network.image_size", str(size),
        "--model.network.image_options", json.dumps(image),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", nargs="+", default=["full"], choices=list(PROBES))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", type=int, default=32, help="scene side in pixels")
    parser.add_argument("--scenes", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64, help="evaluation batch")
    args = parser.parse_args(argv)
    done = set()
    if RESULTS.is_file():
        with RESULTS.open() as f:
            done = {(r["probe"], int(r["steps"]), int(r["size"])) for r in csv.DictReader(f)}
    for name in args.probes:
        if (name, args.steps, args.size) in done:
            print(f"{name}: already in {RESULTS}")
            continue
        switches, change = PROBES[name]
        patch = 8 if change == "patch8" else max(args.size // 8, 1)
        folder = RUNS / f"{name}-{args.size}px-{args.steps}"
        start, wall = _cpu_seconds(), time.perf_counter()
        with code_change(change):
            ckpt, _ = train_or_reuse(
                lcoins_run, folder, CAPSHAPES, args.steps,
                [*size_switches(args.size, patch), *switches,
                 "--trainer.limit_val_batches", "0", "--trainer.logger", "false"],
                progress=False, checkpoint_every=args.steps,
            )  # fmt: skip
            cpu, wall = _cpu_seconds() - start, time.perf_counter() - wall
            scores = evaluate(ckpt, args.scenes, "val", batch_size=args.batch_size)
        row = {
            "probe": name,
            "switches": " ".join(switches) + (f" [code: {change}]" if change else ""),
            "size": args.size,
            "patch": patch,
            "steps": args.steps,
            "train_cpu_s": round(cpu),
            "train_wall_s": round(wall),
            "psnr": round(scores["psnr"], 3),
            "caption_consistency": round(scores["caption_consistency"], 4),
            "manipulation_accuracy": round(scores["manipulation_accuracy"], 4),
        }
        print(row, flush=True)
        new = not RESULTS.is_file()
        with RESULTS.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


if __name__ == "__main__":
    main()
