"""CIC training and inference speed: fp32 vs bf16 autocast vs channels_last, against matmul peak.

For each input size (default 176, the paper's training crop, and 256, its evaluation size) and
each variant of {fp32, bf16 autocast} x {NCHW, channels_last}, all measured in the same run:

* training images/s: one full ``CICModule`` step on a synthetic batch (forward, soft targets
  encoded on the device and the rebalanced cross-entropy of ``CICModule._loss``, backward, Adam
  step); bf16 wraps forward and loss in ``torch.autocast``, as ``precision="bf16-mixed"`` does;
* inference ms/image: ``CICModule.colorize`` (forward + annealed mean, Eq. 8) in
  ``torch.inference_mode``;
* achieved GFLOP/s: FLOPs counted exactly by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matmuls, 2 FLOPs per multiply-add) divided by the median time, set against
  the ``torch.mm`` peak of the same dtype measured at the start and the end of the run;
* numerics: relative change of the loss and mean absolute change of the predicted ab against
  the fp32 NCHW variant, from identically initialised networks on the same batch.

The variants are timed in interleaved rounds, so load from other processes on a shared machine
falls on all of them alike. Results: benchmarks/results/cic_speed.{csv,md}.

    python benchmarks/cic_speed.py [--device cpu|cuda] [--width 1.0] [--sizes 176 256]
                                   [--batch B] [--repeats R] [--threads T]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from _common import machine_description, markdown_table, time_it, write_results
from torch.utils.flop_counter import FlopCounterMode

from chromalab.color import rgb_to_l_ab
from cic.module import CICModule

#: Per-device defaults: (batch, repeats, matmul side). The CPU ones keep the whole default run
#: (full network, both sizes, four variants) within a few minutes on two cores.
DEFAULTS = {"cpu": (2, 5, 2048), "cuda": (32, 20, 8192)}


@dataclass(frozen=True)
class Variant:
    """One execution configuration: bf16 autocast or not, channels-last memory or not."""

    name: str
    bf16: bool
    channels_last: bool


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", bf16=False, channels_last=False),
    Variant("bf16 autocast", bf16=True, channels_last=False),
    Variant("fp32 channels_last", bf16=False, channels_last=True),
    Variant("bf16 autocast + channels_last", bf16=True, channels_last=True),
)


def autocast(device: torch.device, bf16: bool):
    """``torch.autocast`` to bfloat16 on ``device`` when ``bf16``, else a no-op context."""
    if not bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n x n`` by ``n x n`` ``torch.mm`` in ``dtype`` (2 n^3 FLOPs)."""
    if n < 1:
        raise ValueError(f"matmul side must be positive, got {n}")
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    seconds = time_it(lambda: torch.mm(a, b), device, repeats=repeats, warmup=2)
    return 2.0 * n**3 / seconds / 1e9


def synthetic_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> dict:
    """A CIC batch dict of smooth random colour fields.

    Returns ``{"l": (B, 1, S, S) in [0, 100], "ab": (B, 2, S, S), "rgb": (B, 3, S, S) in
    [0, 1]}``, float32 on ``device``.
    """
    if size % 8:
        raise ValueError(f"size must be a multiple of 8 (the network's stride), got {size}")
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(1, size // 16), max(1, size // 16), generator=g)
    rgb = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    rgb = rgb.clamp(0, 1).to(device)
    l, ab = rgb_to_l_ab(rgb)
    return {"l": l, "ab": ab, "rgb": rgb}


def build_module(
    width: float, channels_last: bool, device: torch.device, seed: int = 0
) -> CICModule:
    """A ``CICModule`` with seeded weights and ready (non-uniform) rebalancing weights.

    The same ``seed`` gives the same network for every variant, so their outputs compare.
    """
    torch.manual_seed(seed)
    module = CICModule(width=width, channels_last=channels_last)
    g = torch.Generator().manual_seed(seed + 1)
    module.class_weights.copy_(0.5 + torch.rand(module.bins.num_bins, generator=g))
    module.weights_ready.fill_(True)  # no prior estimation: the weights above stand in
    return module.to(device)


def make_optimizer(module: CICModule) -> torch.optim.Optimizer:
    """The module's own Adam (``configure_optimizers``), stepped by hand: no Trainer."""
    return module.configure_optimizers()["optimizer"]


def train_step(
    module: CICModule, optimizer: torch.optim.Optimizer, batch: dict, bf16: bool
) -> torch.Tensor:
    """One optimisation step; returns the (detached) loss."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(batch["l"].device, bf16):
        loss, _ = module._loss(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


def infer(module: CICModule, l: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``module.colorize(l)`` under inference mode (and bf16 autocast when asked)."""
    with torch.inference_mode(), autocast(l.device, bf16):
        return module.colorize(l)


def count_flops(module: CICModule, batch: dict) -> tuple[float, float]:
    """FLOPs per image of inference (``colorize``) and of a training forward + backward.

    Counted by ``FlopCounterMode`` (convolution, transposed convolution and matmul kernels,
    forward and backward, 2 FLOPs per multiply-add; elementwise ops such as ReLU, BatchNorm and
    the softmax are not counted). The module is left in eval mode with no gradients.
    """
    images = batch["l"].shape[0]
    module.eval()
    with FlopCounterMode(display=False) as mode:
        infer(module, batch["l"], bf16=False)
    inference = mode.get_total_flops()
    module.train()
    with FlopCounterMode(display=False) as mode:
        loss, _ = module._loss(batch)
        loss.backward()
    training = mode.get_total_flops()
    module.zero_grad(set_to_none=True)
    module.eval()
    return inference / images, training / images


@dataclass
class VariantRun:
    """One variant's state at one size: module, optimizer, batch and measurements so far."""

    variant: Variant
    module: CICModule
    optimizer: torch.optim.Optimizer
    data: dict
    loss: torch.Tensor
    ab: torch.Tensor
    train_seconds: list[float] = field(default_factory=list)
    infer_seconds: list[float] = field(default_factory=list)

    def warm_up(self) -> None:
        """One untimed inference and training step: kernel selection, Adam state."""
        self.module.eval()
        infer(self.module, self.data["l"], self.variant.bf16)
        self.module.train()
        train_step(self.module, self.optimizer, self.data, self.variant.bf16)

    def time_round(self, device: torch.device) -> None:
        """Time one inference and one training step."""
        self.module.eval()
        fn = partial(infer, self.module, self.data["l"], self.variant.bf16)
        self.infer_seconds.append(time_it(fn, device, repeats=1, warmup=0))
        self.module.train()
        fn = partial(train_step, self.module, self.optimizer, self.data, self.variant.bf16)
        self.train_seconds.append(time_it(fn, device, repeats=1, warmup=0))


def prepare_variant(
    variant: Variant, size: int, width: float, batch: int, device: torch.device
) -> VariantRun:
    """Build the variant's module and batch and record its first loss and prediction.

    Every variant gets the same seeded weights and batch, so these outputs compare.
    """
    data = synthetic_batch(batch, size, device)
    module = build_module(width, variant.channels_last, device)
    module.eval()
    ab = infer(module, data["l"], variant.bf16).float()
    module.train()
    with torch.no_grad(), autocast(device, variant.bf16):
        loss = module._loss(data)[0].float()
    return VariantRun(variant, module, make_optimizer(module), data, loss, ab)


def measure_size(
    size: int,
    width: float,
    batch: int,
    repeats: int,
    device: torch.device,
    flops: tuple[float, float],
    variants: Sequence[Variant] = VARIANTS,
) -> list[dict[str, object]]:
    """Time every variant at one size; one row per variant.

    The variants are timed in interleaved rounds (each round: one inference and one training
    step of every variant), after one warm-up round, so that load from other processes on a
    shared machine falls on all of them alike. Each figure is the median over ``repeats``
    rounds. The first variant is the reference of the numerics columns.

    Args:
        flops: ``(inference, training)`` FLOPs per image from :func:`count_flops`.
    """
    runs = [prepare_variant(v, size, width, batch, device) for v in variants]
    for run in runs:
        run.warm_up()
    for _ in range(repeats):
        for run in runs:
            run.time_round(device)
    infer_flops, train_flops = flops
    reference = runs[0]
    rows: list[dict[str, object]] = []
    for run in runs:
        train_s = statistics.median(run.train_seconds)
        infer_s = statistics.median(run.infer_seconds)
        loss_change = ((run.loss - reference.loss).abs() / reference.loss.abs()).item()
        rows.append(
            {
                "size": size,
                "variant": run.variant.name,
                "train images/s": batch / train_s,
                "train GFLOP/s": train_flops * batch / train_s / 1e9,
                "train % of peak": math.nan,  # filled by run_benchmark with the final peaks
                "inference ms/image": 1e3 * infer_s / batch,
                "inference GFLOP/s": infer_flops * batch / infer_s / 1e9,
                "inference % of peak": math.nan,
                "loss rel. change": float(loss_change),
                "mean abs ab change": float((run.ab - reference.ab).abs().mean().item()),
            }
        )
    return rows


def run_benchmark(
    device: torch.device,
    width: float,
    sizes: Sequence[int],
    batch: int,
    repeats: int,
    matmul_n: int,
    variants: Sequence[Variant] = VARIANTS,
    log: bool = False,
) -> tuple[list[dict[str, object]], dict[str, float], dict[int, tuple[float, float]]]:
    """Every variant at every size, plus the matmul peaks and the FLOP counts.

    The first variant is the reference for the numerics columns (fp32 NCHW by default).

    Returns:
        ``(rows, peaks, flops)``: result rows; matmul GFLOP/s by ``"fp32"``/``"bf16"``;
        ``{size: (inference, training) FLOPs per image}``.
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be >= 1, got {batch} and {repeats}")
    peak_repeats = max(repeats, 5)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {k: matmul_peak(device, dt, matmul_n, peak_repeats) for k, dt in dtypes.items()}
    rows: list[dict[str, object]] = []
    flops: dict[int, tuple[float, float]] = {}
    by_name = {v.name: v for v in variants}
    for size in sizes:
        flops[size] = count_flops(
            build_module(width, False, device), synthetic_batch(1, size, device)
        )
        for row in measure_size(size, width, batch, repeats, device, flops[size], variants):
            rows.append(row | {"_bf16": by_name[row["variant"]].bf16})
            if log:
                print({k: v for k, v in row.items() if "peak" not in k}, flush=True)
    # a peak is the best the machine does: measured again at the end, the higher one kept
    for k, dt in dtypes.items():
        peaks[k] = max(peaks[k], matmul_peak(device, dt, matmul_n, peak_repeats))
    if log:
        print(f"matmul peaks (n={matmul_n}): {peaks}", flush=True)
    for row in rows:
        peak = peaks["bf16" if row.pop("_bf16") else "fp32"]
        row["train % of peak"] = 100.0 * float(row["train GFLOP/s"]) / peak
        row["inference % of peak"] = 100.0 * float(row["inference GFLOP/s"]) / peak
    return rows, peaks, flops


def best_variant(rows: Sequence[dict[str, object]]) -> tuple[str, float]:
    """The variant with the highest geometric-mean speed-up over the first variant.

    The mean runs over every size and over both training (images/s) and inference (ms/image)
    measurements. Returns ``(name, speed-up)``.
    """
    baseline_name = rows[0]["variant"]
    base = {r["size"]: r for r in rows if r["variant"] == baseline_name}
    logs: dict[str, list[float]] = {}
    for r in rows:
        b = base[r["size"]]
        logs.setdefault(r["variant"], []).extend(
            [
                math.log(r["train images/s"] / b["train images/s"]),
                math.log(b["inference ms/image"] / r["inference ms/image"]),
            ]
        )
    name = max(logs, key=lambda k: sum(logs[k]) / len(logs[k]))
    return name, math.exp(sum(logs[name]) / len(logs[name]))


def _fastest(rows: Sequence[dict[str, object]], size: int, key: str, high: bool) -> str:
    candidates = [r for r in rows if r["size"] == size]
    pick = max if high else min
    return str(pick(candidates, key=lambda r: r[key])["variant"])


def render_markdown(
    rows: list[dict[str, object]],
    peaks: dict[str, float],
    flops: dict[int, tuple[float, float]],
    device: torch.device,
    width: float,
    batch: int,
    repeats: int,
    matmul_n: int,
    load_average: float | None = None,
) -> str:
    """The results page: machine, settings, FLOP counts, peaks, table, best configuration."""
    best, speedup = best_variant(rows)
    flop_lines = "\n".join(
        f"| {s} | {f[0] / 1e9:.2f} | {f[1] / 1e9:.2f} | {f[1] / f[0]:.3f} |"
        for s, f in flops.items()
    )
    winners = "\n".join(
        f"- {s}x{s}: training fastest with **{_fastest(rows, s, 'train images/s', True)}**, "
        f"inference fastest with **{_fastest(rows, s, 'inference ms/image', False)}**."
        for s in flops
    )
    best_rows = [r for r in rows if r["variant"] == best]
    worst_loss = max(float(r["loss rel. change"]) for r in best_rows)
    worst_ab = max(float(r["mean abs ab change"]) for r in best_rows)
    settings = (
        f"`CICModule(width={width})` (gamut bins, Q = 261; width 1.0 is the paper's network), "
        f"batch {batch}, median of {repeats} timed rounds after 1 warm-up round (variants "
        f"interleaved within each round), on `{device}`"
    )
    if load_average is not None:
        settings += f"; 1-minute load average at the start {load_average:.2f} (shared machine)"
    if device.type == "cuda":
        settings += (
            f"; cudnn.benchmark={torch.backends.cudnn.benchmark}, "
            f"cudnn TF32={torch.backends.cudnn.allow_tf32}, "
            f"matmul TF32={torch.backends.cuda.matmul.allow_tf32}"
        )
    return (
        "# CIC speed: fp32 vs bf16 autocast vs channels_last\n\n"
        f"Machine: {machine_description(device)}.\n\n"
        f"Settings: {settings}. Data: synthetic batches of smooth random colour fields "
        "(`l`, `ab`, `rgb`). Training = one full step: forward, soft-encoded targets (k = 10, "
        "sigma = 5) computed on the device, class-rebalanced cross-entropy (`CICModule._loss`), "
        "backward and the module's Adam step; bf16 autocasts forward and loss, as Lightning's "
        '`precision="bf16-mixed"` does. Inference = `CICModule.colorize` (forward + annealed '
        "mean) under `torch.inference_mode`.\n\n"
        "FLOPs per image, counted exactly by `torch.utils.flop_counter.FlopCounterMode` "
        "(convolutions, transposed convolution and matmuls, 2 FLOPs per multiply-add; "
        "elementwise ReLU/BatchNorm/softmax not counted). Training is about 3x the forward "
        "pass (forward + gradients of inputs and weights); it is slightly below 3x because "
        "the first convolution needs no input gradient:\n\n"
        "| size | inference GFLOP | training GFLOP | training / inference |\n"
        "|---|---|---|---|\n" + flop_lines + "\n\n"
        f"Matmul peaks, same run (`torch.mm`, {matmul_n}x{matmul_n}): "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s. "
        '"% of peak" compares each variant with the peak of its compute dtype (fp32 or '
        'bf16). "loss rel. change" and "mean abs ab change" (ab units) compare each variant\'s '
        "first loss and prediction with fp32 NCHW from the same initial weights and batch "
        "(freshly initialised weights give flat scores, so the bf16 figures likely understate "
        "the change for a trained model).\n\n"
        + markdown_table(rows)
        + "\n## Best configuration\n\n"
        f"{winners}\n\n"
        f"Overall (geometric mean over sizes, training and inference): **{best}**, "
        f"{speedup:.2f}x the fp32 NCHW speed. Its largest numerical change in this run: "
        f"{worst_loss:.2g} relative on the loss, {worst_ab:.2g} mean ab units on the "
        "prediction.\n\n"
        "## Conclusion\n\n" + _conclusion(rows, peaks, best, speedup) + "\n"
    )


def _span(values: Sequence[float], unit: str = "x", digits: int = 2) -> str:
    """``"1.20x"`` or ``"1.20-1.35x"``: the range of ``values``."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def _conclusion(
    rows: Sequence[dict[str, object]], peaks: dict[str, float], best: str, speedup: float
) -> str:
    """One paragraph generated from the measured rows (so it always matches the table)."""
    base = str(rows[0]["variant"])
    names = list(dict.fromkeys(str(r["variant"]) for r in rows))
    by_name = {v.name: v for v in VARIANTS}

    def of(name: str, key: str) -> list[float]:
        return [float(r[key]) for r in rows if r["variant"] == name]

    def gains(name: str, over: str = base) -> tuple[list[float], list[float]]:
        """Training and inference speed-ups of ``name`` over ``over``, one per size."""
        ref = {r["size"]: r for r in rows if r["variant"] == over}
        mine = [r for r in rows if r["variant"] == name]
        train = [float(r["train images/s"]) / float(ref[r["size"]]["train images/s"]) for r in mine]
        infer = [
            float(ref[r["size"]]["inference ms/image"]) / float(r["inference ms/image"])
            for r in mine
        ]
        return train, infer

    parts = [
        f"Plain {base} runs at {_span(of(base, 'train % of peak'), '%', 0)} of the fp32 matmul "
        f"peak in training and {_span(of(base, 'inference % of peak'), '%', 0)} in inference "
        f"(bf16 matmul peaks at {peaks['bf16'] / peaks['fp32']:.1f}x fp32 here)."
    ]
    for name in names[1:]:
        train, infer = gains(name)
        parts.append(
            f"{name}: training {_span(train)}, inference {_span(infer)} the speed of {base} "
            f"({_span(of(name, 'train % of peak'), '%', 0)} of its dtype's peak in training); "
            f"loss changes by at most {max(of(name, 'loss rel. change')):.1g} (relative), "
            f"predictions by {max(of(name, 'mean abs ab change')):.1g} ab on average."
        )
    pair = ("bf16 autocast + channels_last", "bf16 autocast")
    if all(name in names for name in pair):
        train, infer = gains(*pair)
        parts.append(
            f"Under bf16, channels_last adds {_span(train)} in training and {_span(infer)} in "
            "inference."
        )
    variant = by_name.get(best)
    if best == base:
        parts.append(f"No variant beats plain {base} overall here.")
    else:
        parts.append(f"Best overall: {best} ({speedup:.2f}x).")
        if variant is not None and variant.bf16:
            parts.append(
                "bf16 autocast runs the convolutions in bfloat16 (the loss and annealed mean "
                "stay in float32), so it changes results by bf16 rounding: it suits a "
                "training/inference precision switch rather than a silent default, and its "
                "speed needs hardware bf16 (AMX/AVX512-BF16 on CPUs, tensor cores on GPUs); "
                "channels_last alone only changes the memory layout."
            )
        elif variant is not None and variant.channels_last:
            parts.append(
                "channels_last only changes the memory layout (results agree to float32 "
                "rounding), so it is safe as a default."
            )
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[176, 256])
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 32 on GPU")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 on CPU, 20 on GPU")
    parser.add_argument("--matmul-n", type=int, default=None, help="default: 2048 CPU, 8192 GPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    device = torch.device(args.device)
    batch, repeats, matmul_n = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    batch = args.batch or batch
    repeats = args.repeats or repeats
    matmul_n = args.matmul_n or matmul_n
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    rows, peaks, flops = run_benchmark(
        device, args.width, args.sizes, batch, repeats, matmul_n, log=True
    )
    md = render_markdown(
        rows, peaks, flops, device, args.width, batch, repeats, matmul_n, load_average=load
    )
    write_results("cic_speed", rows, md)
    print(md)


if __name__ == "__main__":
    main()
