"""Top-k accuracy in the quantized ab space (Manjunatha et al. 2018, Table 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from chromalab.bins import ABBins

__all__ = ["ABAccuracy"]


class ABAccuracy(Metric):
    """Fraction of pixels whose ground-truth bin is among the ``top_k`` predicted bins.

    Args:
        bins: the bin table the scores are over (the FiLM paper: ``ABBins.grid(25, 10)``).
        top_k: tuple of k values to report, e.g. ``(1, 5)``.

    ``update(logits, target_ab)``: ``logits`` ``(B, Q, h, w)`` class scores and ``target_ab``
    ``(B, 2, H, W)``. When the sizes differ the target is resized to the scores' resolution with
    area averaging (the FiLM paper evaluates at the network's 56x56 output, footnote 2).
    ``compute()`` returns ``{"acc@1": ..., "acc@5": ...}``.

    Why not torchmetrics' ``MulticlassAccuracy(top_k=k)``: it gives the same values but is one
    metric per ``k`` and expands the scores per class; on FiLM-sized scores (625 classes) one
    update of it for k = 1 and 5 took 24-29x as long as this one, which ranks the scores once
    for every ``k`` (``benchmarks/ab_accuracy_speed.py``).
    """

    full_state_update = False
    higher_is_better = True
    correct: Tensor
    total: Tensor

    def __init__(self, bins: ABBins, top_k: tuple[int, ...] = (1, 5), **kwargs):
        super().__init__(**kwargs)
        if not top_k or any(k < 1 or k > bins.num_bins for k in top_k):
            raise ValueError(f"top_k values must be in [1, {bins.num_bins}], got {top_k}")
        self.bins = bins
        self.top_k = tuple(sorted(set(int(k) for k in top_k)))
        self.add_state("correct", torch.zeros(len(self.top_k), dtype=torch.float64), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, logits: Tensor, target_ab: Tensor) -> None:
        if logits.dim() != 4 or logits.shape[1] != self.bins.num_bins:
            raise ValueError(
                f"logits must have shape (B, {self.bins.num_bins}, h, w), got {tuple(logits.shape)}"
            )
        if target_ab.dim() != 4 or target_ab.shape[1] != 2 or target_ab.shape[0] != logits.shape[0]:
            expected = f"({logits.shape[0]}, 2, H, W)"
            raise ValueError(f"target_ab must have shape {expected}, got {tuple(target_ab.shape)}")
        if target_ab.shape[2:] != logits.shape[2:]:
            target_ab = F.interpolate(target_ab.float(), size=logits.shape[2:], mode="area")
        target = self.bins.to(logits.device).encode_hard(target_ab)  # (B, h, w)
        ranked = logits.topk(max(self.top_k), dim=1).indices  # (B, K, h, w)
        hit = ranked == target[:, None]
        for i, k in enumerate(self.top_k):
            self.correct[i] += hit[:, :k].any(dim=1).sum()
        self.total += target.numel()

    def compute(self) -> dict[str, Tensor]:
        if self.total == 0:
            raise ValueError("ABAccuracy.compute() called before any pixels were scored")
        return {
            f"acc@{k}": (self.correct[i] / self.total).float() for i, k in enumerate(self.top_k)
        }
