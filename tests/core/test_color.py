import math

import numpy as np
import pytest
import skimage.color
import torch

from chromalab import color


def _srgb_levels(step: int) -> torch.Tensor:
    """A dense sample of the 8-bit sRGB cube (every ``step``-th level plus 255) as (3, N, 1)."""
    levels = torch.cat([torch.arange(0, 256, step), torch.tensor([255])]).unique().double() / 255
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    return torch.stack([r.reshape(-1), g.reshape(-1), b.reshape(-1)])[:, :, None]


class TestRgbToLab:
    def test_matches_skimage_on_dense_srgb_sample(self):
        rgb = _srgb_levels(3)  # 87^3 colours
        ours = color.rgb_to_lab(rgb.float()).double()
        ref = skimage.color.rgb2lab(rgb.permute(1, 2, 0).numpy())  # (N, 1, 3)
        ref = torch.from_numpy(ref).permute(2, 0, 1)
        assert (ours - ref).abs().max() < 1e-3

    def test_inverse_matches_skimage(self):
        rgb = _srgb_levels(5)
        lab = skimage.color.rgb2lab(rgb.permute(1, 2, 0).numpy())
        ref = skimage.color.lab2rgb(lab)
        ours = color.lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).double()
        assert (ours - torch.from_numpy(ref).permute(2, 0, 1)).abs().max() < 1e-3

    def test_round_trip(self):
        rgb = torch.rand(2, 3, 8, 9)
        back = color.lab_to_rgb(color.rgb_to_lab(rgb))
        assert torch.allclose(back, rgb, atol=1e-4)

    def test_reference_values(self):
        # white is L=100, a=b=0; black is L=0; sRGB red is about (53.24, 80.09, 67.20)
        rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T[:, :, None]
        lab = color.rgb_to_lab(rgb)[:, :, 0].T
        expected = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20]])
        assert torch.allclose(lab, expected, atol=0.02)

    def test_batch_shapes(self):
        for shape in [(3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 4, 5)]:
            assert color.rgb_to_lab(torch.rand(shape)).shape == shape

    @pytest.mark.parametrize("shape", [(4, 4), (2, 4, 4), (1, 4, 4, 4)])
    def test_bad_shape_names_it(self, shape):
        with pytest.raises(
            ValueError, match=str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")
        ):
            color.rgb_to_lab(torch.rand(shape))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError):
            color.rgb_to_lab(np.zeros((3, 2, 2)))

    def test_gradcheck(self):
        rgb = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
        assert torch.autograd.gradcheck(color.rgb_to_lab, (rgb,))
        lab = color.rgb_to_lab(rgb.detach()).requires_grad_()
        assert torch.autograd.gradcheck(lambda x: color.lab_to_rgb(x, clip=False), (lab,))


class TestHsv:
    def test_matches_skimage(self):
        rgb = torch.rand(3, 16, 16, dtype=torch.float64)
        ours = color.rgb_to_hsv(rgb)
        ref = torch.from_numpy(skimage.color.rgb2hsv(rgb.permute(1, 2, 0).numpy())).permute(2, 0, 1)
        assert torch.allclose(ours[1:], ref[1:], atol=1e-6)
        # hue: skimage in [0, 1), ours in radians; compare on the circle
        diff = torch.remainder(ours[0] - ref[0] * 2 * math.pi + math.pi, 2 * math.pi) - math.pi
        assert diff.abs().max() < 1e-5

    def test_round_trip(self):
        rgb = torch.rand(2, 3, 5, 5)
        assert torch.allclose(color.hsv_to_rgb(color.rgb_to_hsv(rgb)), rgb, atol=1e-5)


class TestNormalization:
    def test_values(self):
        assert color.normalize_l(torch.tensor(50.0)) == 0
        assert color.normalize_l(torch.tensor(100.0)) == 0.5
        assert color.normalize_ab(torch.tensor(110.0)) == 1

    def test_inverses(self):
        x = torch.randn(10) * 50
        assert torch.allclose(color.denormalize_l(color.normalize_l(x)), x)
        assert torch.allclose(color.denormalize_ab(color.normalize_ab(x)), x)

    def test_split_and_chroma(self):
        rgb = torch.rand(2, 3, 4, 4)
        l, ab = color.rgb_to_l_ab(rgb)
        lab = color.rgb_to_lab(rgb)
        assert torch.equal(l, lab[:, :1]) and torch.equal(ab, lab[:, 1:])
        chroma = color.ab_chroma(ab)
        assert torch.allclose(chroma, (ab[:, :1] ** 2 + ab[:, 1:] ** 2).sqrt())


class TestStandardizeL:
    def test_matches_numpy_per_image(self):
        l = torch.rand(3, 1, 8, 9, dtype=torch.float64) * 60 + 20
        out = color.standardize_l(l)
        for i in range(3):
            x = l[i].numpy()
            ref = (x - x.mean()) / x.std(ddof=1)
            assert np.allclose(out[i].numpy(), ref, atol=1e-12)

    def test_invariant_to_brightness_and_contrast(self):
        l = torch.rand(2, 1, 16, 16) * 40 + 30
        shifted = l * torch.tensor([0.5, 1.5]).view(2, 1, 1, 1) + torch.tensor([20.0, -10.0]).view(
            2, 1, 1, 1
        )
        assert torch.allclose(color.standardize_l(shifted), color.standardize_l(l), atol=1e-5)
        # images are standardized one by one, not over the batch
        alone = color.standardize_l(l[1:])
        assert torch.allclose(color.standardize_l(l)[1:], alone, atol=1e-6)

    def test_flat_images_are_only_centred(self):
        flat = torch.full((1, 1, 4, 4), 63.0)
        assert torch.equal(color.standardize_l(flat), torch.zeros_like(flat))
        faint = 50 + 0.1 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        # std 0.1 < min_std 1: divided by 1, not amplified to unit variance
        assert torch.allclose(color.standardize_l(faint), faint - faint.mean(), atol=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
            color.standardize_l(torch.rand(2, 3, 4, 4))
        with pytest.raises(ValueError, match="min_std"):
            color.standardize_l(torch.rand(1, 1, 4, 4), min_std=0.0)

    def test_gradcheck(self):
        l = (torch.rand(2, 1, 3, 4, dtype=torch.float64) * 50 + 25).requires_grad_()
        assert torch.autograd.gradcheck(color.standardize_l, (l,))
