"""L-CAD speed: training steps/s of each stage and sampling time, to size runs.

Measured side by side in one run, random weights:

* ``tiny`` and ``capshapes``: the three training stages of ``packages/lcad/configs/
  {tiny,capshapes}-{autoencoder,compression,diffusion}.yaml`` (their models and batch sizes) on
  CapShapes training scenes: one optimizer step of the module's own loss (stage 1 with the
  discriminator active), fp32; and, for stage 2, one image's DDIM sampling at the config's
  ``sampling.steps`` with batched classifier-free guidance (:meth:`lcad.stages.LCADDiffusionModule.
  colorize_rgb`).
* ``sd-unet-256``: Stable Diffusion v1.5's UNet architecture (860M parameters, random weights)
  with the paper's channel-extended convolutions (``cec: all_down``, 512 luminance channels) at
  256x256 (32x32 latents), batch 1, 77 caption tokens of width 768: one training step of the
  paper's trainable set (``W_ext`` only, Adam) and one sampling step (a guided batch of 2),
  fp32 against bf16 autocast (``--trainer.precision bf16-mixed``).

Each figure is the median over ``--repeats`` interleaved rounds after one warm-up round.
Results: ``benchmarks/results/lcad_speed.{csv,md}``.

    python benchmarks/lcad_speed.py [--models tiny capshapes sd-unet-256] [--repeats 5]
        [--repeats tiny=5 capshapes=5 sd-unet-256=2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import yaml
from _common import machine_description, markdown_table, scene_batch, write_results
from diffusers import UNet2DConditionModel

from lcad.cec import LuminanceUNet
from lcad.cli import CONFIGS, STAGES

STAGE_ORDER = ("autoencoder", "compression", "diffusion")
#: Stable Diffusion v1.5's UNet (its ``unet/config.json``); the rest are diffusers' defaults.
SD_UNET = {
    "sample_size": 32,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
}
MODELS = ("tiny", "capshapes", "sd-unet-256")


def _median(fn: Callable[[], None], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)


def stage_module(config: str, stage: str) -> tuple[torch.nn.Module, int, int]:
    """The random-weight module of a stage config, its image size and batch size."""
    settings = yaml.safe_load((CONFIGS / f"{config}-{stage}.yaml").read_text())
    model = {k: v for k, v in settings["model"].items() if not k.endswith("_from")}
    if stage == "compression":
        # time the steps with the discriminator
        model["discriminator"] = {**model.get("discriminator", {}), "start": 0}
    torch.manual_seed(0)
    data = settings["data"]
    return STAGES[stage](**model), int(data["image_size"]), int(data["batch_size"])


class StageRun:
    """One stage of one config: a training step, and for stage 2 a sampling."""

    def __init__(self, config: str, stage: str):
        self.config, self.stage = config, stage
        self.module, self.size, self.batch_size = stage_module(config, stage)
        self.batch = scene_batch(self.size, self.batch_size)
        self.optimizer = self.module.configure_optimizers()
        self.train_seconds: list[float] = []
        self.sample_seconds: list[float] = []

    def step(self) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.stage == "compression":
            loss = self.module.losses(self.batch)["loss"]
        else:
            loss = self.module.training_step(self.batch, 0)
        loss.backward()
        self.optimizer.step()

    def sample(self) -> None:
        self.module.eval()
        with torch.inference_mode():
            self.module.colorize_rgb(self.batch["l"][:1], self.batch["caption"][:1])

    def time_round(self) -> None:
        _median(self.step, self.train_seconds)
        if self.stage == "diffusion":
            _median(self.sample, self.sample_seconds)

    def row(self) -> dict[str, object]:
        train = statistics.median(self.train_seconds)
        params = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        sampling = ""
        if self.sample_seconds:
            sampling = statistics.median(self.sample_seconds)
        return {
            "model": f"{self.config}-{self.stage}",
            "size": self.size,
            "batch": self.batch_size,
            "precision": "fp32",
            "trained parameters (M)": params / 1e6,
            "train steps/s": 1 / train,
            "train images/s": self.batch_size / train,
            "sampling s/image": sampling,
            "sampling steps": self.module.sampling.steps if self.sample_seconds else "",
        }


class SDRun:
    """Stable Diffusion's UNet with the paper's CEC at 256x256, at one precision."""

    def __init__(self, precision: str):
        torch.manual_seed(0)
        self.precision = precision
        self.unet = LuminanceUNet(UNet2DConditionModel(**SD_UNET), 512, "all_down")
        self.unet.requires_grad_(False)
        params = list(self.unet.extension_parameters())
        for p in params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(params, lr=5e-5)
        self.latent = torch.randn(1, 4, 32, 32)
        self.features = torch.randn(1, 512, 32, 32)
        self.context = torch.randn(1, 77, 768)
        self.t = torch.tensor([500])
        self.train_seconds: list[float] = []
        self.sample_seconds: list[float] = []

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast("cpu", torch.bfloat16)
        return nullcontext()

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast(), self.unet.luminance(self.features):
            pred = self.unet(self.latent, self.t, self.context)
        pred.float().square().mean().backward()
        self.optimizer.step()

    def sample(self) -> None:
        with torch.inference_mode(), self.autocast(), self.unet.luminance(self.features):
            self.unet(torch.cat((self.latent, self.latent)), self.t,
                      torch.cat((self.context, self.context)))  # fmt: skip

    def time_round(self) -> None:
        _median(self.step, self.train_seconds)
        _median(self.sample, self.sample_seconds)

    def row(self, base: float | None) -> dict[str, object]:
        train = statistics.median(self.train_seconds)
        return {
            "model": "sd-unet-256",
            "size": 256,
            "batch": 1,
            "precision": self.precision,
            "trained parameters (M)": sum(p.numel() for p in self.unet.extension_parameters())
            / 1e6,
            "train steps/s": 1 / train,
            "train images/s": 1 / train,
            "sampling s/image": statistics.median(self.sample_seconds),
            "sampling steps": 1,
            "all parameters (M)": sum(p.numel() for p in self.unet.parameters()) / 1e6,
            "speed-up vs fp32": "" if base is None else base / train,
        }


def repeats_per_model(values: Sequence[str], models: Sequence[str]) -> dict[str, int]:
    """``--repeats`` as a count per model: ``["5"]`` for all, or ``["tiny=5", ...]``."""
    if len(values) == 1 and "=" not in values[0]:
        return dict.fromkeys(models, int(values[0]))
    counts = dict(v.split("=", 1) for v in values if "=" in v)
    if len(counts) != len(values) or any(m not in counts for m in models):
        raise SystemExit(f"--repeats: give N, or MODEL=N for each of {list(models)}")
    return {m: int(counts[m]) for m in models}


def measure(name: str, repeats: int) -> list[dict[str, object]]:
    if name == "sd-unet-256":
        runs = [SDRun("fp32"), SDRun("bf16")]
    else:
        runs = [StageRun(name, stage) for stage in STAGE_ORDER]
    for _ in range(repeats + 1):  # the first round warms up
        for run in runs:
            run.time_round()
    for run in runs:
        del run.train_seconds[0]
        if run.sample_seconds:
            del run.sample_seconds[0]
    if name == "sd-unet-256":
        base = statistics.median(runs[0].train_seconds)
        return [run.row(base) for run in runs]
    return [run.row() for run in runs]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", nargs="+", default=["5"], help="N, or MODEL=N per model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = repeats_per_model(args.repeats, args.models)
    rows: list[dict[str, object]] = []
    for name in args.models:
        new = measure(name, repeats[name])
        for row in new:
            print(row, flush=True)
        rows += new
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = [{key: row.get(key, "") for key in columns} for row in rows]
    md = [
        "# L-CAD speed: training steps/s per stage and sampling time",
        "",
        f"Machine: {machine_description()}.",
        "",
        "Random weights. `tiny-*`/`capshapes-*`: the stage configs' models and batches on "
        "CapShapes training scenes, one optimizer step of the module's loss (stage 1 with its "
        "discriminator), fp32; sampling: one image, DDIM at the config's steps with batched "
        "classifier-free guidance, decoded. `sd-unet-256`: Stable Diffusion v1.5's UNet with "
        "the paper's channel-extended convolutions at 256x256, batch 1: a training step of "
        "`W_ext` (Adam) and one guided sampling step (a UNet batch of 2). Median of "
        f"interleaved rounds ({', '.join(f'{k}: {v}' for k, v in repeats.items())}) after a "
        "warm-up round.",
        "",
        markdown_table(rows),
        "bf16 speeds training only where the hardware has bf16 arithmetic (AVX512-BF16/AMX on "
        "CPUs, tensor cores on GPUs).",
        "",
    ]
    csv_path, md_path = write_results("lcad_speed", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
