"""Throughput of the CIC training-target pipeline: chromalab vs the original release's approach.

Pipeline: sRGB -> Lab -> soft-encode (k = 10, sigma = 5) -> per-pixel rebalancing weight, on a
batch of 16 images of 256x256.

* reference: what the authors' release does, written plainly: scikit-image ``rgb2lab`` per
  image, scikit-learn ``NearestNeighbors(algorithm="ball_tree")`` k = 10, Gaussian weights,
  weight of the nearest bin;
* chromalab: ``rgb_to_lab`` + ``ABBins.encode_soft`` + ``pixel_weights`` (torch).

Both run at full resolution (every pixel encoded) and at the training resolution (targets at
1/4 of the input, the network's output size: ab point-subsampled by 4 before encoding, as the
release does; chromalab converts only the subsampled pixels, which gives identical targets).
Results: benchmarks/results/core_throughput.{csv,md}.

    python benchmarks/core_throughput.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import skimage.color
import torch
import torch.nn.functional as F
from _common import machine_description, markdown_table, time_it, write_results
from sklearn.neighbors import NearestNeighbors

from chromalab.bins import ABBins
from chromalab.color import ab_chroma, rgb_to_lab
from chromalab.data.folders import resize_and_crop
from chromalab.data.photos import sample_photos
from chromalab.rebalance import pixel_weights, rebalance_weights


def random_fields(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields: far more saturated than photos (a stress test)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 16, size // 16, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def photo_batch(batch: int, size: int) -> torch.Tensor:
    """The real photographs of :func:`sample_photos`, centre-cropped, repeated to ``batch``."""
    photos = [resize_and_crop(rgb, size) for _, rgb in sample_photos()]
    return torch.stack([photos[i % len(photos)] for i in range(batch)])


def reference_pipeline(
    rgb_np: np.ndarray, tree: NearestNeighbors, weights: np.ndarray, stride: int
):
    out = []
    for image in rgb_np:  # (H, W, 3) per image, as the release's data layer does
        ab = skimage.color.rgb2lab(image)[::stride, ::stride, 1:].reshape(-1, 2)
        dist, idx = tree.kneighbors(ab)
        wts = np.exp(-(dist**2) / (2 * 5.0**2))
        wts /= wts.sum(axis=1, keepdims=True)
        out.append((idx, wts, weights[idx[:, 0]]))
    return out


def chromalab_pipeline(rgb: torch.Tensor, bins: ABBins, weights: torch.Tensor, stride: int):
    # Lab is a per-pixel map, so the ab of every stride-th pixel is the ab of the subsampled
    # image: convert only the pixels that become targets (identical values, checked below).
    ab = rgb_to_lab(rgb[:, :, ::stride, ::stride])[:, 1:]
    enc = bins.encode_soft(ab, k=10, sigma=5.0)
    return enc, pixel_weights(weights, enc.nearest)


def check_same_targets(rgb: torch.Tensor, bins: ABBins, weights: torch.Tensor, stride: int):
    """The subsample-first targets equal those of the full-resolution conversion."""
    full = rgb_to_lab(rgb)[:, 1:, ::stride, ::stride]
    enc_full = bins.encode_soft(full.contiguous())
    enc, _ = chromalab_pipeline(rgb, bins, weights, stride)
    assert torch.equal(enc.nearest, enc_full.nearest)
    assert torch.allclose(enc.weights, enc_full.weights, atol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)

    bins = ABBins.gamut()
    prior = torch.rand(bins.num_bins, dtype=torch.float64) + 1e-3
    class_weights = rebalance_weights(prior / prior.sum(), 0.5, bins).float()
    tree = NearestNeighbors(n_neighbors=10, algorithm="ball_tree").fit(
        bins.centers.double().numpy()
    )
    weights_np = class_weights.double().numpy()
    bins_dev, w_dev = bins.to(device), class_weights.to(device)

    rows = []
    datasets = (
        ("sample photos", photo_batch(args.batch, args.size)),
        ("random colour fields", random_fields(args.batch, args.size)),
    )
    for data_label, rgb in datasets:
        rgb_np = rgb.permute(0, 2, 3, 1).double().numpy()
        rgb_dev = rgb.to(device)
        check_same_targets(rgb_dev, bins_dev, w_dev, 4)
        chroma = ab_chroma(rgb_to_lab(rgb)[:, 1:]).mean().item()
        for label, stride in (("full resolution", 1), ("training targets (1/4)", 4)):
            ref = time_it(
                lambda s=stride, x=rgb_np: reference_pipeline(x, tree, weights_np, s),
                torch.device("cpu"),
                repeats=max(2, args.repeats // 2),
            )
            ours = time_it(
                lambda s=stride, x=rgb_dev: chromalab_pipeline(x, bins_dev, w_dev, s),
                device,
                repeats=args.repeats,
            )
            mpix = args.batch * args.size * args.size / 1e6  # input megapixels per batch
            rows.append(
                {
                    "data": f"{data_label} (mean chroma {chroma:.0f})",
                    "setting": label,
                    "encoded pixels per batch": args.batch * (args.size // stride) ** 2,
                    "reference ms/batch": ref * 1e3,
                    "chromalab ms/batch": ours * 1e3,
                    "reference MP/s": mpix / ref,
                    "chromalab MP/s": mpix / ours,
                    "speed-up": ref / ours,
                }
            )
            print(rows[-1])

    md = (
        "# Core throughput: CIC training-target pipeline\n\n"
        f"Machine: {machine_description(device)}; chromalab on `{device}`, reference on CPU.\n\n"
        f"Batch {args.batch} x {args.size}x{args.size} sRGB: the real photographs of "
        "`sample_photos()` (centre crops, repeated to fill the batch) and smooth random colour "
        "fields (a saturated stress case); "
        "RGB -> Lab -> soft-encode (k=10, sigma=5, ABBins.gamut(): "
        f"{bins.num_bins} bins) -> per-pixel rebalancing weight. MP/s counts input megapixels. "
        "Reference: scikit-image rgb2lab + scikit-learn ball-tree k-NN + Gaussian weights "
        "(the original release's approach), measured in the same run. Median of "
        f"{args.repeats} runs.\n\n" + markdown_table(rows)
    )
    write_results("core_throughput", rows, md)
    print(md)


if __name__ == "__main__":
    main()
