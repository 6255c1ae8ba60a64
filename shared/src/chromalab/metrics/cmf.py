"""AuC CMF: area under the cumulative mass function of ab errors (CIC §4.1, Table 1).

For thresholds ``t = 0, 1, ..., 150`` the CMF is the fraction of pixels whose Euclidean ab
error is at most ``t``; AuC is the trapezoidal area under it divided by 150 (so a perfect
prediction scores 1). The *rebalanced* variant weights every pixel inversely to the probability
of its ground-truth colour class, Eq. 6 with ``lambda = 0``.

Implementation: per ground-truth class ``q`` and integer error bucket ``ceil(d)`` a histogram
of pixel counts is accumulated (a single ``bincount``); the CMF of every threshold is its
cumulative sum. Both variants come from that one ``(Q, T + 1)`` state, summed across
processes under DDP. The class probabilities for the rebalanced variant are those of the
evaluated ground truth itself unless a ``prior`` is given; with its own frequencies the
rebalanced CMF equals the mean over present classes of the per-class CMF.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from chromalab.bins import ABBins

__all__ = ["AuCCMF", "auc_cmf_curve"]


def auc_cmf_curve(cmf: Tensor, thresholds: Tensor) -> Tensor:
    """Trapezoidal area under ``cmf`` over ``thresholds``, normalized by their range."""
    return torch.trapezoid(cmf, thresholds) / (thresholds[-1] - thresholds[0])


class AuCCMF(Metric):
    """Raw and class-rebalanced AuC CMF over ab (CIC §4.1).

    Args:
        bins: the ab bins defining colour classes for the rebalanced variant
            (default: :meth:`ABBins.gamut`).
        max_threshold: largest ab distance of the sweep (paper: 150); thresholds are the
            integers ``0 ... max_threshold``.
        prior: optional ``(Q,)`` class probabilities for the rebalanced weights; by default the
            ground-truth class frequencies of the evaluated data.

    ``update(pred_ab, target_ab, mask=None)`` takes ``(B, 2, H, W)`` ab tensors (and an optional
    ``(B, H, W)`` boolean mask of pixels to score). ``compute()`` returns a dict with
    ``auc_cmf`` and ``auc_cmf_rebalanced`` (fractions in ``[0, 1]``) and the two curves
    ``cmf`` and ``cmf_rebalanced`` (``(T + 1,)``).
    """

    full_state_update = False
    higher_is_better = True
    hits: Tensor

    def __init__(
        self,
        bins: ABBins | None = None,
        max_threshold: int = 150,
        prior: Tensor | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_threshold < 1:
            raise ValueError(f"max_threshold must be >= 1, got {max_threshold}")
        self.bins = bins if bins is not None else ABBins.gamut()
        self.max_threshold = int(max_threshold)
        if prior is not None and prior.shape != (self.bins.num_bins,):
            raise ValueError(
                f"prior must have shape ({self.bins.num_bins},), got {tuple(prior.shape)}"
            )
        self.prior = None if prior is None else prior.detach().double().cpu()
        # hits[q, j]: pixels of class q whose ceil(error) == j (j = T + 1 collects d > T)
        self.add_state(
            "hits",
            torch.zeros(self.bins.num_bins, self.max_threshold + 2, dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(self, pred_ab: Tensor, target_ab: Tensor, mask: Tensor | None = None) -> None:
        if pred_ab.shape != target_ab.shape or pred_ab.dim() != 4 or pred_ab.shape[1] != 2:
            raise ValueError(
                "pred_ab and target_ab must both have shape (B, 2, H, W), got "
                f"{tuple(pred_ab.shape)} and {tuple(target_ab.shape)}"
            )
        err = torch.linalg.vector_norm((pred_ab - target_ab).float(), dim=1)  # (B, H, W)
        bucket = torch.ceil(err).clamp_(max=self.max_threshold + 1).long()
        classes = self.bins.to(target_ab.device).encode_hard(target_ab)
        if mask is not None:
            if mask.shape != err.shape:
                raise ValueError(
                    f"mask must have shape {tuple(err.shape)}, got {tuple(mask.shape)}"
                )
            bucket, classes = bucket[mask.bool()], classes[mask.bool()]
        width = self.max_threshold + 2
        flat = (classes * width + bucket).reshape(-1)
        counts = torch.bincount(flat, minlength=self.bins.num_bins * width)
        self.hits += counts.view(self.bins.num_bins, width).to(self.hits)

    def compute(self) -> dict[str, Tensor]:
        per_class = self.hits[:, : self.max_threshold + 1].cumsum(dim=1)  # d <= t
        totals = self.hits.sum(dim=1)  # pixels per class
        if totals.sum() == 0:
            raise ValueError("AuCCMF.compute() called before any pixels were scored")
        thresholds = torch.arange(
            self.max_threshold + 1, dtype=torch.float64, device=self.hits.device
        )
        cmf = per_class.sum(0) / totals.sum()
        # class probabilities: the evaluated targets' own, unless a prior was given
        probs = totals / totals.sum() if self.prior is None else self.prior.to(self.hits.device)
        present = totals > 0
        weights = torch.zeros_like(probs)
        weights[present] = 1.0 / probs[present]  # lambda = 0 in Eq. 6: inverse probability
        if not torch.isfinite(weights).all():
            raise ValueError("the prior gives zero probability to a class present in the targets")
        cmf_rebalanced = (weights[:, None] * per_class).sum(0) / (weights * totals).sum()
        return {
            "auc_cmf": auc_cmf_curve(cmf, thresholds).float(),
            "auc_cmf_rebalanced": auc_cmf_curve(cmf_rebalanced, thresholds).float(),
            "cmf": cmf.float(),
            "cmf_rebalanced": cmf_rebalanced.float(),
        }
