"""chromalab.augment: the L-CoIns luminance augmentation (Eq. 1-2), checked against
scikit-image's HSV and Lab conversions, plus the PNG of Fig. 3's four effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color as skcolor

from chromalab.augment import LuminanceAugmentation, luminance_augmentation, rotate_hue
from chromalab.io import save_image


def _reference(rgb: torch.Tensor, degrees: float, exponent: float) -> np.ndarray:
    """Eq. 1-2 transcribed with scikit-image: HSV hue turned, L of the result, gamma on L/100."""
    image = rgb.permute(1, 2, 0).double().numpy()
    hsv = skcolor.rgb2hsv(image)
    hsv[..., 0] = np.mod(hsv[..., 0] + degrees / 360.0, 1.0)
    lightness = skcolor.rgb2lab(skcolor.hsv2rgb(hsv))[..., 0] / 100.0
    return 100.0 * np.clip(lightness, 0, 1) ** exponent


def _two_objects(top: tuple[float, float, float], bottom: tuple[float, float, float]):
    """An 8x8 image: the top half one colour, the bottom half another."""
    rgb = torch.empty(3, 8, 8)
    rgb[:, :4] = torch.tensor(top)[:, None, None]
    rgb[:, 4:] = torch.tensor(bottom)[:, None, None]
    return rgb


class TestRotateHue:
    def test_matches_scikit_image(self):
        rgb = torch.rand(2, 3, 6, 5)
        out = rotate_hue(rgb, torch.tensor([90.0, -135.0]))
        for i, degrees in enumerate((90.0, -135.0)):
            hsv = skcolor.rgb2hsv(rgb[i].permute(1, 2, 0).double().numpy())
            hsv[..., 0] = np.mod(hsv[..., 0] + degrees / 360.0, 1.0)
            expected = skcolor.hsv2rgb(hsv)
            assert np.abs(out[i].permute(1, 2, 0).numpy() - expected).max() < 1e-4

    def test_full_turn_and_grey_are_unchanged(self):
        rgb = torch.rand(1, 3, 4, 4)
        assert torch.allclose(rotate_hue(rgb, 360.0), rgb, atol=1e-5)
        grey = torch.rand(1, 1, 4, 4).expand(1, 3, 4, 4)
        assert torch.allclose(rotate_hue(grey, 77.0), grey, atol=1e-6)

    def test_red_turns_green_at_120_degrees(self):
        red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        assert torch.allclose(
            rotate_hue(red, 120.0).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5
        )

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            rotate_hue(torch.rand(3, 4, 4), 10.0)
        with pytest.raises(ValueError, match="degrees"):
            rotate_hue(torch.rand(2, 3, 4, 4), torch.zeros(3))


class TestLuminanceAugmentation:
    def test_matches_a_transcription_of_eq_1_and_2(self):
        rgb = torch.rand(3, 3, 5, 7)
        degrees = torch.tensor([-170.0, 0.0, 65.0])
        exponent = torch.tensor([1 / 4.2, 1.0, 3.3])
        out = luminance_augmentation(rgb, degrees, exponent)
        assert out.shape == (3, 1, 5, 7)
        for i in range(3):
            expected = _reference(rgb[i], float(degrees[i]), float(exponent[i]))
            assert np.abs(out[i, 0].numpy() - expected).max() < 2e-2  # L units, float32

    def test_identity_settings_give_the_photographs_lightness(self):
        rgb = torch.rand(2, 3, 4, 4)
        expected = skcolor.rgb2lab(rgb.permute(0, 2, 3, 1).double().numpy())[..., 0]
        out = luminance_augmentation(rgb, 0.0, 1.0)[:, 0].numpy()
        assert np.abs(out - expected).max() < 2e-2

    def test_exponents_darken_and_brighten_keeping_the_order_of_pixels(self):
        rgb = torch.rand(1, 3, 8, 8)
        base = luminance_augmentation(rgb, 0.0, 1.0)
        darker = luminance_augmentation(rgb, 0.0, 3.0)
        brighter = luminance_augmentation(rgb, 0.0, 1 / 3.0)
        assert (darker <= base + 1e-4).all() and (brighter >= base - 1e-4).all()
        assert darker.mean() < base.mean() - 5 and brighter.mean() > base.mean() + 5
        order = base.flatten().argsort()
        assert torch.equal(darker.flatten()[order].argsort(), torch.arange(64))

    def test_bad_exponent(self):
        with pytest.raises(ValueError, match="positive"):
            luminance_augmentation(torch.rand(1, 3, 2, 2), 0.0, 0.0)

    def test_draws_follow_the_paper(self):
        augment = LuminanceAugmentation()
        degrees, exponent = augment.sample(20_000, torch.Generator().manual_seed(0))
        assert degrees.min() >= -180 and degrees.max() <= 180
        assert degrees.min() < -175 and degrees.max() > 175
        gamma = torch.where(exponent < 1, 1 / exponent, exponent)
        assert gamma.min() >= 1 and gamma.max() <= 5 + 1e-5
        assert abs(gamma.mean().item() - 3.0) < 0.05  # U[1, 5]
        assert abs((exponent < 1).float().mean().item() - 0.5) < 0.02  # F_inv: 1/2

    def test_same_generator_same_draws(self):
        augment = LuminanceAugmentation()
        rgb = torch.rand(4, 3, 8, 8)
        a = augment(rgb, torch.Generator().manual_seed(5))
        b = augment(rgb, torch.Generator().manual_seed(5))
        c = augment(rgb, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="gamma_range"):
            LuminanceAugmentation(gamma_range=(0.0, 5.0))
        with pytest.raises(ValueError, match="reciprocal_prob"):
            LuminanceAugmentation(reciprocal_prob=1.5)


def test_figure_3_png_shows_the_four_effects(tmp_path):
    """Fig. 3: relative luminance enlarged, reversed, global brighter, global darker, on an
    image of a yellow object above a blue one (yellow is much the lighter)."""
    rgb = _two_objects((0.9, 0.8, 0.1), (0.1, 0.3, 0.9))
    rgb = rgb[None]

    def halves(l: torch.Tensor) -> tuple[float, float]:
        return l[0, 0, :4].mean().item(), l[0, 0, 4:].mean().item()

    top, bottom = halves(luminance_augmentation(rgb, 0.0, 1.0))
    turns = torch.arange(-180.0, 181.0, 5.0)
    gaps = torch.tensor([
        (lambda t, b: t - b)(*halves(luminance_augmentation(rgb, float(d), 1.0))) for d in turns
    ])  # fmt: skip
    enlarge, reverse = float(turns[gaps.argmax()]), float(turns[gaps.argmin()])
    settings = {
        "original": (0.0, 1.0),
        "enlarged": (enlarge, 1.0),
        "reversed": (reverse, 1.0),
        "brighter": (0.0, 1 / 3.0),
        "darker": (0.0, 3.0),
    }
    out = {name: luminance_augmentation(rgb, d, e) for name, (d, e) in settings.items()}
    t, b = halves(out["enlarged"])
    assert t - b > (top - bottom) + 5  # the gap between the two objects grew
    t, b = halves(out["reversed"])
    assert t < b - 5  # the darker object became the lighter one
    assert out["brighter"].mean() > out["original"].mean() + 10
    assert out["darker"].mean() < out["original"].mean() - 10
    row = torch.cat([rgb[0]] + [(v[0] / 100).expand(3, -1, -1) for v in out.values()], dim=2)
    big = torch.nn.functional.interpolate(row[None], scale_factor=8, mode="nearest")[0]
    path = save_image(big, tmp_path / "luminance_augmentation.png")
    assert path.stat().st_size > 0
    print(f"Fig. 3 effects written to {path} (hue turns {enlarge:+.0f}, {reverse:+.0f} degrees)")
