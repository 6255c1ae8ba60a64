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

``--profile`` times the parts of one fp32 training step of the CapShapes model instead (scenes
of ``--size`` pixels, patch ``size / 8``, batch 16): the frozen text encoder on the batch's
captions, the ViT, and the whole step (forward, backward, AdamW) two ways, with the
counter-colour pass of Eq. 15 run after the first (two text-encoder calls and two passes of the
grouping blocks, the former code) and stacked under it as one batch of 2B rows (the module's
``losses``). Results: ``benchmarks/results/lcoins_step_profile.{csv,md}``.

    python benchmarks/lcoins_speed.py --profile [--size 32] [--repeats 10] [--threads 1]
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


def two_pass_loss(module: LCoInsModule, l: torch.Tensor, batch: dict) -> torch.Tensor:
    """Eq. 16 with the counter-colour pass run after the first (the former ``losses``)."""
    from chromalab.color import normalize_ab
    from lcoins.losses import counter_color_loss, smooth_l1, total_loss

    captions = list(batch["caption"])
    image = module.network.encode_image(l)
    out = module.network(l, *module.encode(captions, len(captions)), image=image)
    swapped, changed = module.counter_captions(captions, 0)
    other = module.network(l, *module.encode(swapped, len(captions)), image=image, decode=False)
    counter = counter_color_loss(
        out.counter_language, out.words, out.counter_groups,
        other.counter_language, other.words, other.counter_groups,
    )[changed].mean()  # fmt: skip
    regression = smooth_l1(out.ab, normalize_ab(batch["ab"]), module.hparams.delta)
    return total_loss(regression, counter, module.hparams.alpha, module.hparams.beta)


def profile(size: int, repeats: int) -> list[dict[str, object]]:
    """Milliseconds of the parts of one training step of the CapShapes model at ``size``."""
    settings = MODELS["capshapes"][0] | {
        "image_size": size,
    }
    settings["image_options"] = settings.get("image_options", {}) | {"patch_size": size // 8}
    batch = scene_batch(size, 16)
    torch.manual_seed(0)
    module = LCoInsModule(network=settings).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    captions = list(batch["caption"])

    def step(loss_of) -> None:
        optimizer.zero_grad(set_to_none=True)
        l = module.training_input(batch, 0)
        loss_of(l).backward()
        optimizer.step()

    with torch.no_grad():
        swapped = module.counter_captions(captions, 0)[0]
    parts = {
        "text encoder, 16 captions": lambda: module.network.text_encoder(
            *module.encode(captions, 16)
        ),
        "text encoder, 16 + 16 captions stacked": lambda: module.network.text_encoder(
            *module.encode(captions + swapped, 32)
        ),
        "ViT forward": lambda: module.network.encode_image(batch["l"]),
        "training step, counter pass after the first": lambda: step(
            lambda l: two_pass_loss(module, l, batch)
        ),
        "training step, counter pass stacked (losses)": lambda: step(
            lambda l: module.losses(l, batch, 0)["loss"]
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for round_ in range(repeats + 1):  # the first round warms up
        for name, action in parts.items():
            start = time.perf_counter()
            action()
            if round_:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["training step, counter pass after the first"])
    return [
        {"part": name, "size": size, "batch": 16, "ms": 1e3 * statistics.median(t),
         "share of the former step": statistics.median(t) / base}
        for name, t in times.items()
    ]  # fmt: skip


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
    parser.add_argument("--profile", action="store_true", help="time the parts of a step")
    parser.add_argument("--size", type=int, default=32, help="--profile: scene side")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        repeats = int(args.repeats[0])
        rows = profile(args.size, repeats)
        for row in rows:
            print(row, flush=True)
        md = [
            "# L-CoIns: the parts of a training step",
            "",
            f"Machine: {machine_description()}.",
            "",
            f"The CapShapes model (`packages/lcoins/configs/capshapes.yaml`: MiniLM-L6 frozen, "
            f"width 128, 4 grouping blocks, 8 groups) at {args.size} px with patch "
            f"{args.size // 8}, batch 16, fp32, random weights. Median of {repeats} interleaved "
            "rounds after one warm-up round. A training step: luminance augmentation, forward, "
            "smooth-l1, the counter-colour pass, backward, AdamW; the two steps differ only in "
            "how the counter-colour pass runs (after the first pass, or stacked under it as one "
            "batch of 32 rows). Share: against the step with the pass after the first.",
            "",
            markdown_table(rows),
        ]
        csv_path, md_path = write_results("lcoins_step_profile", rows, "\n".join(md))
        print(f"wrote {csv_path} and {md_path}")
        return
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
