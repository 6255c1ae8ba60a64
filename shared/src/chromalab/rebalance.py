"""Class rebalancing of Zhang et al., "Colorful Image Colorization", §3.2 (Eq. 5-6).

* ``p``: the empirical distribution of quantized ab values over a training set
  (:func:`empirical_prior`, :class:`PriorAccumulator`);
* ``G_sigma * p``: ``p`` smoothed with a Gaussian kernel in ab space, sigma = 5
  (:func:`smooth_prior`);
* ``w ∝ ((1 - lambda) (G_sigma * p) + lambda / Q)^-1`` normalized so that
  ``sum_q [G_sigma * p]_q w_q = 1`` (Eq. 6; "mix with a uniform distribution", hence
  ``lambda / Q``), :func:`rebalance_weights`;
* ``v(Z_hw) = w_{q*}`` with ``q* = argmax_q Z_hwq``, the weight of each pixel's nearest bin
  (Eq. 5), :func:`pixel_weights`. ``lambda = 1`` gives ``v = 1`` (Eq. 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from chromalab.bins import ABBins

__all__ = [
    "PriorAccumulator",
    "empirical_prior",
    "estimate_prior",
    "load_prior",
    "pixel_weights",
    "rebalance_weights",
    "save_prior",
    "smooth_prior",
]


class PriorAccumulator:
    """Streaming counts of hard-encoded ab bins, for datasets that do not fit in memory.

    Example:
        >>> bins = ABBins.grid(3, 10.0)
        >>> acc = PriorAccumulator(bins)
        >>> acc.update(torch.zeros(1, 2, 4, 4))
        >>> int(acc.counts.sum())
        16
    """

    def __init__(self, bins: ABBins):
        self.bins = bins
        self.counts = torch.zeros(bins.num_bins, dtype=torch.float64)

    def update(self, ab: Tensor, mask: Tensor | None = None) -> None:
        """Add the pixels of ``ab`` ``(B, 2, H, W)``; ``mask`` ``(B, H, W)`` selects pixels."""
        nearest = self.bins.encode_hard(ab)
        if mask is not None:
            if mask.shape != nearest.shape:
                raise ValueError(
                    f"mask must have shape {tuple(nearest.shape)}, got {tuple(mask.shape)}"
                )
            nearest = nearest[mask.bool()]
        counts = torch.bincount(nearest.reshape(-1), minlength=self.bins.num_bins)
        self.counts += counts.to(self.counts)

    @property
    def prior(self) -> Tensor:
        """The normalized distribution ``p`` (float64, sums to one)."""
        total = self.counts.sum()
        if total <= 0:
            raise ValueError("no pixels were accumulated; the prior is undefined")
        return self.counts / total


def empirical_prior(ab_batches: Iterable[Tensor], bins: ABBins) -> Tensor:
    """Empirical probability ``p`` of each bin over batches of ab ``(B, 2, H, W)``.

    Returns:
        ``(Q,)`` float64 distribution (nearest-bin counts, normalized).
    """
    acc = PriorAccumulator(bins)
    for ab in ab_batches:
        acc.update(ab)
    return acc.prior


def estimate_prior(
    batches: Iterable[dict | None],
    bins: ABBins,
    max_batches: int,
    to_targets: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Prior ``p`` from the first ``max_batches`` batches of a loader (dicts with ``rgb``).

    The paper estimates ``p`` over all of ImageNet (``chromalab prior`` does that offline);
    this is the in-training fallback when no prior file is given.

    Args:
        batches: e.g. a training DataLoader; ``None`` batches (all samples bad) are skipped.
        bins: the bin table.
        max_batches: how many batches to read.
        to_targets: maps full-resolution ab ``(B, 2, H, W)`` to the grid the loss sees (e.g.
            point-sampling at the network's output resolution); identity by default.
        device: where to convert colours (the model's device).
        reduce: combines the counts of all processes, e.g. ``lambda c: all_gather(c).sum(0)``
            under DDP, so that every rank gets the same prior.

    Returns:
        ``(Q,)`` float64 distribution on the CPU.
    """
    from chromalab.color import rgb_to_lab

    acc = PriorAccumulator(bins)
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        if batch is None or "rgb" not in batch:
            continue
        ab = rgb_to_lab(batch["rgb"].to(device))[:, 1:]
        acc.update(to_targets(ab) if to_targets is not None else ab)
    counts = acc.counts.to(device)
    if reduce is not None:
        counts = reduce(counts)
    if counts.sum() <= 0:
        raise ValueError("could not estimate the prior: no readable training pixels")
    return (counts / counts.sum()).double().cpu()


def smooth_prior(prior: Tensor, bins: ABBins, sigma: float = 5.0) -> Tensor:
    """``G_sigma * p``: Gaussian smoothing of a prior over the bin centres (CIC Eq. 6).

    ``s_j = sum_i p_i exp(-|c_j - c_i|^2 / (2 sigma^2))``, renormalized to sum to one. On a
    lattice this is the sampled convolution with the Gaussian kernel; written over centres it
    also applies to any bin table. ``sigma = 0`` returns ``prior`` unchanged.
    """
    _check_prior(prior, bins)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return prior.clone()
    c = bins.centers.to(device=prior.device, dtype=torch.float64)
    kernel = torch.exp(-torch.cdist(c, c).square() / (2.0 * sigma * sigma))
    smoothed = kernel @ prior.to(torch.float64)
    return (smoothed / smoothed.sum()).to(prior.dtype)


def rebalance_weights(
    prior: Tensor, lam: float = 0.5, bins: ABBins | None = None, sigma: float = 5.0
) -> Tensor:
    """Class weights ``w`` of CIC Eq. 6.

    ``w_q ∝ 1 / ((1 - lam) p~_q + lam / Q)`` with ``sum_q p~_q w_q = 1``, where ``p~`` is
    ``prior`` smoothed with :func:`smooth_prior` when ``bins`` is given (pass an already
    smoothed prior and ``bins=None`` to skip it). ``lam = 1`` gives uniform weights 1 (Eq. 7);
    ``lam = 0`` gives inverse-probability weights (used by the rebalanced AuC CMF, §4.1), which
    are infinite on bins of zero probability.

    Args:
        prior: ``(Q,)`` distribution ``p``.
        lam: mixing weight with the uniform distribution, in ``[0, 1]`` (paper: 1/2).
        bins: bin table for the Gaussian smoothing, or ``None`` if ``prior`` is smoothed.
        sigma: smoothing width in ab units (paper: 5).

    Returns:
        ``(Q,)`` weights with expectation one under ``p~``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if prior.dim() != 1:
        raise ValueError(f"prior must have shape (Q,), got {tuple(prior.shape)}")
    p = smooth_prior(prior, bins, sigma) if bins is not None else prior
    p = p.to(torch.float64)
    q = p.numel()
    mixed = (1.0 - lam) * p + lam / q
    w = 1.0 / mixed
    finite = torch.isfinite(w)
    norm = (p[finite] * w[finite]).sum()
    return (w / norm).to(prior.dtype)


def pixel_weights(class_weights: Tensor, nearest: Tensor) -> Tensor:
    """Per-pixel weights ``v`` of CIC Eq. 5: ``class_weights[q*]`` for nearest bins ``q*``.

    Args:
        class_weights: ``(Q,)`` weights from :func:`rebalance_weights`.
        nearest: ``(B, H, W)`` long nearest-bin indices (``SoftEncoding.nearest``).

    Returns:
        ``(B, H, W)`` weights.
    """
    if class_weights.dim() != 1:
        raise ValueError(f"class_weights must have shape (Q,), got {tuple(class_weights.shape)}")
    return class_weights.to(nearest.device)[nearest]


def save_prior(path: str | Path, prior: Tensor, bins: ABBins, **meta: object) -> Path:
    """Save a prior with its bin centres (so a mismatched table is detected on load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"prior": prior.cpu(), "centers": bins.centers.cpu(), "meta": dict(meta)}, path)
    return path


def load_prior(path: str | Path, bins: ABBins | None = None) -> Tensor:
    """Load a prior saved by :func:`save_prior` (or a bare ``(Q,)`` tensor / ``.npy`` array).

    With ``bins`` given, the stored centres must match them exactly, else ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file not found: {path}")
    if path.suffix == ".npy":
        import numpy as np

        obj: object = torch.from_numpy(np.load(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        prior = obj["prior"]
        centers = obj.get("centers")
        if bins is not None and centers is not None and not _same_centers(centers, bins):
            raise ValueError(
                f"{path}: prior was computed for a different bin table "
                f"({centers.shape[0]} bins) than the one in use ({bins.num_bins} bins)"
            )
    else:
        prior = obj
    prior = torch.as_tensor(prior, dtype=torch.float64)
    if bins is not None:
        _check_prior(prior, bins)
    return prior


def _same_centers(centers: Tensor, bins: ABBins) -> bool:
    return centers.shape == bins.centers.shape and torch.allclose(
        centers.float(), bins.centers.cpu(), atol=1e-4
    )


def _check_prior(prior: Tensor, bins: ABBins) -> None:
    if prior.dim() != 1 or prior.numel() != bins.num_bins:
        raise ValueError(
            f"prior must have shape ({bins.num_bins},) to match the bins, got {tuple(prior.shape)}"
        )
    if (prior < 0).any() or not torch.isfinite(prior).all():
        raise ValueError("prior must be finite and non-negative")
