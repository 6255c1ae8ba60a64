import numpy as np
import pytest
import torch

from chromalab.bins import ABBins
from chromalab.rebalance import (
    PriorAccumulator,
    empirical_prior,
    estimate_prior,
    load_prior,
    pixel_weights,
    rebalance_weights,
    save_prior,
    smooth_prior,
)


@pytest.fixture
def bins():
    return ABBins.grid(7, 10)


def test_empirical_prior_counts_nearest_bins(bins):
    ab = (torch.rand(3, 2, 6, 5) * 2 - 1) * 35
    prior = empirical_prior([ab[:2], ab[2:]], bins)
    # independent: nearest centre by brute force
    pts = ab.permute(0, 2, 3, 1).reshape(-1, 2).numpy()
    d = ((pts[:, None] - bins.centers.numpy()[None]) ** 2).sum(-1)
    counts = np.bincount(d.argmin(1), minlength=bins.num_bins)
    np.testing.assert_allclose(prior.numpy(), counts / counts.sum())


def test_accumulator_mask_and_empty(bins):
    acc = PriorAccumulator(bins)
    with pytest.raises(ValueError, match="no pixels"):
        _ = acc.prior
    ab = torch.zeros(1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, False]]])
    acc.update(ab, mask)
    assert acc.counts.sum() == 1
    with pytest.raises(ValueError, match="mask"):
        acc.update(ab, torch.ones(2, 2, dtype=torch.bool))


def test_smooth_prior_transcription(bins):
    prior = torch.rand(bins.num_bins, dtype=torch.float64)
    prior /= prior.sum()
    c = bins.centers.double().numpy()
    p = prior.numpy()
    ref = np.zeros_like(p)
    for j in range(len(c)):  # s_j = sum_i p_i G(c_j - c_i)
        for i in range(len(c)):
            ref[j] += p[i] * np.exp(-((c[j] - c[i]) ** 2).sum() / (2 * 5.0**2))
    ref /= ref.sum()
    np.testing.assert_allclose(smooth_prior(prior, bins, 5.0).numpy(), ref, rtol=1e-10)
    assert torch.equal(smooth_prior(prior, bins, 0.0), prior)


def test_rebalance_weights_eq6(bins):
    prior = torch.rand(bins.num_bins, dtype=torch.float64) ** 4
    prior /= prior.sum()
    lam = 0.5
    w = rebalance_weights(prior, lam, bins, 5.0)
    ps = smooth_prior(prior, bins, 5.0)
    # transcription: w ∝ 1 / ((1 - lam) p~ + lam / Q), sum_q p~_q w_q = 1
    raw = 1.0 / ((1 - lam) * ps.numpy() + lam / bins.num_bins)
    ref = raw / (ps.numpy() * raw).sum()
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-10)
    assert torch.isclose((ps * w).sum(), torch.tensor(1.0, dtype=torch.float64))
    # rare colours get larger weights
    assert w[ps.argmin()] > w[ps.argmax()]


def test_lambda_limits(bins):
    prior = torch.rand(bins.num_bins, dtype=torch.float64)
    prior /= prior.sum()
    assert torch.allclose(rebalance_weights(prior, 1.0), torch.ones_like(prior))  # Eq. 7
    w0 = rebalance_weights(prior, 0.0)
    np.testing.assert_allclose(w0.numpy(), (1 / prior.numpy()) / len(prior))
    with pytest.raises(ValueError, match="lam"):
        rebalance_weights(prior, 1.5)


def test_pixel_weights_eq5(bins):
    w = torch.arange(bins.num_bins, dtype=torch.float32)
    ab = (torch.rand(2, 2, 3, 3) * 2 - 1) * 30
    enc = bins.encode_soft(ab)
    v = pixel_weights(w, enc.nearest)
    assert torch.equal(v, enc.nearest.float())  # weight of argmax_q Z


def test_save_load_round_trip(bins, tmp_path):
    prior = torch.rand(bins.num_bins, dtype=torch.float64)
    path = save_prior(tmp_path / "p" / "prior.pt", prior, bins, source="test")
    assert torch.equal(load_prior(path, bins), prior)
    with pytest.raises(ValueError, match="different bin table"):
        load_prior(path, ABBins.grid(5, 10))
    np.save(tmp_path / "prior.npy", prior.numpy())
    assert torch.equal(load_prior(tmp_path / "prior.npy", bins), prior)
    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "missing.pt")


def test_estimate_prior_from_batches(bins):
    from chromalab.color import rgb_to_lab

    rgb = torch.rand(6, 3, 8, 8)
    batches = [{"rgb": rgb[:3]}, None, {"rgb": rgb[3:]}, {"rgb": torch.rand(2, 3, 8, 8)}]
    half = lambda ab: ab[:, :, ::2, ::2]  # noqa: E731
    got = estimate_prior(batches, bins, max_batches=3, to_targets=half)  # 3rd batch not read
    expected = empirical_prior([half(rgb_to_lab(rgb)[:, 1:])], bins)
    assert torch.allclose(got, expected)
    doubled = estimate_prior(batches, bins, 3, half, reduce=lambda c: 2 * c)
    assert torch.allclose(doubled, expected)  # a reduction that scales counts keeps p
    with pytest.raises(ValueError, match="no readable"):
        estimate_prior([None], bins, 1)
