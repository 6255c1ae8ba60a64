"""Tests for chromalab.data.folders: photo datasets, resizing, grey filter, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from chromalab.data.folders import (
    CaptionedImageDataset,
    ImageFolderDataset,
    derive_seed,
    is_near_grayscale,
    max_chroma,
    resize_and_crop,
    resize_shorter_side,
)
from chromalab.data.records import CaptionRecord


def colour_array(height: int, width: int, seed: int) -> np.ndarray:
    """A colourful uint8 image: random smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        np.sin(6 * x * rng.uniform(0.5, 2) + 3 * y * rng.uniform(0.5, 2) + c) for c in range(3)
    ]
    image = (np.stack(channels, -1) * 0.4 + 0.5) * 255 + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def pil_reference(path: Path, size: int) -> torch.Tensor:
    """Independent reference: PIL antialiased bilinear resize of the shorter side, centre crop."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    save(root / "n001" / "a.png", colour_array(40, 60, 0))
    save(root / "n001" / "b.png", colour_array(50, 30, 1))
    save(root / "n002" / "c.png", colour_array(32, 32, 2))
    save(root / "n002" / "d.jpg", colour_array(45, 70, 3))
    return root


class TestDeriveSeed:
    def test_deterministic_and_distinct(self) -> None:
        assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
        seeds = {derive_seed(0, epoch, index) for epoch in range(5) for index in range(50)}
        assert len(seeds) == 250
        assert 0 <= derive_seed(7) < 2**63

    def test_rejects_negative(self) -> None:
        with pytest.raises(ValueError, match="non-negative"):
            derive_seed(1, -1)


class TestResize:
    @pytest.mark.parametrize(
        ("height", "width", "size"), [(40, 60, 24), (50, 30, 64), (33, 33, 33)]
    )
    def test_matches_pil(self, tmp_path: Path, height: int, width: int, size: int) -> None:
        path = save(tmp_path / "x.png", colour_array(height, width, 5))
        rgb = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(
            2, 0, 1
        )
        out = resize_and_crop(rgb, size)
        assert out.shape == (3, size, size)
        # PIL works in 8 bits: agreement to rounding.
        torch.testing.assert_close(out, pil_reference(path, size), atol=2 / 255, rtol=0)

    def test_shorter_side(self) -> None:
        out = resize_shorter_side(torch.rand(3, 20, 50), 10)
        assert out.shape == (3, 10, 25)
        same = torch.rand(3, 10, 25)
        assert resize_shorter_side(same, 10) is same

    def test_random_crop_is_a_window(self) -> None:
        rgb = torch.rand(3, 12, 20)
        rng = np.random.default_rng(0)
        positions, flips = set(), 0
        for _ in range(40):
            out = resize_and_crop(rgb, 12, rng, horizontal_flip=True)
            matches = [
                (left, flipped)
                for left in range(9)
                for flipped in (False, True)
                if torch.equal(out.flip(-1) if flipped else out, rgb[:, :, left : left + 12])
            ]
            assert len(matches) == 1
            positions.add(matches[0][0])
            flips += matches[0][1]
        assert len(positions) > 3
        assert 5 < flips < 35

    def test_none_keeps_image(self) -> None:
        rgb = torch.rand(3, 7, 9)
        assert resize_and_crop(rgb, None) is rgb

    def test_bad_shape(self) -> None:
        with pytest.raises(ValueError, match=r"\(4, 5, 5\)"):
            resize_and_crop(torch.rand(4, 5, 5), 3)


class TestGreyFilter:
    def test_max_chroma_matches_skimage(self) -> None:
        array = colour_array(16, 16, 9)
        lab = rgb2lab(array)
        expected = np.sqrt(lab[..., 1] ** 2 + lab[..., 2] ** 2).max()
        rgb = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)
        assert max_chroma(rgb) == pytest.approx(expected, abs=1e-2)

    def test_threshold(self) -> None:
        grey = torch.linspace(0, 1, 64).reshape(1, 8, 8).expand(3, 8, 8)
        assert is_near_grayscale(grey)
        tinted = grey.clone()
        tinted[0, 4, 4] = min(1.0, float(tinted[0, 4, 4]) + 0.1)
        # Reference chroma of the tinted pixel from scikit-image.
        pixel = tinted[:, 4, 4].numpy().reshape(1, 1, 3)
        chroma = float(np.hypot(*rgb2lab(pixel)[0, 0, 1:]))
        assert chroma > 5
        assert not is_near_grayscale(tinted, threshold=5.0)
        assert is_near_grayscale(tinted, threshold=chroma + 0.1)


class TestImageFolderDataset:
    def test_eval_items_match_pil(self, image_folder: Path) -> None:
        dataset = ImageFolderDataset(image_folder, image_size=24)
        paths = sorted(image_folder.rglob("*.*"))
        assert len(dataset) == 4
        for index, path in enumerate(paths):
            item = dataset[index]
            assert item is not None
            assert item["path"] == str(path)
            assert item["rgb"].dtype == torch.float32
            torch.testing.assert_close(item["rgb"], pil_reference(path, 24), atol=2 / 255, rtol=0)
        assert dataset[-1]["path"] == str(paths[-1])
        with pytest.raises(IndexError):
            dataset[4]

    def test_train_deterministic_per_seed_epoch_index(self, image_folder: Path) -> None:
        first = ImageFolderDataset(image_folder, image_size=20, train=True, seed=3)
        second = ImageFolderDataset(image_folder, image_size=20, train=True, seed=3)
        for index in range(len(first)):
            assert torch.equal(first[index]["rgb"], second[index]["rgb"])

        def epoch_tensors(dataset: ImageFolderDataset, epoch: int) -> list[torch.Tensor]:
            dataset.set_epoch(epoch)
            return [dataset[i]["rgb"] for i in range(len(dataset))]

        epoch0 = epoch_tensors(first, 0)
        epochs = [epoch_tensors(first, e) for e in range(1, 6)]
        assert any(
            not torch.equal(a, b) for other in epochs for a, b in zip(epoch0, other, strict=True)
        )
        assert all(torch.equal(a, b) for a, b in zip(epoch0, epoch_tensors(first, 0), strict=True))
        other_seed = ImageFolderDataset(image_folder, image_size=20, train=True, seed=4)
        assert any(
            not torch.equal(a, b) for a, b in zip(epoch0, epoch_tensors(other_seed, 0), strict=True)
        )

    def test_train_crop_is_window_of_resized(self, image_folder: Path) -> None:
        dataset = ImageFolderDataset(image_folder, image_size=20, train=True, horizontal_flip=False)
        path = dataset.paths[0]  # 40 x 60 -> 20 x 30
        rgb = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(
            2, 0, 1
        )
        resized = resize_shorter_side(rgb, 20)
        for epoch in range(4):
            dataset.set_epoch(epoch)
            out = dataset[0]["rgb"]
            assert any(torch.equal(out, resized[:, :, left : left + 20]) for left in range(11))

    def test_image_size_none(self, image_folder: Path) -> None:
        dataset = ImageFolderDataset(image_folder, image_size=None)
        assert dataset[0]["rgb"].shape == (3, 40, 60)

    def test_skips_grey_and_broken(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = tmp_path / "photos"
        save(root / "good1.png", colour_array(30, 30, 0))
        save(root / "good2.jpg", colour_array(30, 40, 1))
        grey = np.repeat(colour_array(30, 30, 2)[..., :1], 3, axis=-1)
        save(root / "grey.png", grey)
        (root / "text.jpg").write_text("this is not an image")
        truncated = root / "truncated.jpg"
        save(truncated, colour_array(64, 64, 3))
        truncated.write_bytes(truncated.read_bytes()[:300])

        dataset = ImageFolderDataset(root, image_size=16)
        with caplog.at_level(logging.WARNING, logger="chromalab.data.folders"):
            items = {Path(p).name: dataset[i] for i, p in enumerate(dataset.paths)}
        assert {name for name, item in items.items() if item is not None} == {
            "good1.png",
            "good2.jpg",
        }
        assert dataset.skipped == {"grayscale": 1, "unreadable": 2}
        for name in ("grey.png", "text.jpg", "truncated.jpg"):
            assert any(name in record.getMessage() for record in caplog.records)

        keep_grey = ImageFolderDataset(root, image_size=16, filter_grayscale=False)
        assert keep_grey[keep_grey.paths.index(root / "grey.png")] is not None

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            ImageFolderDataset(tmp_path / "missing")
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match="no image files"):
            ImageFolderDataset(tmp_path / "empty")
        save(tmp_path / "one" / "x.png", colour_array(8, 8, 0))
        with pytest.raises(ValueError, match="image_size"):
            ImageFolderDataset(tmp_path / "one", image_size=0)
        with pytest.raises(ValueError, match="seed"):
            ImageFolderDataset(tmp_path / "one", seed=-1)
        with pytest.raises(ValueError, match="epoch"):
            ImageFolderDataset(tmp_path / "one").set_epoch(-2)


class TestCaptionedImageDataset:
    @pytest.fixture
    def records(self, image_folder: Path) -> list[CaptionRecord]:
        paths = sorted(image_folder.rglob("*.*"))
        return [
            CaptionRecord(paths[0], ("first", "second", "third")),
            CaptionRecord(paths[1], ("only",)),
            CaptionRecord(image_folder / "missing.jpg", ("lost",)),
        ]

    def test_eval_first_caption(self, records: list[CaptionRecord]) -> None:
        dataset = CaptionedImageDataset(records, image_size=16)
        item = dataset[0]
        assert item["caption"] == "first"
        assert item["path"] == str(records[0].image)
        torch.testing.assert_close(
            item["rgb"], pil_reference(records[0].image, 16), atol=2 / 255, rtol=0
        )
        assert dataset[1]["caption"] == "only"
        assert dataset[2] is None
        assert dataset.skipped == {"unreadable": 1}

    def test_train_caption_sampling(self, records: list[CaptionRecord]) -> None:
        dataset = CaptionedImageDataset(records, image_size=16, train=True, seed=1)
        again = CaptionedImageDataset(records, image_size=16, train=True, seed=1)
        seen = []
        for epoch in range(30):
            dataset.set_epoch(epoch)
            again.set_epoch(epoch)
            caption = dataset[0]["caption"]
            assert caption == again[0]["caption"]
            seen.append(caption)
        assert set(seen) == {"first", "second", "third"}

    def test_validation(self, records: list[CaptionRecord]) -> None:
        with pytest.raises(ValueError, match="at least one"):
            CaptionedImageDataset([])
        with pytest.raises(TypeError, match=r"records\[1\]"):
            CaptionedImageDataset([records[0], ("x.jpg", ("c",))])  # type: ignore[list-item]
