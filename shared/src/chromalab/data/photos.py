"""Real colour photographs that ship inside installed Python packages.

These give tests, demos and benchmarks natural images with no download: every photo is
read from a file inside an installed distribution, never fetched.

==================  ==============================================================
name                source
==================  ==============================================================
astronaut           scikit-image ``skimage/data/astronaut.png`` (512 x 512)
chelsea             scikit-image ``skimage/data/chelsea.png`` (300 x 451, a cat)
coffee              scikit-image ``skimage/data/coffee.png`` (400 x 600)
rocket              scikit-image ``skimage/data/rocket.jpg`` (427 x 640)
motorcycle_left     scikit-image ``skimage/data/motorcycle_left.png`` (500 x 741)
motorcycle_right    scikit-image ``skimage/data/motorcycle_right.png`` (500 x 741)
grace_hopper        matplotlib ``mpl-data/sample_data/grace_hopper.jpg`` (600 x 512)
china               scikit-learn ``load_sample_image("china.jpg")`` (427 x 640)
flower              scikit-learn ``load_sample_image("flower.jpg")`` (427 x 640)
==================  ==============================================================

(sizes are height x width.) The scikit-image files are read straight from the installed
``skimage.data`` package directory rather than through ``skimage.data.<name>()``: those
functions fall back to downloading with ``pooch`` when a file is absent, and many other
``skimage.data`` images exist only as downloads. scikit-image is a dependency of
``chromalab-shared``; matplotlib and scikit-learn are optional (extra ``photos``), and a
missing one only drops its photos with a logged warning.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from chromalab.io import load_image

__all__ = ["SAMPLE_PHOTO_NAMES", "SAMPLE_PHOTO_SOURCES", "available_sample_photos", "sample_photos"]

logger = logging.getLogger(__name__)


class _PhotoUnavailable(Exception):
    """The package or file that carries a photo is not installed."""


def _skimage_photo(filename: str) -> Callable[[], Tensor]:
    def load() -> Tensor:
        try:
            directory = importlib.resources.files("skimage.data")
        except ModuleNotFoundError as error:
            raise _PhotoUnavailable("scikit-image is not installed") from error
        path = Path(str(directory.joinpath(filename)))
        if not path.is_file():
            raise _PhotoUnavailable(
                f"the installed scikit-image does not ship {filename} (it would need a download)"
            )
        return load_image(path)

    return load


def _matplotlib_photo(filename: str) -> Callable[[], Tensor]:
    def load() -> Tensor:
        try:
            from matplotlib import cbook
        except ImportError as error:
            raise _PhotoUnavailable("matplotlib is not installed") from error
        try:
            path = cbook.get_sample_data(filename, asfileobj=False)
        except (OSError, ValueError) as error:
            raise _PhotoUnavailable(f"the installed matplotlib does not ship {filename}") from error
        return load_image(Path(path))

    return load


def _sklearn_photo(filename: str) -> Callable[[], Tensor]:
    def load() -> Tensor:
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as error:
            raise _PhotoUnavailable("scikit-learn is not installed") from error
        try:
            array = load_sample_image(filename)
        except (AttributeError, OSError) as error:
            raise _PhotoUnavailable(
                f"the installed scikit-learn does not ship {filename}"
            ) from error
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise _PhotoUnavailable(
                f"scikit-learn returned {filename} as {array.dtype} {array.shape}, "
                "not uint8 (H, W, 3)"
            )
        image = torch.from_numpy(array.astype(np.float32) / np.float32(255))
        return image.permute(2, 0, 1).contiguous()

    return load


class _Photo(NamedTuple):
    source: str  # distribution name, for messages and SAMPLE_PHOTO_SOURCES
    module: str  # import name, to tell whether the distribution is installed
    load: Callable[[], Tensor]


_PHOTOS: dict[str, _Photo] = {
    "astronaut": _Photo("scikit-image", "skimage", _skimage_photo("astronaut.png")),
    "chelsea": _Photo("scikit-image", "skimage", _skimage_photo("chelsea.png")),
    "coffee": _Photo("scikit-image", "skimage", _skimage_photo("coffee.png")),
    "rocket": _Photo("scikit-image", "skimage", _skimage_photo("rocket.jpg")),
    "motorcycle_left": _Photo("scikit-image", "skimage", _skimage_photo("motorcycle_left.png")),
    "motorcycle_right": _Photo("scikit-image", "skimage", _skimage_photo("motorcycle_right.png")),
    "grace_hopper": _Photo("matplotlib", "matplotlib", _matplotlib_photo("grace_hopper.jpg")),
    "china": _Photo("scikit-learn", "sklearn", _sklearn_photo("china.jpg")),
    "flower": _Photo("scikit-learn", "sklearn", _sklearn_photo("flower.jpg")),
}

#: Names accepted by :func:`sample_photos`, in its default order.
SAMPLE_PHOTO_NAMES: tuple[str, ...] = tuple(_PHOTOS)

#: The distribution that carries each photo.
SAMPLE_PHOTO_SOURCES: dict[str, str] = {name: photo.source for name, photo in _PHOTOS.items()}


def _resize_shorter_side(image: Tensor, size: int) -> Tensor:
    """Resize ``(3, H, W)`` so that ``min(H, W) == size``, keeping the aspect ratio.

    Bilinear with antialiasing (a triangle filter widened when shrinking, as PIL does); the
    weights are non-negative and sum to one, so values stay in ``[0, 1]`` up to rounding,
    which the final clamp removes.
    """
    height, width = image.shape[-2:]
    if min(height, width) == size:
        return image
    if height <= width:
        new_size = (size, max(1, round(width * size / height)))
    else:
        new_size = (max(1, round(height * size / width)), size)
    resized = F.interpolate(
        image[None], size=new_size, mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].clamp_(0.0, 1.0)


def available_sample_photos() -> tuple[str, ...]:
    """Names of the sample photos whose package is installed (nothing imported or decoded)."""
    return tuple(name for name, photo in _PHOTOS.items() if importlib.util.find_spec(photo.module))


def sample_photos(
    names: Sequence[str] | None = None, size: int | None = None
) -> list[tuple[str, Tensor]]:
    """Load real colour photographs shipped inside installed packages, without any download.

    Args:
        names: photos to load, from :data:`SAMPLE_PHOTO_NAMES`; ``None`` loads all of them.
            Order and repetitions are kept.
        size: if given, each photo is resized (bilinear, antialiased) so that its shorter
            side is ``size`` pixels, keeping the aspect ratio.

    Returns:
        ``(name, image)`` pairs, ``image`` a float32 sRGB tensor ``(3, H, W)`` in ``[0, 1]``.
        A photo whose package (matplotlib, scikit-learn) or file is not installed is left
        out, with a warning logged on ``chromalab.data.photos``.

    Raises:
        ValueError: an unknown name (the message lists the available ones), or ``size``
            not a positive integer.
        TypeError: ``names`` is a single string instead of a sequence of names.
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of names, not the string {names!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive integer or None, got {size!r}")
    requested = list(SAMPLE_PHOTO_NAMES if names is None else names)
    unknown = [name for name in requested if name not in _PHOTOS]
    if unknown:
        raise ValueError(
            f"unknown sample photo name(s) {unknown}; available: {list(SAMPLE_PHOTO_NAMES)}"
        )
    photos: list[tuple[str, Tensor]] = []
    for name in requested:
        try:
            image = _PHOTOS[name].load()
        except _PhotoUnavailable as reason:
            logger.warning("sample photo %r is not available: %s", name, reason)
            continue
        photos.append((name, image if size is None else _resize_shorter_side(image, size)))
    return photos
