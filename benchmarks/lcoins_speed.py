"""L-CoIns speed: training images/s and inference ms/image, fp32 vs bf16 autocast.

Two models, random weights, measured side by side in one run:

* ``capshapes``: the model of ``packages/lcoins/configs/capshapes.yaml`` (a 4-block ViT with
  patch 8 at 64x64, the MiniLM-L6 text encoder frozen, width 128, 4 grouping blocks, 8 groups)
  on a batch of CapShapes training scenes with their captions;
* ``paper-224``: the paper's model at 224x224 (ViT-B/16, a BERT-base architecture with the
  uncased WordPiece vocabulary, width 1024, 12 grouping blocks of 16 heads, 15 groups) on the
  same scenes drawn at 224.

A training step is the module's own (:meth:`lcoins.module.LCoInsModule.losses`): luminance
augmentation, forward, smooth-ℓ1, the second pass of the counter-colour loss, backward and an
AdamW step; bf16 wraps it in ``torch.autocast`` as ``--trainer.precision bf16-mixed`` does.
Inference is ``LCoInsModule.colorize`` under ``torch.inference_mode``. Variants are timed in
interleaved rounds after a warm-up round; each figure is the median over the rounds. Results:
``benchmarks/results/lcoins_speed.{csv,md}``.

    python benchmarks/lcoins_speed.py [--models capshapes paper-224] [--repeats 5]
        [--repeats capshapes=5 paper-224=1] [--threads 2] [--device cpu]

``--repeats`` is one count for every model, or ``MODEL=N`` per model (the paper's model in bf16
takes minutes a step on a CPU without bf16 arithmetic).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from _common import machine_description, markdown_table, scene_batch, sync, write_results

from lcoins.encoders import EMBEDDED_TEXT_ENCODER
from lcoins.module import LCoInsModule

#: The models measured, with their batch on this kind of machine.
#: (network settings, image side, batch)
MODELS: dict[str, tuple[dict, int, int]] = {
    "capshapes": (
        {
            "image_encoder": "vit_tiny_patch16_224",
            "image_options": {"patch_size": 8, "depth": 4, "embed_dim": 128, "num_heads": 4},
            "image_size": 64,
            "text_encoder": EMBEDDED_TEXT_ENCODER,
            "text_pretrained": False,
            "freeze_text_encoder": True,
            "max_caption_length": 48,
            "width": 128,
            "depth": 4,
            "heads": 4,
            "groups": 8,
            "counter_dim": 64,
        },
        64,
        16,
    ),
    "paper-224": (
        {
            "image_encoder": "vit_base_patch16_224",
            "image_size": 224,
            "text_encoder": EMBEDDED_TEXT_ENCODER,  # its vocabulary, BERT-base's shape:
            "text_pretrained": False,
            "text_options": {
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
            },
        },
        224,
        2,
    ),
}
PRECISIONS = ("fp32", "bf16")


class Run:
    """One model at one precision: its module, optimizer and timings."""

    def __init__(self, settings: dict, precision: str, batch: dict, device: torch.device):
        torch.manual_seed(0)
        self.module = LCoInsModule(network=settings).to(device)
        self.precision, self.batch, self.device = precision, batch, device
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)
        self.train_seconds: list[float] = []
        self.infer_seconds: list[float] = []

    def autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16")

    def step(self) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            l = self.module.training_input(self.batch, 0)
            loss = self.module.losses(l, self.batch, 0)["loss"]
        loss.backward()
        self.optimizer.step()
        sync(self.device)

    def infer(self) -> None:
        self.module.eval()
        with torch.inference_mode(), self.autocast():
            self.module.colorize(self.batch["l"], self.batch["caption"])
        sync(self.device)

    def time_round(self) -> None:
        for action, times in ((self.step, self.train_seconds), (self.infer, self.infer_seconds)):
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)


def measure(name: str, repeats: int, device: torch.device) -> list[dict[str, object]]:
    settings, size, batch_size = MODELS[name]
    batch = scene_batch(size, batch_size, device)
    runs = [Run(settings, p, batch, device) for p in PRECISIONS]
    parameters = sum(p.numel() for p in runs[0].module.parameters())
    for run in runs:  # warm-up round
        run.step()
        run.infer()
    for _ in range(repeats):
        for run in runs:
            run.time_round()
    base = statistics.median(runs[0].train_seconds)
    rows = []
    for run in runs:
        train = statistics.median(run.train_seconds)
        rows.append({
            "model": name,
            "size": size,
            "parameters (M)": parameters / 1e6,
            "batch": batch_size,
            "precision": run.precision,
            "train images/s": batch_size / train,
            "train speed-up": base / train,
            "inference ms/image": 1e3 * statistics.median(run.infer_seconds) / batch_size,
        })  # fmt: skip
    return rows


def per_model_repeats(values: Sequence[str], models: Sequence[str]) -> dict[str, int]:
    """``--repeats`` as a count per model: ``["5"]`` for all, or ``["capshapes=5", ...]``."""
    if len(values) == 1 and "=" not in values[0]:
        return dict.fromkeys(models, int(values[0]))
    counts = dict(v.split("=", 1) for v in values)
    missing = [m for m in models if m not in counts]
    if missing or any("=" not in v for v in values):
        raise SystemExit(f"--repeats: give N, or MODEL=N for each of {list(models)}")
    return {m: int(counts[m]) for m in models}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", nargs="+", default=["5"], help="N, or MODEL=N per model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = per_model_repeats(args.repeats, args.models)
    rows = []
    for name in args.models:
        rows += measure(name, repeats[name], device)
        for row in rows[-len(PRECISIONS) :]:
            print(row, flush=True)
    md = [
        "# L-CoIns speed: training images/s and inference ms/image, fp32 vs bf16",
        "",
        f"Machine: {machine_description(device)}.",
        "",
        "Random weights; CapShapes training scenes with their captions. A training step: "
        "luminance augmentation, forward, smooth-l1, the counter-colour loss's second pass, "
        "backward, AdamW. bf16: `torch.autocast` (as `--trainer.precision bf16-mixed`). Median "
        f"of interleaved rounds ({', '.join(f'{k}: {v}' for k, v in repeats.items())}) after one "
        "warm-up round; speed-up against fp32 of the same model in the same run.",
        "",
        markdown_table(rows),
        "bf16 speeds training only where the hardware has bf16 arithmetic (AVX512-BF16/AMX on "
        "CPUs, tensor cores on GPUs).",
        "",
    ]
    csv_path, md_path = write_results("lcoins_speed", rows, "\n".join(md))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
