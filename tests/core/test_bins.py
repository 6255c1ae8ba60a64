import numpy as np
import pytest
import skimage.color
import torch
import torch.nn.functional as F

from chromalab.bins import ABBins, SoftEncoding, _order_k_zones, annealed_mean, soft_cross_entropy
from chromalab.color import rgb_to_lab


def reference_soft_encoding(ab: np.ndarray, centers: np.ndarray, k: int, sigma: float):
    """Direct transcription of CIC §3.1 on (N, 2) points: brute-force k-NN, Gaussian weights."""
    d2 = ((ab[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dk = np.take_along_axis(d2, order, axis=1)
    w = np.exp(-dk / (2 * sigma**2))
    return order, dk, w / w.sum(1, keepdims=True)


def random_ab(n: int, spread: float = 90.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 2, generator=g) * 2 - 1) * spread
    # include exact lattice points and cell midpoints, where distances tie
    ties = torch.tensor([[0.0, 0.0], [5.0, 5.0], [10.0, -5.0], [-35.0, 45.0], [50.0, 50.0]])
    return torch.cat([pts, ties])


def as_image(points: torch.Tensor) -> torch.Tensor:
    return points.T.reshape(1, 2, 1, -1)


def check_against_reference(bins: ABBins, points: torch.Tensor, k: int = 10, sigma: float = 5.0):
    enc = bins.encode_soft(as_image(points), k=k, sigma=sigma)
    idx = enc.indices[0, :, 0].T.numpy()  # (N, k)
    w = enc.weights[0, :, 0].T.numpy()
    ref_idx, ref_d2, ref_w = reference_soft_encoding(
        points.double().numpy(), bins.centers.double().numpy(), k, sigma
    )
    ours_d2 = ((points.double().numpy()[:, None] - bins.centers.double().numpy()[idx]) ** 2).sum(-1)
    # the chosen bins are k nearest ones (ties may pick a different but equally near bin)
    np.testing.assert_allclose(np.sort(ours_d2, 1), ref_d2, rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.sort(w, 1), np.sort(ref_w, 1), atol=1e-5)
    # the weights belong to the right bins and the nearest comes first
    np.testing.assert_allclose(
        w,
        np.exp(-(ours_d2 - ours_d2[:, :1]) / (2 * sigma**2))
        / np.exp(-(ours_d2 - ours_d2[:, :1]) / (2 * sigma**2)).sum(1, keepdims=True),
        atol=1e-5,
    )
    assert (ours_d2[:, 0] <= ours_d2.min(1) + 1e-4).all()
    return enc


class TestGamut:
    def test_count_and_rule(self):
        bins = ABBins.gamut()
        assert bins.num_bins == 261
        c = bins.centers
        assert torch.equal(c, torch.round(c / 10) * 10)  # lattice points of step 10

    def test_every_srgb_colour_falls_in_its_own_cell(self):
        levels = torch.arange(0, 256, 5).double() / 255
        r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
        rgb = torch.stack([r.reshape(-1), g.reshape(-1), b.reshape(-1)])[None, :, :, None]
        ab = rgb_to_lab(rgb.float())[:, 1:]
        bins = ABBins.gamut()
        got = bins.centers[bins.encode_hard(ab)].reshape(-1, 2)
        cell = torch.round(ab.reshape(2, -1).T / 10) * 10
        assert torch.equal(got, cell)

    def test_surface_rule_equals_full_cube(self):
        # independent computation: scikit-image Lab of every colour of a 48-level cube
        levels = np.linspace(0, 1, 48)
        cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 1, 3)
        ab = skimage.color.rgb2lab(cube)[:, 0, 1:]
        cells = {tuple(x) for x in (np.round(ab / 10) * 10).astype(int).tolist()}
        ours = {tuple(x) for x in ABBins.gamut(levels=48).centers.int().tolist()}
        assert ours == cells


class TestGridAndPoints:
    def test_grid(self):
        bins = ABBins.grid(25, 10)
        assert bins.num_bins == 625
        assert bins.centers.min() == -120 and bins.centers.max() == 120
        assert torch.equal(bins.centers[26], torch.tensor([-110.0, -110.0]))  # q = i * 25 + j

    def test_from_points_keeps_order(self):
        pts = ABBins.gamut().centers[torch.randperm(261)]
        bins = ABBins.from_points(pts)
        assert torch.equal(bins.centers, pts)
        ab = as_image(pts[:7] + 1.0)
        assert torch.equal(bins.encode_hard(ab).reshape(-1), torch.arange(7))

    def test_bad_points(self):
        with pytest.raises(ValueError, match=r"\(2, 313\)"):
            ABBins.from_points(torch.zeros(2, 313))
        with pytest.raises(ValueError, match="NaN"):
            ABBins.from_points(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))


class TestEncodeSoft:
    @pytest.mark.parametrize("spread", [60.0, 140.0])
    def test_gamut_bins_vs_transcription(self, spread):
        check_against_reference(ABBins.gamut(), random_ab(3000, spread))

    def test_grid_bins_vs_transcription(self):
        check_against_reference(ABBins.grid(25, 10), random_ab(2000, 150.0), k=10)

    def test_off_lattice_table_vs_transcription(self):
        pts = torch.randn(50, 2) * 40  # not a lattice: the exact path
        bins = ABBins.from_points(pts)
        assert "lattice=False" in repr(bins)
        check_against_reference(bins, random_ab(500), k=7, sigma=8.0)

    def test_lattice_tables_do_not_depend_on_threads(self):
        # The tables were once built with an index assignment with repeated indices, a race
        # between intra-op threads: the order of each pixel's k nearest bins changed from one
        # process to the next, and runs resumed from a checkpoint drifted off uninterrupted ones.
        # On 2 threads the race showed in 3-25% of such builds.
        build = _order_k_zones.__wrapped__  # not the cached tables
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            serial = build(5, 64, 3)
            torch.set_num_threads(2)
            for _ in range(100):
                parallel = build(5, 64, 3)
                assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
        finally:
            torch.set_num_threads(threads)

    @pytest.mark.parametrize("k", [1, 4, 13])
    def test_other_k(self, k):
        check_against_reference(ABBins.gamut(), random_ab(1000, 100.0), k=k)

    def test_real_image_and_shapes(self):
        rgb = F.interpolate(torch.rand(2, 3, 6, 6), size=(32, 40), mode="bilinear")
        ab = rgb_to_lab(rgb)[:, 1:]
        bins = ABBins.gamut()
        enc = bins.encode_soft(ab)
        assert enc.indices.shape == (2, 10, 32, 40) and enc.weights.shape == (2, 10, 32, 40)
        assert torch.allclose(enc.weights.sum(1), torch.ones(2, 32, 40), atol=1e-5)
        assert torch.equal(enc.nearest, bins.encode_hard(ab))
        dense = enc.to_dense(bins.num_bins)
        assert dense.shape == (2, 261, 32, 40)
        assert torch.allclose(dense.sum(1), torch.ones(2, 32, 40), atol=1e-5)
        assert torch.equal(dense.argmax(1), enc.nearest)
        points = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        check_against_reference(bins, points)

    def test_bad_inputs(self):
        bins = ABBins.grid(5, 10)
        with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
            bins.encode_soft(torch.zeros(2, 3, 4, 4))
        with pytest.raises(ValueError, match="k must be"):
            bins.encode_soft(torch.zeros(1, 2, 4, 4), k=26)
        with pytest.raises(TypeError):
            bins.encode_hard(torch.zeros(1, 2, 4, 4, dtype=torch.long))


class TestDecoding:
    def test_annealed_mean_transcription(self):
        bins = ABBins.grid(5, 20)
        logits = torch.randn(2, 25, 3, 4, dtype=torch.float64)
        t = 0.38
        z = np.log(torch.softmax(logits, 1).numpy())  # Eq. 8 applies f_T to log Z
        f = np.exp(z / t) / np.exp(z / t).sum(1, keepdims=True)
        ref = np.einsum("bqhw,qc->bchw", f, bins.centers.double().numpy())
        np.testing.assert_allclose(bins.annealed_mean(logits, t).numpy(), ref, atol=1e-9)

    def test_limits(self):
        bins = ABBins.gamut()
        logits = torch.randn(2, bins.num_bins, 4, 4, dtype=torch.float64) * 3
        mean = bins.decode_mean(torch.softmax(logits, 1))
        assert torch.allclose(bins.annealed_mean(logits, 1.0), mean)
        mode = bins.decode_mode(logits)
        assert torch.allclose(bins.annealed_mean(logits, 1e-6), mode, atol=1e-6)
        assert torch.equal(bins.annealed_mean(logits, 0.0), mode)

    def test_stable_for_large_logits_and_tiny_t(self):
        bins = ABBins.grid(5, 10)
        logits = torch.randn(1, 25, 2, 2) * 1e4
        out = bins.annealed_mean(logits, 1e-3)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, bins.decode_mode(logits))
        assert torch.allclose(annealed_mean(logits, bins.centers, 0.0), bins.decode_mode(logits))

    def test_bad(self):
        bins = ABBins.grid(5, 10)
        with pytest.raises(ValueError, match="temperature"):
            bins.annealed_mean(torch.zeros(1, 25, 1, 1), -1.0)
        with pytest.raises(ValueError, match="25"):
            bins.decode_mode(torch.zeros(1, 24, 1, 1))


class TestSoftCrossEntropy:
    def test_matches_dense_eq3(self):
        bins = ABBins.gamut()
        ab = (torch.rand(2, 2, 5, 6) * 2 - 1) * 60
        enc = bins.encode_soft(ab)
        logits = torch.randn(2, bins.num_bins, 5, 6, dtype=torch.float64, requires_grad=True)
        v = torch.rand(2, 5, 6)
        loss = soft_cross_entropy(logits, enc, v)
        dense = enc.to_dense(bins.num_bins).double()
        ref = -(v.double() * (dense * torch.log_softmax(logits, 1)).sum(1)).mean()
        assert torch.allclose(loss.double(), ref, atol=1e-5)
        loss.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()

    def test_shape_mismatch(self):
        enc = SoftEncoding(torch.zeros(1, 2, 3, 3, dtype=torch.long), torch.ones(1, 2, 3, 3) / 2)
        with pytest.raises(ValueError, match="spatial"):
            soft_cross_entropy(torch.zeros(1, 5, 4, 4), enc)


def test_set_centers_and_state_dict_refresh_the_lattice_tables():
    grid = ABBins.grid(5, 10)
    bins = ABBins(torch.randn(25, 2) * 30)  # not a lattice
    assert "lattice=False" in repr(bins)
    bins.load_state_dict(grid.state_dict())
    assert "lattice=True" in repr(bins)
    ab = (torch.rand(1, 2, 3, 3) * 2 - 1) * 20
    assert torch.equal(bins.encode_hard(ab), grid.encode_hard(ab))
    bins.set_centers(grid.centers * 2)
    assert torch.equal(bins.centers, grid.centers * 2)
    with pytest.raises(ValueError, match=r"\(25, 2\)"):
        bins.set_centers(torch.zeros(24, 2))
