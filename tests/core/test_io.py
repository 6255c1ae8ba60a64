"""Tests for chromalab.io: robust loading, saving, recombination and file listing.

Every fixture image is written into ``tmp_path`` with PIL, numpy or a hand-made PNG
encoder; expected values come from the pixel data we wrote or from PIL/numpy directly.
"""

from __future__ import annotations

import errno
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

from chromalab.color import lab_to_rgb, rgb_to_l_ab
from chromalab.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    decode_image,
    iter_image_files,
    load_image,
    load_images,
    recombine,
    save_image,
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _write_png(
    path: Path, width: int, height: int, bit_depth: int, color_type: int, rows: bytes
) -> Path:
    """Write a PNG by hand (IHDR, one IDAT holding ``rows``, IEND); no PIL involved."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _chw(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) float array -> (C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)


@pytest.fixture(autouse=True)
def _truncated_flag_is_left_alone():
    """No test may leave PIL's process-wide truncation flag changed."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    assert before == ImageFile.LOAD_TRUNCATED_IMAGES


class TestImageLoadError:
    def test_attributes_and_message(self, tmp_path):
        error = ImageLoadError(tmp_path / "x.png", "broken")
        assert error.path == str(tmp_path / "x.png")
        assert error.reason == "broken"
        assert str(error) == f"{tmp_path / 'x.png'}: broken"

    def test_pickle_round_trip(self):
        error = pickle.loads(pickle.dumps(ImageLoadError("a.jpg", "empty file (0 bytes)")))
        assert (error.path, error.reason) == ("a.jpg", "empty file (0 bytes)")


class TestLoadImageBadInput:
    def _raises(self, path, reason_part: str, **kwargs) -> ImageLoadError:
        with pytest.raises(ImageLoadError) as info:
            load_image(path, **kwargs)
        assert info.value.path == str(path)
        assert reason_part in info.value.reason
        assert str(info.value) == f"{path}: {info.value.reason}"
        return info.value

    def test_missing_path(self, tmp_path):
        self._raises(tmp_path / "nope.png", "no such file")

    def test_directory(self, tmp_path):
        self._raises(tmp_path, "directory")

    def test_empty_file(self, tmp_path):
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
        self._raises(path, "empty file")

    def test_text_file_named_jpg(self, tmp_path):
        path = tmp_path / "notes.jpg"
        path.write_text("this is not a JPEG\n" * 20)
        self._raises(path, "not a recognised image")

    @pytest.mark.parametrize("suffix", [".jpg", ".png"])
    def test_truncated(self, tmp_path, suffix):
        full = tmp_path / f"full{suffix}"
        Image.fromarray(_random_rgb(64, 80)).save(full)
        data = full.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        self._raises(cut, "truncated")
        assert load_image(full).shape == (3, 64, 80)

    def test_truncated_jpeg_even_if_pil_flag_set(self, tmp_path, monkeypatch):
        """Another library may have set LOAD_TRUNCATED_IMAGES: we must still refuse."""
        full = tmp_path / "full.jpg"
        Image.fromarray(_random_rgb(64, 80)).save(full)
        cut = tmp_path / "cut.jpg"
        cut.write_bytes(full.read_bytes()[:-400])
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with Image.open(cut) as padded:  # PIL alone pads silently under the flag
            padded.load()
        self._raises(cut, "truncated")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
        assert load_image(full).shape == (3, 64, 80)

    def test_truncated_png_even_if_pil_flag_set(self, tmp_path, monkeypatch):
        full = tmp_path / "full.png"
        Image.fromarray(_random_rgb(64, 80)).save(full)
        cut = tmp_path / "cut.png"
        cut.write_bytes(full.read_bytes()[:-4000])
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        self._raises(cut, "truncated")

    def test_decompression_bomb_refused_before_decoding(self, tmp_path, monkeypatch):
        # 9000 x 9000 = 81 M pixels: above our default budget, below PIL's own limit, so
        # only the header check of load_image can refuse it. IDAT holds one row only.
        path = _write_png(tmp_path / "bomb.png", 9000, 9000, 8, 2, b"\x00" * (1 + 9000 * 3))
        assert path.stat().st_size < 200
        assert DEFAULT_MAX_PIXELS < 9000 * 9000 < Image.MAX_IMAGE_PIXELS
        allocations = []
        original = ImageFile.ImageFile.load_prepare

        def spy(self):
            allocations.append(self.size)
            return original(self)

        monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", spy)
        error = self._raises(path, "max_pixels")
        assert "9000x9000" in error.reason
        assert allocations == []

    def test_huge_declared_size_refused(self, tmp_path):
        path = _write_png(tmp_path / "bomb.png", 30000, 30000, 8, 2, b"\x00" * 16)
        self._raises(path, "decompression bomb")

    def test_pil_bomb_error_becomes_image_load_error(self, tmp_path):
        # 900 M pixels: PIL's open() raises DecompressionBombError (over 2x its limit).
        path = _write_png(tmp_path / "bomb.png", 30000, 30000, 8, 2, b"\x00" * 16)
        self._raises(path, "PIL", max_pixels=10**12)

    def test_pil_bomb_warning_becomes_image_load_error(self, tmp_path):
        # 100 M pixels: between PIL's limit and twice it, where PIL only warns.
        path = _write_png(tmp_path / "big.png", 10000, 10000, 8, 0, b"\x00" * 16)
        assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
        self._raises(path, "PIL", max_pixels=10**12)

    def test_max_pixels_boundary(self, tmp_path):
        path = tmp_path / "small.png"
        Image.fromarray(_random_rgb(10, 20)).save(path)
        assert load_image(path, max_pixels=200).shape == (3, 10, 20)
        self._raises(path, "max_pixels=199", max_pixels=199)

    @pytest.mark.parametrize("bad", [0, -5, 2.5, True])
    def test_bad_max_pixels(self, tmp_path, bad):
        with pytest.raises(ValueError, match="max_pixels"):
            load_image(tmp_path / "x.png", max_pixels=bad)


class TestLoadImageModes:
    def test_rgb_png_exact(self, tmp_path):
        array = _random_rgb(7, 5)
        Image.fromarray(array).save(tmp_path / "rgb.png")
        image = load_image(tmp_path / "rgb.png")
        assert image.dtype == torch.float32 and image.shape == (3, 7, 5)
        assert torch.equal(image, _chw(array.astype(np.float32) / np.float32(255)))

    def test_one_by_one(self, tmp_path):
        Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
        image = load_image(str(tmp_path / "dot.png"))
        assert image.shape == (3, 1, 1)
        assert torch.allclose(image.flatten(), torch.tensor([10, 20, 30]) / 255.0)

    def test_16bit_png(self, tmp_path):
        values = np.array([[0, 1, 257, 1000], [30000, 40000, 65534, 65535]], dtype=">u2")
        rows = b"".join(b"\x00" + row.tobytes() for row in values)
        path = _write_png(tmp_path / "deep.png", 4, 2, 16, 0, rows)
        image = load_image(path)
        expected = torch.from_numpy(values.astype(np.float64) / 65535.0).float()
        assert image.shape == (3, 2, 4)
        for channel in image:
            assert torch.allclose(channel, expected, rtol=0, atol=1e-7)
        assert image[0, 1, 3] == 1.0 and image[0, 0, 0] == 0.0

    def test_16bit_pgm_read_as_mode_i(self, tmp_path):
        values = np.array([[0, 1000, 65535]], dtype=">u2")
        path = tmp_path / "deep.pgm"
        path.write_bytes(b"P5\n3 1\n65535\n" + values.tobytes())
        assert Image.open(path).mode == "I"
        image = load_image(path)
        assert torch.allclose(image[1], torch.tensor([[0.0, 1000 / 65535, 1.0]]), atol=1e-7)

    def test_16bit_big_endian_tiff(self, tmp_path):
        values = np.array([[0, 1000], [40000, 65535]], dtype=">u2")
        Image.fromarray(values).save(tmp_path / "deep.tif")
        assert Image.open(tmp_path / "deep.tif").mode == "I;16B"
        image = load_image(tmp_path / "deep.tif")
        expected = torch.from_numpy(values.astype(np.float64) / 65535).float()
        assert torch.allclose(image[2], expected, atol=1e-7)

    def test_32bit_integer_tiff(self, tmp_path):
        values = np.array([[0, 5], [2**31 - 1, 2**30]], dtype=np.int32)
        Image.fromarray(values).save(tmp_path / "int.tif")
        image = load_image(tmp_path / "int.tif")
        expected = torch.from_numpy(values / (2**31 - 1)).float()
        assert torch.allclose(image[0], expected, atol=1e-7)

    def test_32bit_negative_values_refused(self, tmp_path):
        values = np.array([[-3, 5]], dtype=np.int32)
        Image.fromarray(values).save(tmp_path / "neg.tif")
        with pytest.raises(ImageLoadError, match="negative"):
            load_image(tmp_path / "neg.tif")

    def test_float_tiff(self, tmp_path):
        values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
        Image.fromarray(values).save(tmp_path / "f.tif")
        assert torch.equal(load_image(tmp_path / "f.tif")[1], torch.from_numpy(values))
        Image.fromarray(values * 3).save(tmp_path / "hdr.tif")
        with pytest.raises(ImageLoadError, match=r"outside \[0, 1\]"):
            load_image(tmp_path / "hdr.tif")

    def test_bilevel(self, tmp_path):
        bits = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
        Image.fromarray(bits).save(tmp_path / "bits.png")
        assert Image.open(tmp_path / "bits.png").mode == "1"
        image = load_image(tmp_path / "bits.png")
        assert torch.equal(image, torch.from_numpy(bits).float().expand(3, -1, -1))

    def test_greyscale_replicated(self, tmp_path):
        grey = np.random.default_rng(1).integers(0, 256, (6, 9), dtype=np.uint8)
        Image.fromarray(grey).save(tmp_path / "grey.png")
        image = load_image(tmp_path / "grey.png")
        expected = torch.from_numpy(grey.astype(np.float32) / 255)
        assert all(torch.equal(channel, expected) for channel in image)

    def test_cmyk_jpeg_matches_pil_conversion(self, tmp_path):
        rng = np.random.default_rng(2)
        cmyk = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
        Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg")
        with Image.open(tmp_path / "cmyk.jpg") as reference:
            assert reference.mode == "CMYK"
            expected = np.asarray(reference.convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(load_image(tmp_path / "cmyk.jpg"), _chw(expected))

    def test_rgba_composited_over_white(self, tmp_path):
        rng = np.random.default_rng(3)
        rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
        rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
        Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
        color, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
        expected = color * alpha + 1.0 * (1.0 - alpha)
        image = load_image(tmp_path / "rgba.png")
        assert torch.allclose(image, _chw(expected), atol=1e-6)
        assert torch.equal(image[:, 0, 0], torch.ones(3))  # fully transparent -> white
        assert torch.allclose(image[:, 0, 1], torch.from_numpy(color[0, 1]).float())

    def test_la_composited_over_white(self, tmp_path):
        rng = np.random.default_rng(4)
        la = rng.integers(0, 256, (4, 7, 2), dtype=np.uint8)
        Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
        assert Image.open(tmp_path / "la.png").mode == "LA"
        grey, alpha = la[..., :1] / 255.0, la[..., 1:] / 255.0
        expected = np.repeat(grey * alpha + (1.0 - alpha), 3, axis=-1)
        assert torch.allclose(load_image(tmp_path / "la.png"), _chw(expected), atol=1e-6)

    @pytest.fixture
    def palette_image(self):
        palette = [200, 10, 30, 20, 220, 40, 0, 0, 255]
        image = Image.new("P", (3, 2))
        image.putpalette(palette + [0] * (768 - len(palette)))
        indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
        image.putdata(indices.flatten().tolist())
        return image, np.array(palette, dtype=np.float64).reshape(3, 3) / 255, indices

    def test_palette_without_transparency(self, tmp_path, palette_image):
        image, colors, indices = palette_image
        image.save(tmp_path / "p.png")
        assert "transparency" not in Image.open(tmp_path / "p.png").info
        assert torch.allclose(load_image(tmp_path / "p.png"), _chw(colors[indices]), atol=1e-7)

    def test_palette_with_transparency(self, tmp_path, palette_image):
        image, colors, indices = palette_image
        # entry 0 fully transparent, entry 1 half transparent, entry 2 opaque
        image.save(tmp_path / "pt.png", transparency=bytes([0, 128, 255]))
        with Image.open(tmp_path / "pt.png") as reopened:
            assert reopened.mode == "P" and "transparency" in reopened.info
        alpha = np.array([0, 128, 255], dtype=np.float64)[indices][..., None] / 255
        expected = colors[indices] * alpha + (1.0 - alpha)
        image_out = load_image(tmp_path / "pt.png")
        assert torch.allclose(image_out, _chw(expected), atol=1e-6)
        assert torch.equal(image_out[:, 0, 0], torch.ones(3))

    def test_exif_orientation_6(self, tmp_path):
        # Stored 64 wide x 32 high, four flat quadrants; orientation 6 = rotate 90 deg CW.
        stored = np.zeros((32, 64, 3), dtype=np.uint8)
        stored[:16, :32] = (255, 0, 0)  # top-left: red
        stored[:16, 32:] = (0, 255, 0)  # top-right: green
        stored[16:, :32] = (0, 0, 255)  # bottom-left: blue
        stored[16:, 32:] = (255, 255, 255)  # bottom-right: white
        exif = Image.Exif()
        exif[0x0112] = 6
        path = tmp_path / "rotated.jpg"
        Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
        image = load_image(path)
        assert image.shape == (3, 64, 32)
        with Image.open(path) as raw:
            decoded = np.asarray(raw.convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(image, _chw(np.rot90(decoded, k=-1)))
        # After a clockwise turn: blue top-left, red top-right, white bottom-left, green
        # bottom-right.
        corners = {
            (8, 8): (0, 0, 1),
            (8, 24): (1, 0, 0),
            (56, 8): (1, 1, 1),
            (56, 24): (0, 1, 0),
        }
        for (row, col), color in corners.items():
            assert torch.allclose(image[:, row, col], torch.tensor(color).float(), atol=0.05)


class TestLoadImages:
    def test_bad_file_reported_and_skipped(self, tmp_path, caplog):
        Image.fromarray(_random_rgb(4, 4)).save(tmp_path / "good.png")
        (tmp_path / "bad.png").write_bytes(b"")
        loaded, errors = load_images([tmp_path / "bad.png", tmp_path / "good.png"])
        assert [path.name for path, _ in loaded] == ["good.png"]
        assert loaded[0][1].shape == (3, 4, 4)
        assert [error.path for error in errors] == [str(tmp_path / "bad.png")]
        assert "bad.png" in caplog.text


class TestSaveImage:
    def test_png_round_trip(self, tmp_path):
        image = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0))
        path = save_image(image, tmp_path / "a" / "b" / "out.png")
        assert path == tmp_path / "a" / "b" / "out.png" and path.is_file()
        expected = np.round(image.permute(1, 2, 0).double().numpy() * 255) / 255
        assert torch.allclose(load_image(path), _chw(expected), atol=1e-7)

    def test_greyscale(self, tmp_path):
        image = torch.rand(1, 5, 4, generator=torch.Generator().manual_seed(1))
        path = save_image(image, tmp_path / "grey.png")
        assert Image.open(path).mode == "L"
        expected = torch.from_numpy(np.round(image[0].double().numpy() * 255) / 255).float()
        assert all(torch.allclose(channel, expected, atol=1e-7) for channel in load_image(path))

    def test_jpeg_by_suffix(self, tmp_path):
        image = torch.full((3, 16, 16), 0.5)
        path = save_image(image, tmp_path / "out.JPEG")
        assert path.read_bytes()[:2] == b"\xff\xd8"
        assert Image.open(path).format == "JPEG"
        assert torch.allclose(load_image(path), image, atol=2 / 255)

    def test_clamped(self, tmp_path):
        image = torch.tensor([-0.5, 0.2, 1.5]).reshape(3, 1, 1)
        path = save_image(image, tmp_path / "c.png")
        assert np.asarray(Image.open(path))[0, 0].tolist() == [0, 51, 255]

    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_non_finite_rejected(self, tmp_path, bad):
        image = torch.zeros(3, 2, 2)
        image[1, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            save_image(image, tmp_path / "x.png")
        assert not (tmp_path / "x.png").exists()

    @pytest.mark.parametrize("shape", [(2, 4, 4), (4, 4), (1, 3, 4, 4)])
    def test_bad_shape(self, tmp_path, shape):
        with pytest.raises(ValueError, match=r"\(3, H, W\)"):
            save_image(torch.zeros(shape), tmp_path / "x.png")

    def test_bad_suffix_and_dtype(self, tmp_path):
        with pytest.raises(ValueError, match=r"\.xyz"):
            save_image(torch.zeros(3, 2, 2), tmp_path / "x.xyz")
        with pytest.raises(TypeError, match="floating-point"):
            save_image(torch.zeros(3, 2, 2, dtype=torch.uint8), tmp_path / "x.png")


def _bilinear_upsample_reference(ab: np.ndarray, height: int, width: int) -> np.ndarray:
    """Direct transcription of half-pixel bilinear resizing (align_corners=False)."""

    def axis_weights(n_in: int, n_out: int) -> np.ndarray:
        weights = np.zeros((n_out, n_in))
        for i in range(n_out):
            source = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            low = min(int(np.floor(source)), n_in - 1)
            high = min(low + 1, n_in - 1)
            frac = source - low
            weights[i, low] += 1.0 - frac
            weights[i, high] += frac
        return weights

    rows, cols = axis_weights(ab.shape[-2], height), axis_weights(ab.shape[-1], width)
    return np.einsum("yh,bchw,xw->bcyx", rows, ab, cols)


class TestRecombine:
    @pytest.fixture
    def lab(self):
        rgb = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(5))
        return rgb_to_l_ab(rgb)

    def test_full_resolution_is_lab_to_rgb(self, lab):
        light, ab = lab
        assert torch.equal(recombine(light, ab), lab_to_rgb(torch.cat([light, ab], dim=1)))

    def test_full_resolution_round_trip(self, lab):
        light, ab = lab
        rgb = lab_to_rgb(torch.cat([light, ab], dim=1))
        assert torch.allclose(recombine(light, ab), rgb)
        assert recombine(light, ab).shape == (2, 3, 8, 12)

    def test_half_resolution_bilinear(self, lab):
        light, _ = lab
        ab_low = (torch.rand(2, 2, 4, 6, generator=torch.Generator().manual_seed(6)) - 0.5) * 80
        upsampled = _bilinear_upsample_reference(ab_low.double().numpy(), 8, 12)
        expected = lab_to_rgb(torch.cat([light, torch.from_numpy(upsampled).float()], dim=1))
        result = recombine(light, ab_low)
        assert result.shape == (2, 3, 8, 12)
        assert torch.allclose(result, expected, atol=1e-5)
        assert result.min() >= 0 and result.max() <= 1

    def test_half_resolution_against_interpolate(self, lab):
        light, _ = lab
        ab_low = (torch.rand(2, 2, 4, 6, generator=torch.Generator().manual_seed(7)) - 0.5) * 80
        manual = F.interpolate(ab_low, size=(8, 12), mode="bilinear", align_corners=False)
        expected = lab_to_rgb(torch.cat([light, manual], dim=1))
        assert torch.allclose(recombine(light, ab_low), expected, atol=1e-6)

    def test_nearest_mode(self, lab):
        light, _ = lab
        ab_low = (torch.rand(2, 2, 4, 6, generator=torch.Generator().manual_seed(8)) - 0.5) * 80
        repeated = ab_low.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        expected = lab_to_rgb(torch.cat([light, repeated], dim=1))
        assert torch.allclose(recombine(light, ab_low, mode="nearest"), expected, atol=1e-6)

    def test_unbatched(self, lab):
        light, ab = lab
        ab_low = ab[:, :, ::2, ::2]
        result = recombine(light[1], ab_low[1])
        assert result.shape == (3, 8, 12)
        assert torch.allclose(result, recombine(light, ab_low)[1])

    @pytest.mark.parametrize(
        ("l_shape", "ab_shape", "message"),
        [
            ((2, 1, 8, 8), (3, 2, 4, 4), "batch sizes differ"),
            ((2, 3, 8, 8), (2, 2, 4, 4), "1 channel"),
            ((2, 1, 8, 8), (2, 3, 4, 4), "2 channels"),
            ((1, 8, 8), (1, 2, 4, 4), "unbatched"),
            ((8, 8), (4, 4), "unbatched"),
        ],
    )
    def test_shape_errors(self, l_shape, ab_shape, message):
        with pytest.raises(ValueError, match=message) as info:
            recombine(torch.zeros(l_shape), torch.zeros(ab_shape))
        assert str(tuple(l_shape)) in str(info.value)
        assert str(tuple(ab_shape)) in str(info.value)

    def test_bad_mode_and_dtype(self):
        with pytest.raises(ValueError, match="mode"):
            recombine(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, 2), mode="lanczos")
        with pytest.raises(TypeError, match="floating-point"):
            recombine(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 2, 2, 2))


class TestIterImageFiles:
    @pytest.fixture
    def tree(self, tmp_path):
        for name in ["b.png", "a.JPG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.Tiff", "sub/x.md"]:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        (tmp_path / "folder.png").mkdir()  # a directory with an image suffix is not a file
        return tmp_path

    def test_recursive(self, tree):
        expected = sorted(tree / name for name in ["a.JPG", "b.png", "sub/c.jpeg"])
        expected = sorted([*expected, tree / "sub/deeper/d.Tiff"])
        assert iter_image_files(tree) == expected

    def test_not_recursive(self, tree):
        assert iter_image_files(tree, recursive=False) == [tree / "a.JPG", tree / "b.png"]

    def test_single_file(self, tree):
        assert iter_image_files(tree / "notes.txt") == [tree / "notes.txt"]
        assert iter_image_files(str(tree / "b.png")) == [tree / "b.png"]

    def test_missing_root(self, tmp_path):
        with pytest.raises(FileNotFoundError) as info:
            iter_image_files(tmp_path / "missing")
        assert info.value.errno == errno.ENOENT
        assert str(tmp_path / "missing") in str(info.value)

    def test_extensions_are_lower_case(self):
        assert isinstance(IMAGE_EXTENSIONS, frozenset)
        assert {".png", ".jpg", ".jpeg"} <= IMAGE_EXTENSIONS
        assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


class TestDecodeImage:
    def test_equals_load_image(self, tmp_path):
        path = tmp_path / "x.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 7, 4), dtype=np.uint8)).save(
            path
        )
        assert torch.equal(decode_image(path.read_bytes(), "x.png"), load_image(path))

    def test_truncated_and_empty_bytes(self, tmp_path):
        path = tmp_path / "x.jpg"
        Image.fromarray(
            np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        ).save(path)
        data = path.read_bytes()
        with pytest.raises(ImageLoadError, match="member.jpg.*truncated"):
            decode_image(data[: len(data) // 2], "member.jpg")
        with pytest.raises(ImageLoadError, match="empty"):
            decode_image(b"", "member.jpg")
        with pytest.raises(ImageLoadError, match="not a recognised"):
            decode_image(b"hello world", "member.jpg")
