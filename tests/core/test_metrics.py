import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from chromalab.bins import ABBins
from chromalab.metrics.accuracy import ABAccuracy
from chromalab.metrics.cmf import AuCCMF
from chromalab.metrics.colorfulness import Colorfulness, colorfulness
from chromalab.metrics.perceptual import FID, LPIPS, MissingWeightsError, psnr_ssim_metrics


def reference_auc(pred: np.ndarray, target: np.ndarray, classes: np.ndarray):
    """Transcription of CIC §4.1: CMF over t = 0..150, trapezoid area / 150; rebalanced with
    per-pixel weights 1 / p(class), p the class frequencies of the targets."""
    d = np.sqrt(((pred - target) ** 2).sum(1)).reshape(-1)
    c = classes.reshape(-1)
    freq = np.bincount(c) / c.size
    w = 1.0 / freq[c]
    ts = np.arange(151)
    cmf = np.array([(d <= t).mean() for t in ts])
    cmf_rb = np.array([(w * (d <= t)).sum() / w.sum() for t in ts])
    return np.trapezoid(cmf, ts) / 150, np.trapezoid(cmf_rb, ts) / 150


class TestAuCCMF:
    def test_against_transcription(self):
        bins = ABBins.gamut()
        target = (torch.rand(3, 2, 8, 8) * 2 - 1) * 70
        pred = target + torch.randn_like(target) * 30
        metric = AuCCMF(bins)
        metric.update(pred[:2], target[:2])
        metric.update(pred[2:], target[2:])
        out = metric.compute()
        raw, rb = reference_auc(pred.numpy(), target.numpy(), bins.encode_hard(target).numpy())
        assert out["auc_cmf"].item() == pytest.approx(raw, abs=1e-6)
        assert out["auc_cmf_rebalanced"].item() == pytest.approx(rb, abs=1e-6)
        assert out["cmf"].shape == (151,)

    def test_perfect_and_gray(self):
        target = (torch.rand(2, 2, 6, 6) * 2 - 1) * 50
        perfect = AuCCMF()
        perfect.update(target, target)
        assert perfect.compute()["auc_cmf"].item() == pytest.approx(1.0)
        gray = AuCCMF()
        gray.update(torch.zeros_like(target), target)
        # gray error is |ab|; its CMF at t is the share of pixels with chroma <= t
        chroma = target.norm(dim=1).reshape(-1).numpy()
        ref = np.trapezoid([(chroma <= t).mean() for t in range(151)], dx=1) / 150
        assert gray.compute()["auc_cmf"].item() == pytest.approx(ref, abs=1e-6)

    def test_distributed_merge_equals_single(self):
        target = (torch.rand(4, 2, 5, 5) * 2 - 1) * 60
        pred = torch.randn_like(target) * 20
        single, a, b = AuCCMF(), AuCCMF(), AuCCMF()
        single.update(pred, target)
        a.update(pred[:2], target[:2])
        b.update(pred[2:], target[2:])
        a.merge_state(b)  # what the DDP "sum" reduction does
        for key in ("auc_cmf", "auc_cmf_rebalanced"):
            assert torch.allclose(a.compute()[key], single.compute()[key])

    def test_given_prior_and_mask(self):
        bins = ABBins.grid(5, 20)
        target = (torch.rand(1, 2, 4, 4) * 2 - 1) * 40
        pred = torch.zeros_like(target)
        uniform = torch.full((25,), 1 / 25)
        m = AuCCMF(bins, prior=uniform)  # uniform prior: rebalanced == raw
        m.update(pred, target)
        out = m.compute()
        assert torch.allclose(out["auc_cmf"], out["auc_cmf_rebalanced"])
        mask = torch.zeros(1, 4, 4, dtype=torch.bool)
        mask[0, 0, 0] = True
        one = AuCCMF(bins)
        one.update(pred, target, mask)
        d = target[0, :, 0, 0].norm().item()
        ref = np.trapezoid([float(d <= t) for t in range(151)]) / 150
        assert one.compute()["auc_cmf"].item() == pytest.approx(ref, abs=1e-6)

    def test_errors(self):
        m = AuCCMF()
        with pytest.warns(UserWarning), pytest.raises(ValueError, match="before any"):
            m.compute()
        with pytest.raises(ValueError, match=r"\(1, 3, 2, 2\)"):
            m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))


class TestABAccuracy:
    def test_against_manual(self):
        bins = ABBins.grid(25, 10)
        target = (torch.rand(2, 2, 8, 8) * 2 - 1) * 100
        logits = torch.randn(2, 625, 8, 8)
        cls = bins.encode_hard(target)
        logits.scatter_(1, cls[:, None], 5.0)  # make most pixels right at top-1
        logits[0, :, 0, 0] = 0
        logits[0, cls[0, 0, 0], 0, 0] = -1  # wrong at this pixel (rank last)
        m = ABAccuracy(bins, (1, 5))
        m.update(logits, target)
        out = m.compute()
        top5 = logits.topk(5, 1).indices
        manual1 = (logits.argmax(1) == cls).float().mean()
        manual5 = (top5 == cls[:, None]).any(1).float().mean()
        assert out["acc@1"] == pytest.approx(manual1.item())
        assert out["acc@5"] == pytest.approx(manual5.item())
        assert out["acc@1"] < 1

    def test_downsamples_target_by_area_average(self):
        """In each 4x4 cell of the target the first column has one a value and the other three
        another; their area average is a third bin. Only it scores: not the first pixel of
        the cell (nearest), not the middle ones (bilinear, nearest-exact)."""
        bins = ABBins.grid(25, 10)
        first = torch.tensor([[-40.0, 80.0], [0.0, -80.0]])
        rest = torch.tensor([[40.0, 0.0], [-40.0, 40.0]])
        columns = torch.stack([first, rest, rest, rest], -1).reshape(2, 8)
        target = torch.full((1, 2, 8, 8), -20.0)
        target[0, 0] = columns.repeat_interleave(4, 0)
        mean = torch.stack([(first + 3 * rest) / 4, torch.full((2, 2), -20.0)])[None]

        def scores(ab: torch.Tensor) -> torch.Tensor:
            """Scores (1, 625, 2, 2) that pick the bin of ``ab`` at every pixel."""
            return torch.zeros(1, 625, 2, 2).scatter_(1, bins.encode_hard(ab)[:, None], 1.0)

        m = ABAccuracy(bins, (1,))
        m.update(scores(mean), target)
        assert m.compute()["acc@1"] == 1
        for pixel in (0, 1):  # one pixel of each cell: the first column, the middle
            m.reset()
            m.update(scores(target[:, :, pixel::4, pixel::4]), target)
            assert m.compute()["acc@1"] == 0


class TestColorfulness:
    def test_transcription(self):
        rgb = torch.rand(3, 3, 10, 12)
        x = rgb.double().numpy() * 255
        for i in range(3):
            r, g, b = x[i]
            rg, yb = r - g, 0.5 * (r + g) - b
            ref = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(
                rg.mean() ** 2 + yb.mean() ** 2
            )
            assert colorfulness(rgb)[i].item() == pytest.approx(ref, rel=1e-5)

    def test_gray_is_zero_and_metric(self):
        gray = torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8)
        assert torch.allclose(colorfulness(gray), torch.zeros(2), atol=1e-4)
        color = torch.rand(2, 3, 8, 8)
        m = Colorfulness()
        m.update(gray, color)
        out = m.compute()
        assert out["colorfulness"] == pytest.approx(0, abs=1e-4)
        assert out["colorfulness_delta"] == pytest.approx(
            colorfulness(color).mean().item(), rel=1e-5
        )


class TestPerceptual:
    def test_missing_weights_name_the_file(self, tmp_path):
        with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
            LPIPS(None)
        with pytest.raises(MissingWeightsError, match="not found"):
            LPIPS(tmp_path / "nope.pth")
        with pytest.raises(MissingWeightsError, match="weights-inception-2015-12-05"):
            FID()

    def test_lpips_loads_local_backbone(self, tmp_path):
        import torchvision

        alex = torchvision.models.alexnet(weights=None)
        path = tmp_path / "alexnet.pth"
        torch.save(alex.state_dict(), path)
        m = LPIPS(path)
        assert torch.equal(m.net.net.slice1[0].weight, alex.features[0].weight)
        assert torch.equal(m.net.net.slice5._modules["10"].weight, alex.features[10].weight)
        x = torch.rand(2, 3, 64, 64)
        m.update(x, x)
        assert m.compute().item() == pytest.approx(0.0, abs=1e-6)
        m.reset()
        m.update(x, torch.rand(2, 3, 64, 64))
        assert m.compute().item() > 0
        torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="features"):
            LPIPS(tmp_path / "bad.pth")

    def test_fid_plumbing_against_closed_form(self):
        class Tiny(nn.Module):
            num_features = 4

            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(3, 4)

            def forward(self, x):  # float images in [0, 1] -> (N, 4) features
                return self.proj(x.mean(dim=(2, 3)))

        tiny = Tiny()
        fid = FID(feature_extractor=tiny)
        real = torch.rand(32, 3, 8, 8)
        fake = torch.rand(32, 3, 8, 8) * 0.5
        fid.update(real, real=True)
        fid.update(fake, real=False)
        got = fid.compute().item()
        with torch.no_grad():
            fr = tiny(real).double().numpy()
            ff = tiny(fake).double().numpy()
        mu1, mu2 = fr.mean(0), ff.mean(0)
        s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
        ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
        assert got == pytest.approx(ref, rel=1e-3, abs=1e-4)

    def test_psnr_ssim(self):
        m = psnr_ssim_metrics()
        x = torch.rand(2, 3, 16, 16)
        y = (x + 0.1).clamp(0, 1)
        out = m(x, y)
        mse = ((x - y) ** 2).mean()
        assert out["psnr"].item() == pytest.approx((10 * torch.log10(1 / mse)).item(), rel=1e-4)
        assert 0 < out["ssim"] < 1
