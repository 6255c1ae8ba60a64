"""FILM training speed on CapShapes: fp32 vs bf16 autocast, NCHW vs channels_last.

The network and batch of ``packages/film_color/configs/capshapes.yaml`` (FILM, CIC width 0.25,
64-d word vectors, 128 LSTM units a direction, batch 16) on real CapShapes scenes with their
captions, at each scene size (default 64, 96 and 128 pixels). For each variant of
{fp32, bf16 autocast} x {NCHW, channels_last}, all measured in the same run:

* training steps/s: one full step of :class:`film_color.module.FilmColorModule` (caption
  encoding, forward, rebalanced one-hot cross-entropy, backward, Adam step); bf16 wraps forward
  and loss in ``torch.autocast``, as ``--trainer.precision bf16-mixed`` does (the loss itself is
  taken in float32 by the module);
* inference ms/scene: ``FilmColorModule.colorize`` (forward + annealed mean) in
  ``torch.inference_mode``;
* numerics: relative change of the first loss and mean absolute change of the predicted ab
  (ab units) against fp32 NCHW, from identically initialised networks on the same batch.

Variants are timed in interleaved rounds (after one warm-up round), so load from other
processes falls on all of them alike; each figure is the median over the rounds. The module's
``channels_last`` argument (default on) selects the memory layout. Results:
``benchmarks/results/film_speed.{csv,md}``.

    python benchmarks/film_speed.py [--sizes 64 96 128] [--batch 16] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from _common import machine_description, markdown_table, write_results
from cic_speed import VARIANTS, Variant, autocast
from torch.utils.data import default_collate

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from film_color.language import Vocabulary
from film_color.module import FilmColorModule

#: The CapShapes config's network (packages/film_color/configs/capshapes.yaml).
CONFIG_NETWORK = {"conditioning": "film", "width": 0.25, "embedding_dim": 64, "hidden_size": 128}


def scene_batch(size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(l, ab, captions)`` of the first ``batch`` CapShapes training scenes at ``size``."""
    scenes = CapShapes(length=batch, size=size, seed=0)
    items = default_collate([scenes[i] for i in range(batch)])
    l, ab = rgb_to_l_ab(items["rgb"])
    return l, ab, list(items["caption"])


def build(variant: Variant, captions: Sequence[str], seed: int = 0) -> FilmColorModule:
    """A seeded module of the config's size with a non-trivial FiLM (same for every variant)."""
    torch.manual_seed(seed)
    module = FilmColorModule(network=CONFIG_NETWORK, channels_last=variant.channels_last)
    module.set_vocabulary(Vocabulary.build(captions))
    g = torch.Generator().manual_seed(seed + 1)
    for film in module.network.film:  # zero at init (Eq. 2-3 start as identity): make it act
        for p in (film.gamma.weight, film.beta.weight):
            p.data.copy_(0.05 * torch.randn(p.shape, generator=g))
    module.class_weights.copy_(0.5 + torch.rand(module.bins.num_bins, generator=g))
    module.weights_ready.fill_(True)
    return module


class VariantRun:
    """One variant's module, optimizer and timings."""

    def __init__(self, variant: Variant, data: tuple[torch.Tensor, torch.Tensor, list[str]]):
        self.variant, self.data = variant, data
        l, ab, captions = data
        self.module = build(variant, captions)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=1e-4)
        with torch.no_grad(), autocast(l.device, variant.bf16):
            self.loss = self.module.loss(self.module(l, captions), ab).float()
        self.ab = self.infer().float()
        self.train_seconds: list[float] = []
        self.infer_seconds: list[float] = []

    def infer(self) -> torch.Tensor:
        l, _, captions = self.data
        self.module.eval()
        with torch.inference_mode(), autocast(l.device, self.variant.bf16):
            ab = self.module.colorize(l, captions)
        self.module.train()
        return ab

    def step(self) -> None:
        l, ab, captions = self.data
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(l.device, self.variant.bf16):
            loss = self.module.loss(self.module(l, captions), ab)
        loss.backward()
        self.optimizer.step()

    def time_round(self) -> None:
        start = time.perf_counter()
        self.step()
        self.train_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        self.infer()
        self.infer_seconds.append(time.perf_counter() - start)


def measure(size: int, batch: int, repeats: int) -> list[dict[str, object]]:
    """Every variant at one scene size, interleaved; one row per variant (first = reference)."""
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be >= 1, got {batch} and {repeats}")
    data = scene_batch(size, batch)
    runs = [VariantRun(v, data) for v in VARIANTS]
    for run in runs:  # warm-up round, not timed
        run.step()
        run.infer()
    for _ in range(repeats):
        for run in runs:
            run.time_round()
    reference = runs[0]
    base = statistics.median(reference.train_seconds)
    rows = []
    for run in runs:
        train = statistics.median(run.train_seconds)
        rows.append(
            {
                "size": size,
                "variant": run.variant.name,
                "train steps/s": 1.0 / train,
                "train speed-up": base / train,
                "inference ms/scene": 1e3 * statistics.median(run.infer_seconds) / batch,
                "loss rel. change": float((run.loss - reference.loss).abs() / reference.loss),
                "mean abs ab change": float((run.ab - reference.ab).abs().mean()),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        rows += measure(size, args.batch, args.repeats)
        for row in rows[-len(VARIANTS) :]:
            print(row, flush=True)
    best = {
        size: max((r for r in rows if r["size"] == size), key=lambda r: r["train steps/s"])
        for size in args.sizes
    }
    md = [
        "# FILM training speed on CapShapes: fp32 vs bf16, NCHW vs channels_last",
        "",
        f"Machine: {machine_description()}.",
        "",
        f"Model: FILM of `configs/capshapes.yaml` (network {CONFIG_NETWORK}), batch "
        f"{args.batch} of CapShapes training scenes with their captions; median of "
        f"{args.repeats} interleaved rounds after one warm-up round. A training step is the "
        "module's own: caption encoding, forward, rebalanced one-hot loss, backward, Adam. "
        "Numerics: first loss and prediction of each variant against fp32 NCHW, same initial "
        "weights and batch.",
        "",
        markdown_table(rows),
        "Fastest training step per size: "
        + "; ".join(
            f"{size}x{size}: {r['variant']}, {r['train speed-up']:.2f}x fp32 NCHW "
            f"({r['train steps/s']:.2f} steps/s)"
            for size, r in best.items()
        )
        + ". `--trainer.precision bf16-mixed` selects bf16 autocast in `film-color fit`; "
        "channels_last is the module's default (`--model.channels_last`). bf16 speed needs "
        "hardware bf16 (AVX512-BF16/AMX on CPUs, tensor cores on GPUs).",
        "",
    ]
    csv_path, md_path = write_results("film_speed", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
