"""Tests for chromalab.data.photos: the real photographs shipped inside installed packages."""

from __future__ import annotations

import importlib.util
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from chromalab.data.photos import (
    SAMPLE_PHOTO_NAMES,
    SAMPLE_PHOTO_SOURCES,
    available_sample_photos,
    sample_photos,
)

SKIMAGE_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right"]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _network_refused(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or DNS lookup during the test fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _network_refused)
    monkeypatch.setattr(socket.socket, "connect_ex", _network_refused)
    monkeypatch.setattr(socket, "getaddrinfo", _network_refused)


@pytest.fixture(scope="module")
def photos():
    return dict(sample_photos())


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / np.float32(255)).permute(2, 0, 1)


def test_names_and_sources():
    expected = [*SKIMAGE_NAMES, "grace_hopper", "china", "flower"]
    assert list(SAMPLE_PHOTO_NAMES) == expected
    assert set(SAMPLE_PHOTO_SOURCES) == set(expected)
    assert {SAMPLE_PHOTO_SOURCES[name] for name in SKIMAGE_NAMES} == {"scikit-image"}
    assert SAMPLE_PHOTO_SOURCES["china"] == "scikit-learn"
    assert SAMPLE_PHOTO_SOURCES["grace_hopper"] == "matplotlib"


def test_all_available_names_load_without_network(no_network):
    loaded = sample_photos()
    names = [name for name, _ in loaded]
    assert names == list(available_sample_photos())
    assert set(SKIMAGE_NAMES) <= set(names)  # scikit-image is a hard dependency
    assert ("grace_hopper" in names) == HAS_MATPLOTLIB
    assert ("china" in names and "flower" in names) == HAS_SKLEARN


def test_shapes_dtypes_ranges_and_colour(photos):
    for name, image in photos.items():
        assert image.dtype == torch.float32, name
        assert image.dim() == 3 and image.shape[0] == 3 and min(image.shape[1:]) >= 256, name
        assert image.min() >= 0 and image.max() <= 1, name
        assert image.max() - image.min() > 0.5, name  # a real photo, not a blank
        # colour photographs: the channels differ noticeably
        assert (image[0] - image[2]).abs().mean() > 0.01, name


def test_skimage_photos_match_skimage(photos, no_network):
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    references = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
    }
    for name, reference in references.items():
        assert torch.equal(photos[name], _as_tensor(reference)), name


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
def test_sklearn_photos_match_sklearn(photos):
    from sklearn.datasets import load_sample_image

    for name in ("china", "flower"):
        assert torch.equal(photos[name], _as_tensor(load_sample_image(f"{name}.jpg"))), name


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_grace_hopper_matches_pil(photos):
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        reference = np.asarray(image.convert("RGB"))
    assert torch.equal(photos["grace_hopper"], _as_tensor(reference))


def test_subset_keeps_order():
    loaded = sample_photos(["coffee", "astronaut", "coffee"])
    assert [name for name, _ in loaded] == ["coffee", "astronaut", "coffee"]
    assert torch.equal(loaded[0][1], loaded[2][1])
    assert sample_photos([]) == []


def test_size_resizes_shorter_side(photos):
    for name, image in sample_photos(size=48):
        height, width = image.shape[1:]
        original_height, original_width = photos[name].shape[1:]
        assert min(height, width) == 48, name
        long_side = max(original_height, original_width) * 48 / min(original_height, original_width)
        assert abs(max(height, width) - long_side) <= 0.5, name
        assert (height < width) == (original_height < original_width), name
        assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1


def test_size_is_antialiased_like_pil(photos):
    ((_, small),) = sample_photos(["chelsea"], size=40)
    original = (photos["chelsea"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    reference = Image.fromarray(original).resize(
        (small.shape[2], small.shape[1]), Image.Resampling.BILINEAR
    )
    difference = np.abs(small.permute(1, 2, 0).numpy() * 255 - np.asarray(reference))
    assert difference.mean() < 0.5 and difference.max() < 1.5


def test_size_equal_to_shorter_side_is_identity(photos):
    ((_, same),) = sample_photos(["astronaut"], size=512)
    assert torch.equal(same, photos["astronaut"])
    ((_, larger),) = sample_photos(["chelsea"], size=600)
    assert larger.shape == (3, 600, 902)


def test_unknown_name():
    with pytest.raises(ValueError, match="no_such_photo") as info:
        sample_photos(["astronaut", "no_such_photo"])
    assert all(name in str(info.value) for name in SAMPLE_PHOTO_NAMES)


def test_bad_arguments():
    with pytest.raises(TypeError, match="sequence"):
        sample_photos("astronaut")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            sample_photos(["astronaut"], size=bad)


def test_missing_optional_packages_drop_their_photos(monkeypatch, caplog):
    # A None entry in sys.modules makes importing that name raise ImportError.
    for module in ("sklearn", "sklearn.datasets", "matplotlib", "matplotlib.cbook"):
        monkeypatch.setitem(sys.modules, module, None)
    loaded = sample_photos(["china", "astronaut", "grace_hopper", "flower"])
    assert [name for name, _ in loaded] == ["astronaut"]
    assert "china" in caplog.text and "scikit-learn" in caplog.text
    assert "grace_hopper" in caplog.text and "matplotlib" in caplog.text
    assert available_sample_photos() == tuple(SKIMAGE_NAMES)
