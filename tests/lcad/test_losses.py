"""L-CAD's pixel-space losses against direct transcriptions of the paper's equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcad.losses import (
    FeaturePerceptualLoss,
    PatchDiscriminator,
    adaptive_weight,
    artifact_map,
    discriminator_hinge_loss,
    generator_hinge_loss,
    pixel_loss,
    reconstruction_loss,
)


def _eq3(target: torch.Tensor, output: torch.Tensor, window: int) -> torch.Tensor:
    """Eq. 3 pixel by pixel: the window's mean, then the sum of squared deviations / N_win²,
    over the window's pixels inside the image."""
    delta = (target - output).double().mean(1)
    b, h, w = delta.shape
    r = window // 2
    out = torch.zeros(b, 1, h, w, dtype=torch.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                patch = delta[n, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
                count = patch.numel()  # N_win² inside the image, fewer at the border
                mu = patch.sum() / count
                out[n, 0, i, j] = ((patch - mu) ** 2).sum() / count
    return out


@pytest.mark.parametrize("window", [3, 7])
def test_artifact_map_is_eq_3(window):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 11, 9), torch.rand(2, 3, 11, 9)
    torch.testing.assert_close(artifact_map(x, y, window).double(), _eq3(x, y, window),
                               atol=1e-6, rtol=1e-5)  # fmt: skip


def test_artifact_map_is_high_on_high_frequency_errors():
    target = torch.zeros(1, 3, 32, 32)
    output = target.clone()
    output[..., 2:14, 2:14] = 0.3  # a flat shift: only its border varies
    checker = (torch.arange(8)[:, None] + torch.arange(8)) % 2 * 0.3
    output[..., 20:28, 20:28] = checker  # a checkerboard artifact
    m = artifact_map(target, output)
    assert m[..., 6:10, 6:10].max() < 1e-6  # inside the flat shift
    assert m[..., 22:26, 22:26].min() > 0.015  # the checkerboard: variance near 0.3² / 4
    assert (artifact_map(target, target) == 0).all()
    # a 1x1 window holds one pixel: no variance anywhere, however large the error
    assert (artifact_map(target, output, 1) == 0).all()


def test_reconstruction_loss_weights_the_l1_error_by_the_detached_map():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16)
    y = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = reconstruction_loss(x, y, 5)
    expected = (_eq3(x, y.detach(), 5).float() * (x - y.detach())).abs().mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-7, rtol=1e-5)
    loss.backward()
    weight = artifact_map(x, y.detach(), 5)
    grad = -(weight * torch.sign(x - y.detach())) / x.numel()  # d/dy of mean |M (x - y)|
    torch.testing.assert_close(y.grad, grad.expand_as(x), atol=1e-9, rtol=1e-5)
    # the default window is LDL's 7
    expected = (_eq3(x, y.detach(), 7).float() * (x - y.detach())).abs().mean()
    torch.testing.assert_close(reconstruction_loss(x, y.detach()), expected, atol=1e-7, rtol=1e-5)


def test_adaptive_weight_is_the_clamped_detached_ratio_of_gradient_norms():
    last = torch.tensor([1.0, 2.0, 2.0], requires_grad=True)
    rec = (3 * last).sum()  # gradient (3, 3, 3): norm 3 sqrt(3)
    adversarial = (last * last).sum()  # gradient 2 * last: norm 6
    weight = adaptive_weight(rec, adversarial, last, weight=2.0)
    assert weight.item() == pytest.approx(2.0 * 3 * 3**0.5 / (6 + 1e-4))
    assert not weight.requires_grad
    (rec + weight * adversarial).backward()  # both graphs kept for the loss's own backward
    torch.testing.assert_close(last.grad, torch.full((3,), 3.0) + weight * 2 * last.detach())
    flat = (0 * last).sum()  # no adversarial gradient: 3 sqrt(3) / 1e-4, clamped
    assert adaptive_weight((3 * last).sum(), flat, last).item() == 1e4


def test_hinge_losses_and_eq_4():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 1]; relu(1 + fake) = [0, 1.5]
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    assert generator_hinge_loss(fake).item() == pytest.approx(0.75)
    rec, dis, per = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    assert pixel_loss(rec, dis, per).item() == pytest.approx(1 + 2 + 0.5 * 4)
    assert pixel_loss(rec, None, None).item() == 1.0


def test_artifact_map_rejects_bad_input():
    with pytest.raises(ValueError, match="odd"):
        artifact_map(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="one shape"):
        artifact_map(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_patch_discriminator_gives_one_logit_per_patch_independent_of_the_batch():
    torch.manual_seed(0)
    d = PatchDiscriminator(channels=8, layers=3)
    x = torch.rand(3, 3, 64, 64)
    logits = d(x)
    assert logits.shape == (3, 1, 6, 6)
    torch.testing.assert_close(d(x[:1]), logits[:1])  # GroupNorm: no batch statistics


def _conv(c_in: int, c_out: int, bias: bool = True) -> int:
    return c_in * c_out * 4 * 4 + (c_out if bias else 0)


def test_the_default_discriminator_is_pix2pixs_70_px_patchgan():
    """64 channels, doubled by each of its 3 layers (64-128-256-512), no bias before a
    GroupNorm (2 affine parameters per channel), LeakyReLU 0.2: a 30x30 logit grid for 256 px."""
    d = PatchDiscriminator()
    widths = [64, 128, 256, 512]
    expected = _conv(3, 64) + _conv(512, 1)
    pairs = zip(widths, widths[1:], strict=False)
    expected += sum(_conv(a, b, bias=False) + 2 * b for a, b in pairs)
    assert sum(p.numel() for p in d.parameters()) == expected
    norms = [m for m in d.modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(32, 128), (32, 256), (32, 512)]
    assert {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    with torch.no_grad():
        assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)
        assert d(torch.rand(1, 3, 63, 63)).shape == (1, 1, 5, 5)  # 4x4 kernels, padding 1


def test_discriminator_channels_double_up_to_8x():
    d = PatchDiscriminator(channels=8, layers=4)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [8, 16, 32, 64, 64, 1]


def test_feature_perceptual_loss_is_a_frozen_feature_distance(tmp_path):
    import timm

    torch.manual_seed(0)
    full = timm.create_model("resnet10t")
    torch.save(full.state_dict(), tmp_path / "resnet10t.pth")
    loss = FeaturePerceptualLoss("resnet10t", tmp_path / "resnet10t.pth", levels=(1, 2))
    assert torch.equal(loss.net.conv1[0].weight, full.conv1[0].weight)  # the local file's
    assert loss.pretrained and all(not p.requires_grad for p in loss.parameters())
    # the network's own normalisation (ImageNet's), not kept in checkpoints; the levels asked
    torch.testing.assert_close(loss.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(loss.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert not any(k in ("mean", "std") for k in loss.state_dict())
    assert len(loss.net(torch.zeros(1, 3, 32, 32))) == 2
    loss.train()
    assert loss.training and not loss.net.training  # frozen statistics while its owner trains
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    assert torch.allclose(loss(x, x), torch.zeros(4), atol=1e-6)
    d = loss(y, x)
    assert d.shape == (4,) and (d > 0).all()
    d.sum().backward()
    assert y.grad.abs().sum() > 0
    # LPIPS's form: per level, squared differences of channel-normalised features
    feats = loss.net(((torch.cat((y, x)) + 1) / 2 - loss.mean) / loss.std)
    expected = sum(
        (F.normalize(f[:4], dim=1) - F.normalize(f[4:], dim=1)).square().sum(1).mean((1, 2))
        for f in feats
    ) / len(feats)
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="no such file"):
        FeaturePerceptualLoss("resnet10t", tmp_path / "absent.pth")


def test_a_feature_network_without_statistics_reads_the_input_as_is(monkeypatch):
    """No mean/std in the network's configuration: mean = std = 0.5, which maps [-1, 1] inputs
    to themselves."""
    import timm

    create = timm.create_model

    def bare(*args, **kwargs):
        net = create(*args, **kwargs)
        net.pretrained_cfg = {k: v for k, v in net.pretrained_cfg.items()
                              if k not in ("mean", "std")}  # fmt: skip
        return net

    monkeypatch.setattr(timm, "create_model", bare)
    loss = FeaturePerceptualLoss("resnet10t")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(((x + 1) / 2 - loss.mean) / loss.std, x)
