"""``chromalab.metrics.ABAccuracy`` against torchmetrics' ``MulticlassAccuracy(top_k=k)``.

Both score the same batches of FiLM-sized class scores (625 ab classes at the output grid of
96x96 and 224x224 inputs); the script checks that they agree and times an update of each, side
by side in one run.

::

    python benchmarks/ab_accuracy_speed.py
"""

from __future__ import annotations

import time
from functools import partial

import torch
from _common import machine_description, markdown_table, write_results
from torchmetrics.classification import MulticlassAccuracy

from chromalab.bins import ABBins
from chromalab.metrics import ABAccuracy


def _update_all(metrics: list, logits: torch.Tensor, target: torch.Tensor) -> None:
    for metric in metrics:
        metric.update(logits, target)


def _timed(update, repeats: int) -> float:
    update()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        update()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    bins = ABBins.grid(25, 10.0)
    rows = []
    for batch, side in ((64, 24), (32, 56)):
        logits = torch.randn(batch, bins.num_bins, side, side)
        ab = (torch.rand(batch, 2, side, side) - 0.5) * 200
        target = bins.encode_hard(ab)
        ours = ABAccuracy(bins, (1, 5))
        theirs = {k: MulticlassAccuracy(bins.num_bins, top_k=k, average="micro") for k in (1, 5)}
        ours.update(logits, ab)
        for metric in theirs.values():
            metric.update(logits, target)
        got = ours.compute()
        for k, metric in theirs.items():
            assert torch.allclose(got[f"acc@{k}"], metric.compute(), atol=1e-6), k

        ours_s = _timed(partial(ours.update, logits, ab), 5)
        theirs_s = _timed(partial(_update_all, list(theirs.values()), logits, target), 5)
        rows.append(
            {
                "scores (B, Q, h, w)": f"({batch}, {bins.num_bins}, {side}, {side})",
                "ABAccuracy update (ms)": 1000 * ours_s,
                "MulticlassAccuracy top-1 + top-5 update (ms)": 1000 * theirs_s,
                "ratio": theirs_s / ours_s,
            }
        )
        print(rows[-1], flush=True)
    md = "\n".join(
        [
            "# ABAccuracy vs torchmetrics MulticlassAccuracy(top_k)",
            "",
            f"Machine: {machine_description()}.",
            "",
            "Random scores and targets; both give the same acc@1 and acc@5 (checked). "
            "ABAccuracy ranks the scores once for every k (one `topk`); MulticlassAccuracy "
            "(micro average) is one metric per k. Times per update, mean of 5 after a warm-up.",
            "",
            markdown_table(rows),
            "",
        ]
    )
    csv_path, md_path = write_results("ab_accuracy_speed", rows, md)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
