"""The quantized ab space: bin tables, hard/soft encoding and decoding.

Zhang et al., "Colorful Image Colorization" (ECCV 2016), §3.1 and §3.3:

* the ab plane is quantized with grid size 10 and only in-gamut bins are kept (Q = 313 in the
  paper); a colour ``Y`` is soft-encoded as ``Z`` by finding its ``k = 10`` nearest bins and
  weighting them with a Gaussian kernel of ``sigma = 5`` (normalized to sum to one);
* a predicted distribution is decoded with the *annealed mean* (Eq. 8)
  ``H(Z) = E[f_T(log Z)]``, ``f_T(z) = exp(z / T) / sum_q exp(z_q / T)``: the mean at ``T = 1``
  and the mode as ``T -> 0``.

Manjunatha et al. (NAACL 2018), §2.2, use a full 25x25 grid (625 classes) instead: see
:meth:`ABBins.grid`.

Soft encodings are returned in sparse top-k form (:class:`SoftEncoding`): ``(B, k, H, W)``
indices and weights, never the dense ``(B, Q, H, W)`` tensor, with the nearest bin first so
``indices[:, 0]`` is the hard encoding used by class rebalancing (Eq. 5).

Speed. For bins that lie on a regular lattice (every table used in the papers), the k nearest
bins are found without a distance to every bin: the point is reflected into the quadrant of its
nearest lattice point, a look-up table over that quadrant gives the set of k nearest lattice
offsets (an order-k Voronoi zone), and only the k distances are computed. A table cell is only
trusted when its four corners share the same strict k-nearest set (zones are convex, so the whole
cell does); points in untrusted cells, or whose k nearest lattice points include a missing
(out-of-gamut) bin, fall back to an exact top-k, so the result is always exact.
``benchmarks/core_throughput.py`` measures this against a ball tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chromalab.color import rgb_to_lab

__all__ = ["ABBins", "SoftEncoding", "annealed_mean", "soft_cross_entropy"]

_CHUNK = 1 << 15  # pixels per chunk: temporaries stay small; measured best of 4k-128k


@dataclass
class SoftEncoding:
    """Sparse soft encoding: the ``k`` nearest bins of each pixel and their weights.

    Attributes:
        indices: ``(B, k, H, W)`` long bin indices; ``indices[:, 0]`` is the nearest bin.
        weights: ``(B, k, H, W)`` float Gaussian weights summing to one over ``k``.
    """

    indices: Tensor
    weights: Tensor

    def to_dense(self, num_bins: int) -> Tensor:
        """The dense ``(B, Q, H, W)`` distribution ``Z`` (for tests and small inputs)."""
        b, _, h, w = self.indices.shape
        dense = self.weights.new_zeros(b, num_bins, h, w)
        return dense.scatter_add_(1, self.indices, self.weights)

    @property
    def nearest(self) -> Tensor:
        """``(B, H, W)`` index of the nearest bin, ``argmax_q Z`` (CIC Eq. 5)."""
        return self.indices[:, 0]


def _check_ab(ab: Tensor) -> None:
    if not isinstance(ab, Tensor):
        raise TypeError(f"ab must be a torch.Tensor, got {type(ab).__name__}")
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must have shape (B, 2, H, W), got {tuple(ab.shape)}")
    if not ab.is_floating_point():
        raise TypeError(f"ab must be a floating-point tensor, got {ab.dtype}")


def _as_points(ab: Tensor) -> Tensor:
    """``(B, 2, H, W)`` -> ``(2, B*H*W)`` float32 in batch-major pixel order."""
    return ab.detach().float().transpose(0, 1).reshape(2, -1)


def _check_logits(logits: Tensor, num_bins: int) -> None:
    if logits.dim() != 4 or logits.shape[1] != num_bins:
        raise ValueError(
            f"expected (B, {num_bins}, H, W) scores over the {num_bins} bins, "
            f"got {tuple(logits.shape)}"
        )


def annealed_mean(logits: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """Annealed mean of CIC Eq. 8 for scores ``(B, Q, H, W)`` and bin centres ``(Q, 2)``.

    ``logits`` may be unnormalized scores or log-probabilities (Eq. 8 applies ``f_T`` to
    ``log Z``; the two differ by a per-pixel constant that ``f_T`` removes). ``temperature=1``
    gives the distribution mean, ``temperature -> 0`` the mode; ``temperature=0`` is the exact
    mode (ties are averaged). Stable for tiny temperatures: the per-pixel maximum is subtracted
    before dividing by ``T``.

    Returns:
        ``(B, 2, H, W)`` ab values.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    shifted = logits - logits.amax(dim=1, keepdim=True)
    if temperature == 0:
        probs = (shifted == 0).to(logits.dtype)
        probs = probs / probs.sum(dim=1, keepdim=True)
    else:
        probs = torch.softmax(shifted / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probs, centers.to(probs.dtype))


@lru_cache(maxsize=4)
def _srgb_gamut_centers(step: float, levels: int) -> Tensor:
    """Lattice points (multiples of ``step``) whose ``step x step`` cell holds an sRGB colour.

    The ab projection of the sRGB cube equals the projection of its surface (every line of
    constant ab meets the solid in a segment whose ends lie on the surface), so only the six
    faces are sampled, at ``levels`` values per channel.
    """
    v = torch.linspace(0.0, 1.0, levels)
    u, w = torch.meshgrid(v, v, indexing="ij")
    u, w = u.reshape(-1), w.reshape(-1)
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    faces = [(zero, u, w), (one, u, w), (u, zero, w), (u, one, w), (u, w, zero), (u, w, one)]
    rgb = torch.cat([torch.stack(f) for f in faces], dim=1)  # (3, 6 * levels^2)
    ab = rgb_to_lab(rgb[None, :, :, None].double())[0, 1:, :, 0]
    cells = torch.unique(torch.round(ab / step).long(), dim=1)  # (2, Q)
    order = torch.argsort(cells[0] * 10_000 + cells[1])  # a-major, then b
    return (cells[:, order].T.double() * step).float()


class _LatticeIndex:
    """Look-up structures of the fast exact k-NN for bins on a regular lattice."""

    def __init__(self, centers: Tensor, origin: Tensor, step: float, k: int, resolution: int):
        self.k, self.step, self.resolution = k, step, resolution
        self.origin = origin.float()
        coords = torch.round((centers.double() - origin) / step).long()  # (Q, 2) lattice coords
        self.radius = 3  # candidate window: offsets in [-3, 3]^2 around the nearest point
        self.margin = self.radius + 1
        self.lo = coords.min(0).values - self.margin
        size = coords.max(0).values + self.margin - self.lo + 1
        self.size_a, self.size_b = int(size[0]), int(size[1])
        table = torch.full((self.size_a * self.size_b,), -1, dtype=torch.long)
        flat = (coords[:, 0] - self.lo[0]) * self.size_b + (coords[:, 1] - self.lo[1])
        table[flat] = torch.arange(centers.shape[0])
        self.bin_of_cell = table
        self.lut, pattern_i, pattern_j = _order_k_zones(k, resolution, self.radius)
        # Per (pattern, reflection) combination c = 4 * pattern + reflection, row tables of the k
        # candidates: offsets into the flat cell table (C, k), and the coefficients of their
        # squared distance relative to the nearest point, |q - o|^2 - |q|^2 = -2 q.o + |o|^2,
        # for q the reflected offset (C, 3k). Reflection r has sign_a = -1 if r & 2 and
        # sign_b = -1 if r & 1 (the offset from the nearest lattice point was negative there).
        sa = torch.tensor([1, 1, -1, -1])
        sb = torch.tensor([1, -1, 1, -1])
        oi, oj = pattern_i.long(), pattern_j.long()  # (P, k)
        flat = (oi[:, None, :] * sa[:, None]) * self.size_b + oj[:, None, :] * sb[:, None]
        self.flat_offsets = flat.reshape(-1, k)  # (4P, k)
        terms = torch.cat(
            [-2 * pattern_i, -2 * pattern_j, pattern_i.square() + pattern_j.square()], 1
        )
        self.offset_terms = terms.repeat_interleave(4, dim=0)  # (4P, 3k)
        # Fallback window around the nearest lattice point, for points whose table cell is
        # ambiguous or whose k nearest lattice points include a missing bin.
        win = torch.arange(-self.radius, self.radius + 1)
        wa, wb = torch.meshgrid(win, win, indexing="ij")
        self.window_offsets = (wa * self.size_b + wb).reshape(-1)

    def to(self, device: torch.device) -> _LatticeIndex:
        for name in (
            "origin",
            "lo",
            "bin_of_cell",
            "lut",
            "flat_offsets",
            "offset_terms",
            "window_offsets",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self


@lru_cache(maxsize=8)
def _order_k_zones(k: int, resolution: int, radius: int) -> tuple[Tensor, Tensor, Tensor]:
    """Order-k Voronoi zones of the unit lattice over the quadrant ``[0, 1/2]^2``.

    Returns ``lut`` (resolution^2,) long pattern ids (-1 where a cell straddles a zone border)
    and the patterns' lattice offsets ``(P, k)`` (i and j), nearest point (0, 0) first.
    """
    win = torch.arange(-radius, radius + 1, dtype=torch.float64)
    gi, gj = torch.meshgrid(win, win, indexing="ij")
    pts = torch.stack([gi.reshape(-1), gj.reshape(-1)], 1)  # (M, 2)
    ticks = torch.linspace(0.0, 0.5, resolution + 1, dtype=torch.float64)
    ca, cb = torch.meshgrid(ticks, ticks, indexing="ij")
    corners = torch.stack([ca.reshape(-1), cb.reshape(-1)], 1)  # (C, 2)
    d2 = torch.cdist(corners, pts).square()
    srt, order = d2.sort(dim=1)
    strict = srt[:, k] - srt[:, k - 1] > 1e-9  # the k-th and (k+1)-th are not tied
    members = torch.zeros_like(d2, dtype=torch.bool).scatter_(1, order[:, :k], True)
    # each corner's k-nearest set as a bitmask over the window (M <= 49 points fit an int64)
    key = members.long() @ (2 ** torch.arange(pts.shape[0], dtype=torch.long))
    key = key[:, None]  # (C, 1)
    key = torch.where(strict[:, None], key, torch.full_like(key, -1))
    n = resolution + 1
    key = key.view(n, n, -1)
    c00, c01, c10, c11 = key[:-1, :-1], key[:-1, 1:], key[1:, :-1], key[1:, 1:]
    same = ((c00 == c01) & (c00 == c10) & (c00 == c11) & (c00 >= 0)).all(-1)
    cell_keys = c00.reshape(-1, key.shape[-1])
    uniq, inverse = torch.unique(cell_keys, dim=0, return_inverse=True)
    lut = torch.where(same.reshape(-1), inverse, torch.full_like(inverse, -1))
    # offsets of each pattern: rebuild from a representative corner, the pattern's last corner.
    # Not `rep[inverse] = corner_index`: with duplicate indices that assignment is a race between
    # intra-op threads (PyTorch leaves the winner undefined), so the order of a pattern's k
    # offsets, hence of every soft encoding's indices and weights, changed from one process to
    # the next, and a run resumed from a checkpoint drifted off the uninterrupted one.
    corner_index = torch.arange(n * n).view(n, n)[:-1, :-1].reshape(-1)
    rep = torch.zeros(uniq.shape[0], dtype=torch.long).scatter_reduce_(
        0, inverse, corner_index, "amax", include_self=False
    )
    near = order[rep, :k]  # (P, k) window indices sorted by distance: (0, 0) first
    return lut, pts[near, 0].float(), pts[near, 1].float()


class ABBins(nn.Module):
    """A table of ``Q`` ab bin centres with encoders and decoders.

    Build it with :meth:`gamut` (CIC's in-gamut bins), :meth:`grid` (the FiLM paper's full
    grid) or :meth:`from_points` (any table, e.g. the one stored in released weights). The
    centres are a buffer, so the bins follow ``.to(device)`` with the model that owns them.

    Args:
        centers: ``(Q, 2)`` bin centres in ab units, in class order.
    """

    centers: Tensor

    def __init__(self, centers: Tensor):
        super().__init__()
        if centers.dim() != 2 or centers.shape[1] != 2 or centers.shape[0] < 1:
            raise ValueError(
                f"centers must have shape (Q, 2) with Q >= 1, got {tuple(centers.shape)}"
            )
        if not torch.isfinite(centers).all():
            raise ValueError("centers contain NaN or infinite values")
        self.register_buffer("centers", centers.detach().float().clone())
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what is derived from the centres (after they change)."""
        self._lattice_cache: dict[tuple[int, str], _LatticeIndex | None] = {}
        self._lattice_params = self._detect_lattice(self.centers)

    def set_centers(self, centers: Tensor) -> None:
        """Replace the centres in place (same ``Q``), e.g. with a released model's table."""
        centers = torch.as_tensor(centers, dtype=torch.float32)
        if centers.shape != self.centers.shape:
            expected = tuple(self.centers.shape)
            raise ValueError(f"new centers must have shape {expected}, got {tuple(centers.shape)}")
        if not torch.isfinite(centers).all():
            raise ValueError("centers contain NaN or infinite values")
        with torch.no_grad():
            self.centers.copy_(centers)
        self._refresh()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def gamut(cls, step: float = 10.0, levels: int = 256) -> ABBins:
        """CIC's in-gamut bins on a lattice of grid size ``step``.

        Rule: a lattice point ``(a, b)`` (multiples of ``step``) is kept when its cell
        ``[a +- step/2] x [b +- step/2]`` contains the ab of some 8-bit sRGB colour (at any L).
        Every sRGB colour therefore hard-encodes to the bin of its own cell. With ``step = 10``
        this gives 261 bins; the paper's 313 come from the authors' own table, which no simple
        gamut rule reproduces (the released table covers a wider ab area). Use
        :meth:`from_points` with that table to load released weights.
        """
        if step <= 0:
            raise ValueError(f"step must be positive, got {step}")
        return cls(_srgb_gamut_centers(float(step), int(levels)))

    @classmethod
    def grid(cls, size: int = 25, step: float = 10.0) -> ABBins:
        """The full ``size x size`` grid centred on ab = 0 (FiLM paper §2.2: 25x25 = 625 classes).

        Centres are ``(i - (size - 1) / 2) * step``; for the defaults, -120 ... 120 on each axis.
        Class ``q = i * size + j`` has ``a`` from ``i`` and ``b`` from ``j``.
        """
        if size < 1 or step <= 0:
            raise ValueError(f"size must be >= 1 and step > 0, got size={size}, step={step}")
        ticks = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * step
        ga, gb = torch.meshgrid(ticks, ticks, indexing="ij")
        return cls(torch.stack([ga.reshape(-1), gb.reshape(-1)], 1).float())

    @classmethod
    def from_points(cls, points: Tensor) -> ABBins:
        """Bins from any ``(Q, 2)`` table of ab centres; the order is kept as class order."""
        points = torch.as_tensor(points)
        if points.dim() == 2 and points.shape[0] == 2 and points.shape[1] != 2:
            raise ValueError(
                f"points must have shape (Q, 2), got {tuple(points.shape)}; transpose it first"
            )
        return cls(points)

    @property
    def num_bins(self) -> int:
        """``Q``, the number of classes."""
        return int(self.centers.shape[0])

    def __len__(self) -> int:
        return self.num_bins

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, lattice={self._lattice_params is not None}"

    # ----------------------------------------------------------------------------- encoding
    def encode_hard(self, ab: Tensor) -> Tensor:
        """Index of the nearest bin, ``(B, 2, H, W) -> (B, H, W)`` long (1-hot encoding)."""
        _check_ab(ab)
        b, _, h, w = ab.shape
        points = _as_points(ab)
        out = torch.empty(points.shape[1], dtype=torch.long, device=ab.device)
        lattice = self._lattice(1, ab.device)
        for start in range(0, points.shape[1], _CHUNK):
            x = points[:, start : start + _CHUNK]
            if lattice is None:
                out[start : start + x.shape[1]] = self._exact_topk(x.T, 1)[0][:, 0]
            else:
                out[start : start + x.shape[1]] = self._lattice_nearest(x, lattice)
        return out.view(b, h, w)

    def encode_soft(self, ab: Tensor, k: int = 10, sigma: float = 5.0) -> SoftEncoding:
        """Soft encoding of CIC §3.1: the ``k`` nearest bins with Gaussian weights.

        ``w_i = exp(-d_i^2 / (2 sigma^2)) / sum_j exp(-d_j^2 / (2 sigma^2))`` over the ``k``
        nearest bins (``d`` = Euclidean ab distance to the bin centre).

        Args:
            ab: ``(B, 2, H, W)`` ab values.
            k: number of neighbours (paper: 10); at most ``Q``.
            sigma: kernel width in ab units (paper: 5).

        Returns:
            :class:`SoftEncoding` with ``(B, k, H, W)`` indices (nearest first) and weights.
        """
        _check_ab(ab)
        if not 1 <= k <= self.num_bins:
            raise ValueError(f"k must be in [1, {self.num_bins}], got {k}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        b, _, h, w = ab.shape
        points = _as_points(ab)
        n = points.shape[1]
        # Pixel-major storage (B*H*W, k), returned as a permuted (B, k, H, W) view: writes stay
        # contiguous and consumers (gather, scatter) accept the strided view without a copy.
        indices = torch.empty(n, k, dtype=torch.long, device=ab.device)
        weights = torch.empty(n, k, dtype=torch.float32, device=ab.device)
        lattice = self._lattice(k, ab.device)
        scale = 1.0 / (2.0 * sigma * sigma)
        # Cache-sized chunks keep every temporary small; results are written in place.
        for start in range(0, n, _CHUNK):
            x = points[:, start : start + _CHUNK]
            stop = start + x.shape[1]
            if lattice is None:
                idx, d2 = self._exact_topk(x.T, k)
                rel = d2 - d2[:, :1]
            else:
                idx, rel = self._lattice_topk(x, lattice)
            # w_i = exp(-d_i^2 / 2s^2) / sum_j exp(-d_j^2 / 2s^2), computed relative to the
            # nearest neighbour so that distant pixels cannot underflow to 0 / 0.
            out = torch.mul(rel, -scale, out=weights[start:stop]).exp_()
            out.div_(out.sum(dim=1, keepdim=True))
            indices[start:stop] = idx
        return SoftEncoding(
            indices=indices.view(b, h, w, k).permute(0, 3, 1, 2),
            weights=weights.view(b, h, w, k).permute(0, 3, 1, 2).to(ab.dtype),
        )

    # ----------------------------------------------------------------------------- decoding
    def decode_mean(self, probs: Tensor) -> Tensor:
        """Mean ``sum_q Z_q c_q`` of a distribution ``(B, Q, H, W)`` -> ``(B, 2, H, W)``."""
        _check_logits(probs, self.num_bins)
        return torch.einsum("bqhw,qc->bchw", probs, self.centers.to(probs.dtype))

    def decode_mode(self, logits: Tensor) -> Tensor:
        """Centre of the most probable bin, ``(B, Q, H, W) -> (B, 2, H, W)``."""
        _check_logits(logits, self.num_bins)
        return self.centers[logits.argmax(dim=1)].permute(0, 3, 1, 2).to(logits.dtype)

    def annealed_mean(self, logits: Tensor, temperature: float = 0.38) -> Tensor:
        """Annealed-mean decoding (CIC Eq. 8); see :func:`annealed_mean`.

        The default ``T = 0.38`` is the one of the authors' released model.
        """
        _check_logits(logits, self.num_bins)
        return annealed_mean(logits, self.centers, temperature)

    # ----------------------------------------------------------------------------- internals
    @staticmethod
    def _detect_lattice(centers: Tensor) -> tuple[Tensor, float] | None:
        """``(origin, step)`` if all centres are distinct points of one square lattice."""
        c = centers.double()
        if c.shape[0] < 2:
            return None
        diffs = torch.cat([torch.diff(torch.unique(c[:, 0])), torch.diff(torch.unique(c[:, 1]))])
        diffs = diffs[diffs > 1e-6]
        if diffs.numel() == 0:
            return None
        step = float(diffs.min())
        origin = c.min(0).values
        ratio = (c - origin) / step
        if (ratio - ratio.round()).abs().max() > 1e-4:
            return None
        if torch.unique(ratio.round().long(), dim=0).shape[0] != c.shape[0]:
            return None
        return origin.float(), step

    def _lattice(self, k: int, device: torch.device) -> _LatticeIndex | None:
        if self._lattice_params is None or k > 20:
            return None
        key = (k, str(device))
        if key not in self._lattice_cache:
            origin, step = self._lattice_params
            index = _LatticeIndex(self.centers.cpu(), origin.double(), step, k, resolution=512)
            self._lattice_cache[key] = index.to(device)
        return self._lattice_cache[key]

    def _exact_topk(self, flat: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest bins by full distance computation, in chunks. Sorted by distance."""
        centers = self.centers.to(flat.device).double()
        c2 = centers.square().sum(1)
        idx_out, d2_out = [], []
        for start in range(0, flat.shape[0], _CHUNK):
            part = flat[start : start + _CHUNK].double()
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 in float64: exact enough to rank ties correctly
            d2 = torch.addmm(c2, part, centers.T, alpha=-2).add_(part.square().sum(1, keepdim=True))
            d2, idx = d2.clamp_(min=0).topk(k, dim=1, largest=False, sorted=True)
            idx_out.append(idx)
            d2_out.append(d2.float())
        if not idx_out:
            empty = flat.new_zeros(0, k)
            return empty.long(), empty
        return torch.cat(idx_out), torch.cat(d2_out)

    def _lattice_coords(self, x: Tensor, lat: _LatticeIndex):
        """Offsets from the nearest lattice point and flat cell ids for ``x`` ``(2, n)``."""
        u = (x - lat.origin[:, None]) / lat.step  # lattice units
        nearest = torch.round(u)
        offset = u - nearest
        cell = nearest.long() - lat.lo[:, None]  # index into the padded table
        inside = (
            (cell[0] >= lat.margin)
            & (cell[1] >= lat.margin)
            & (cell[0] < lat.size_a - lat.margin)
            & (cell[1] < lat.size_b - lat.margin)
        )
        base = cell[0] * lat.size_b + cell[1]
        base = torch.where(inside, base, torch.zeros_like(base))
        return offset, base, inside

    def _lattice_nearest(self, x: Tensor, lat: _LatticeIndex) -> Tensor:
        _, base, inside = self._lattice_coords(x, lat)
        nearest = torch.take(lat.bin_of_cell, base)
        bad = (~inside) | (nearest < 0)
        if bool(bad.any()):
            nearest[bad] = self._exact_topk(x[:, bad].T, 1)[0][:, 0]
        return nearest

    def _lattice_topk(self, x: Tensor, lat: _LatticeIndex) -> tuple[Tensor, Tensor]:
        """k nearest bins of ``x`` ``(2, n)``: indices ``(n, k)`` and squared distances
        relative to the nearest one ``(n, k)``, exact (see the module docstring)."""
        offset, base, inside = self._lattice_coords(x, lat)
        reflection = (offset[0] < 0).long() * 2 + (offset[1] < 0).long()
        quad = offset.abs_()  # reflected into [0, 1/2]^2
        sub = (quad * (2 * lat.resolution)).long().clamp_(max=lat.resolution - 1)
        pattern = torch.take(lat.lut, sub[0] * lat.resolution + sub[1])
        resolved = pattern >= 0
        combo = pattern.clamp_(min=0).mul_(4).add_(reflection)
        idx = lat.flat_offsets.index_select(0, combo).add_(base[:, None])  # (n, k)
        idx = torch.take(lat.bin_of_cell, idx)
        terms = lat.offset_terms.index_select(0, combo)  # (n, 3k)
        k = lat.k
        rel = torch.addcmul(terms[:, 2 * k :], terms[:, :k], quad[0][:, None])
        rel.addcmul_(terms[:, k : 2 * k], quad[1][:, None]).mul_(lat.step * lat.step)
        good = inside & resolved & (idx >= 0).all(dim=1)
        if not bool(good.all()):
            bad = (~good).nonzero().squeeze(1)
            bidx, bd2 = self._window_topk(x[:, bad], base[bad], inside[bad], lat)
            idx[bad] = bidx
            rel[bad] = bd2 - bd2[:, :1]
        return idx, rel

    def _window_topk(
        self, x: Tensor, base: Tensor, inside: Tensor, lat: _LatticeIndex
    ) -> tuple[Tensor, Tensor]:
        """Exact k nearest bins among the (2r+1)^2 lattice window around the nearest point.

        A bin outside the window is at least ``r + 1/2`` lattice steps away, so the window's
        answer is exact whenever its k-th distance is within that; other points (and points
        outside the table) take the full search.
        """
        k = lat.k
        cand = torch.take(lat.bin_of_cell, base[:, None] + lat.window_offsets)  # (n, M)
        centers = self.centers.to(x.device)
        d2 = (centers[cand.clamp(min=0)] - x.T[:, None, :]).square().sum(-1)
        d2 = d2.masked_fill_(cand < 0, float("inf"))
        d2, pos = d2.topk(k, dim=1, largest=False, sorted=True)
        idx = cand.gather(1, pos)
        limit = ((lat.radius + 0.5) * lat.step) ** 2
        ok = inside & (d2[:, -1] <= limit)
        if not bool(ok.all()):
            far = (~ok).nonzero().squeeze(1)
            fidx, fd2 = self._exact_topk(x[:, far].T, k)
            idx[far], d2[far] = fidx, fd2
        return idx, d2


def soft_cross_entropy(
    logits: Tensor, target: SoftEncoding, pixel_weights: Tensor | None = None
) -> Tensor:
    """Multinomial cross-entropy of CIC Eq. 3 with a sparse soft target.

    ``L = -1/(BHW) sum_{b,h,w} v_{bhw} sum_q Z_{bhwq} log softmax(logits)_{bhwq}``.

    Args:
        logits: ``(B, Q, H, W)`` unnormalized scores.
        target: soft encoding at the same resolution (``(B, k, H, W)``).
        pixel_weights: optional ``(B, H, W)`` rebalancing weights ``v`` (Eq. 5).

    Returns:
        scalar loss, averaged over pixels.
    """
    if logits.shape[0] != target.indices.shape[0] or logits.shape[2:] != target.indices.shape[2:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.indices.shape)} "
            "must share batch size and spatial size"
        )
    log_probs = F.log_softmax(logits.float(), dim=1)
    per_pixel = -(log_probs.gather(1, target.indices) * target.weights.float()).sum(dim=1)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights.float()
    return per_pixel.mean()
