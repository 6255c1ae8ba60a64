"""Helpers shared by the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import csv
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description(device: torch.device | None = None) -> str:
    parts = [
        f"CPU: {cpu_model()}",
        f"torch threads: {torch.get_num_threads()}",
        f"torch {torch.__version__}",
        f"Python {platform.python_version()}",
    ]
    if device is not None and device.type == "cuda":
        parts.insert(1, f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(
    fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scene_batch(size: int, batch: int, device: torch.device | str = "cpu") -> dict:
    """The first ``batch`` CapShapes training scenes at ``size`` as a training batch: ``rgb``,
    ``l``, ``ab``, ``caption`` and ``level``."""
    from torch.utils.data import default_collate

    from chromalab.color import rgb_to_l_ab
    from chromalab.data import CapShapes

    scenes = CapShapes(length=batch, size=size, seed=0)
    items = default_collate([scenes[i] for i in range(batch)])
    l, ab = rgb_to_l_ab(items["rgb"])
    return {"rgb": items["rgb"].to(device), "l": l.to(device), "ab": ab.to(device),
            "caption": list(items["caption"]), "level": list(items["level"])}  # fmt: skip


@torch.no_grad()
def no_colour_reference(scenes: int, size: int, options: dict | None = None) -> dict[str, object]:
    """The grey input (ab = 0) scored like a model on the first ``scenes`` CapShapes test
    scenes at ``size`` (CapShapes ``options``): ``model``, ``PSNR``, ``SSIM``, ``LPIPS`` (empty),
    ``caption consistency`` and its per-level and unmentioned-canonical columns, and an empty
    ``manipulation accuracy``."""
    from torch.utils.data import DataLoader

    from chromalab.color import rgb_to_l_ab
    from chromalab.data import ColorizationDataModule
    from chromalab.io import recombine
    from chromalab.metrics import CaptionConsistency
    from chromalab.metrics.perceptual import psnr_ssim_metrics

    data = ColorizationDataModule(
        source="capshapes", capshapes_size=size, image_size=size, batch_size=64,
        eval_batch_size=64, capshapes_val_length=scenes, capshapes_options=dict(options or {}),
    )  # fmt: skip
    data.setup("test")
    image, consistency = psnr_ssim_metrics(), CaptionConsistency()
    loader = data.test_dataloader()
    for batch in loader if isinstance(loader, DataLoader) else loader[0]:
        l, ab = rgb_to_l_ab(batch["rgb"])
        grey = torch.zeros_like(ab)
        image.update(recombine(l, grey).clamp(0, 1), batch["rgb"])
        consistency.update(grey, batch["masks"], batch["color_ids"], batch["mentioned"],
                           batch["level"], batch.get("canonical"))  # fmt: skip
    scores, caption = image.compute(), consistency.compute()
    row: dict[str, object] = {
        "model": "no colour (ab = 0)",
        "PSNR": float(scores["psnr"]),
        "SSIM": float(scores["ssim"]),
        "LPIPS": "",
        "caption consistency": float(caption["accuracy"]),
    }
    for key, value in caption.items():
        if key != "accuracy":
            row[key.replace("accuracy", "consistency").replace("_", " ")] = float(value)
    row["manipulation accuracy"] = ""
    return row


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (no machine's absolute path)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def named_paths(paths: dict[str, str]) -> str:
    """``"NAME `path`, ..."`` with paths inside the repository written relative to it."""
    shown = []
    for name, path in paths.items():
        p = Path(path)
        shown.append(f"{name} `{p.relative_to(REPO) if p.is_relative_to(REPO) else p}`")
    return ", ".join(shown)


def write_results(name: str, rows: list[dict[str, object]], markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.csv`` (rows; the columns are every key of every row, in order of
    appearance, blank where a row lacks one) and ``results/<name>.md`` (markdown)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = RESULTS / f"{name}.csv", RESULTS / f"{name}.md"
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(markdown)
    return csv_path, md_path


def markdown_table(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
