"""CapShapes generation speed on one CPU core (target: at least 500 scenes/s at 64x64).

Rows, all measured in the same run with ``torch.set_num_threads(1)``:

* ``CapShapes[i]`` at 64, 128 and 256 pixels: a full item (scene, masks, caption);
* ``DataLoader`` (batch 64, no workers): items plus default collation;
* baseline ``read exported PNG``: loading the same 64x64 scenes back from a ``folder`` export
  (PIL decode + tensor conversion + the caption line), i.e. what a pre-rendered dataset costs;
* floor ``lab_to_rgb only``: the one colour conversion every scene needs, alone.

Results: benchmarks/results/capshapes_speed.{csv,md}.

    python benchmarks/capshapes_speed.py [--scenes 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import machine_description, markdown_table, time_it, write_results
from PIL import Image
from torch.utils.data import DataLoader

from chromalab.color import lab_to_rgb
from chromalab.data.capshapes import CapShapes, export_capshapes, gamut_max_chroma

TARGET = 500.0
CPU = torch.device("cpu")


def read_export(folder: Path) -> None:
    for line in (folder / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        with Image.open(folder / record["image"]) as image:
            torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float().div(255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.scenes

    rows: list[dict[str, object]] = []

    def record(name: str, size: int, seconds: float, count: int) -> None:
        rows.append(
            {
                "benchmark": name,
                "size": size,
                "scenes": count,
                "median seconds": seconds,
                "scenes/s": count / seconds,
                "vs target (500/s)": count / seconds / TARGET,
            }
        )
        print(rows[-1])

    gamut_seconds = time_it(lambda: gamut_max_chroma.__wrapped__(), CPU, repeats=1, warmup=0)
    for size in (64, 128, 256):
        dataset = CapShapes(length=10**9, size=size)
        count = n if size == 64 else max(n // 4, 50)
        starts = iter(range(0, 10**8, count))

        def generate(ds: CapShapes = dataset, count: int = count, starts=starts) -> None:
            start = next(starts)  # fresh indices each run
            for i in range(start, start + count):
                ds[i]

        record("CapShapes[i]", size, time_it(generate, CPU, repeats=args.repeats), count)

    loader_data = CapShapes(length=n, size=64)
    loader = DataLoader(loader_data, batch_size=64, num_workers=0)
    record("DataLoader(batch 64)", 64, time_it(lambda: list(loader), CPU, args.repeats), n)

    with tempfile.TemporaryDirectory() as tmp:
        folder = export_capshapes(Path(tmp) / "capshapes", n, format="folder", size=64)
        record(
            "read exported PNG (baseline)",
            64,
            time_it(lambda: read_export(folder), CPU, args.repeats),
            n,
        )

    lab = torch.stack(
        [torch.full((64, 64), 60.0), torch.full((64, 64), 20.0), torch.full((64, 64), -30.0)]
    )

    def convert() -> None:
        for _ in range(n):
            lab_to_rgb(lab)

    record("lab_to_rgb only (floor)", 64, time_it(convert, CPU, args.repeats), n)

    main_rate = rows[0]["scenes/s"]
    verdict = "meets" if main_rate >= TARGET else "misses"
    md = (
        "# CapShapes generation speed\n\n"
        f"Machine: {machine_description(CPU)} (`torch.set_num_threads(1)`: one core).\n\n"
        "Scenes of 1-4 objects with captions, generated on the fly by `CapShapes.__getitem__` "
        f"(default settings); median of {args.repeats} runs over fresh indices. Baseline: "
        "reading the same scenes back from a `folder` export (PIL PNG decode); floor: the "
        "single `lab_to_rgb` every scene needs. All rows measured in this run. The gamut "
        f"table is built once per process ({gamut_seconds:.2f} s, not counted).\n\n"
        + markdown_table(rows)
        + f"\nAt 64x64, {main_rate:.0f} scenes/s {verdict} the 500 scenes/s target.\n"
    )
    write_results("capshapes_speed", rows, md)
    print(md)


if __name__ == "__main__":
    main()
