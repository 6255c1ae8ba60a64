"""Robust image I/O and the low-to-full resolution recombination of L and ab.

Loading (:func:`load_image`) turns any image file PIL can read into a float32 sRGB tensor
``(3, H, W)`` in ``[0, 1]``, or raises :class:`ImageLoadError` naming the file and a human
reason. It never pads a truncated file, never decodes an image whose header declares more
pixels than allowed, and applies the EXIF orientation so the tensor shows the photo the way a
viewer does.

Writing (:func:`save_image`) is the inverse for ``(3, H, W)`` or ``(1, H, W)`` tensors, and
:func:`recombine` is how every chromalab model turns a prediction into a picture: ab is
predicted at low resolution, upsampled, and joined with the untouched full-resolution L
(Zhang et al., ECCV 2016, Sec. 2 and Fig. 2; the language-conditioned papers display results
the same way).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from chromalab.color import lab_to_rgb

__all__ = [
    "decode_image",
    "DEFAULT_MAX_PIXELS",
    "from_pil",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "iter_image_files",
    "load_image",
    "load_images",
    "recombine",
    "save_image",
    "to_pil",
]

logger = logging.getLogger(__name__)

#: Default pixel budget of :func:`load_image` (an 8192 x 8192 image, 768 MiB as float32 RGB).
DEFAULT_MAX_PIXELS: int = 8192 * 8192

#: Lower-case file suffixes that :func:`iter_image_files` treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".bmp",
        ".gif",
        ".jfif",
        ".jpe",
        ".jpeg",
        ".jpg",
        ".pbm",
        ".pgm",
        ".png",
        ".pnm",
        ".ppm",
        ".tif",
        ".tiff",
        ".webp",
    }
)

_SAVE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}

_INTERPOLATION_MODES = frozenset({"nearest", "nearest-exact", "bilinear", "bicubic", "area"})


class ImageLoadError(Exception):
    """An image file could not be loaded.

    Attributes:
        path: the offending path, as given (converted to ``str``).
        reason: a human-readable reason, e.g. ``"empty file (0 bytes)"``.

    ``str(error)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[str, str]]:
        # Keep the two-argument constructor picklable (DataLoader workers, multiprocessing).
        return (type(self), (self.path, self.reason))


class _EndOfFileWatcher(io.BufferedReader):
    """A file reader that records a read attempted past the end of the file.

    Armed only while PIL decodes pixel data: a complete image never asks for bytes beyond
    its end, so such a read means the file is truncated. This makes truncation an error
    whatever the process-wide ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says (another library
    may have set it), without touching that global.
    """

    armed: bool = False
    read_past_end: bool = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.armed and size != 0 and not data:
            self.read_past_end = True
        return data


def _integer_scale(file_format: str | None, rawmode: str | None) -> tuple[float, bool]:
    """Full-scale value and signedness of a mode ``I`` image, from its file's raw mode."""
    if file_format == "PPM":
        # PIL rescales PGM/PPM samples with any maxval > 255 to 0..65535.
        return 65535.0, False
    bits, signed = 32, True
    match = re.fullmatch(r"I;(8|16|32)(\w*)", rawmode or "")
    if match is not None:
        bits = int(match.group(1))
        signed = "S" in match.group(2)
    return float(2 ** (bits - 1) - 1 if signed else 2**bits - 1), signed


def _over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite ``color (H, W, C)`` in [0, 1] over white with ``alpha (H, W, 1)`` in [0, 1]."""
    return color * alpha + (1.0 - alpha)


def _to_float_rgb(
    image: Image.Image, file_format: str | None, rawmode: str | None, path: str
) -> np.ndarray:
    """Convert a decoded PIL image to a float32 ``(H, W, 3)`` array in [0, 1]."""
    mode = image.mode
    if mode == "1":
        grey = np.asarray(image, dtype=np.float32)[..., None]
    elif mode == "L":
        grey = np.asarray(image, dtype=np.float32)[..., None] / np.float32(255)
    elif mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.float32)[..., None] / np.float32(65535)
    elif mode == "I":
        full_scale, signed = _integer_scale(file_format, rawmode)
        values = np.asarray(image).astype(np.float64)
        if signed and values.size and values.min() < 0:
            raise ImageLoadError(
                path,
                f"signed integer greyscale with negative values (min {int(values.min())}); "
                "cannot map it to [0, 1] unambiguously",
            )
        grey = (values / full_scale).astype(np.float32)[..., None]
    elif mode == "F":
        grey = np.asarray(image, dtype=np.float32)[..., None]
        if grey.size and not (np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= 1):
            raise ImageLoadError(
                path,
                "floating-point image with values outside [0, 1] or non-finite values "
                f"(min {float(np.nanmin(grey)):g}, max {float(np.nanmax(grey)):g})",
            )
    elif mode in {"LA", "La"}:
        values = np.asarray(image.convert("LA"), dtype=np.float32) / np.float32(255)
        grey = _over_white(values[..., :1], values[..., 1:])
    elif mode in {"RGBA", "RGBa", "PA"} or (mode == "P" and "transparency" in image.info):
        values = np.asarray(image.convert("RGBA"), dtype=np.float32) / np.float32(255)
        return _over_white(values[..., :3], values[..., 3:])
    elif mode == "RGB":
        return np.asarray(image, dtype=np.float32) / np.float32(255)
    elif mode in {"P", "CMYK", "YCbCr", "RGBX", "HSV", "LAB"}:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
    else:
        raise ImageLoadError(path, f"unsupported image mode {mode!r}")
    return np.repeat(grey, 3, axis=-1)


def from_pil(image: Image.Image) -> Tensor:
    """An in-memory PIL image as :func:`load_image` reads files: float32 sRGB ``(3, H, W)`` in
    ``[0, 1]``, greyscale replicated, transparency composited over white, EXIF orientation
    applied."""
    upright = ImageOps.exif_transpose(image)
    rgb = _to_float_rgb(upright, image.format, None, "<PIL image>")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """A float image ``(3, H, W)`` (RGB) or ``(1, H, W)`` (greyscale) as an 8-bit PIL image:
    values clamped to ``[0, 1]`` and rounded (``round(255 * x)``), as :func:`save_image`
    writes them; the inverse of :func:`from_pil`."""
    values = image.detach().to("cpu", torch.float32)
    array = (values.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Load an image file as a float32 sRGB tensor.

    Args:
        path: an image file PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM, ...).
            Multi-frame files (GIF, TIFF) give their first frame.
        max_pixels: largest accepted ``width * height``. It is checked against the file
            header before any pixel is decoded, so a decompression bomb (a small file that
            declares a huge size) is refused without allocating. PIL's own
            ``Image.MAX_IMAGE_PIXELS`` check still applies on top and is reported the same way.

    Returns:
        Tensor ``(3, H, W)``, float32, in ``[0, 1]``, upright according to the EXIF
        orientation tag. Conversions by PIL mode:

        * ``RGB``: ``value / 255``. 16-bit-per-channel RGB PNGs are exposed by PIL only as
          8-bit ``RGB`` (their most significant bytes), so they load at 8-bit precision.
        * ``L``, ``1``, ``I;16*``, ``I``, ``F`` (greyscale): replicated to 3 channels.
          ``I;16*`` is divided by 65535. ``I`` is divided by the full scale of the file's
          integer type (16-bit data such as a 16-bit PNG or PGM: 65535 -> 1.0; 32-bit
          unsigned: ``2**32 - 1``; 32-bit signed: ``2**31 - 1``); negative signed values
          are refused.
          ``F`` must already lie in ``[0, 1]``.
        * ``RGBA``, ``LA``, ``PA`` and ``P`` with a transparent colour: composited over
          **white**, ``out = color * alpha + 1 * (1 - alpha)`` with alpha in ``[0, 1]``, so
          transparent areas read as a white page rather than as black.
        * ``P`` (palette), ``CMYK``, ``YCbCr``: PIL's own conversion to ``RGB``.

    Raises:
        ImageLoadError: missing path, a directory, an empty file, a file that is not an
            image, truncated or corrupt image data (also when another library has set
            ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``; that global is never changed
            here), an image larger than ``max_pixels`` or than PIL's decompression-bomb
            limit, or an unsupported mode.
        ValueError: ``max_pixels`` is not a positive integer.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    file = Path(path)
    name = os.fspath(path)
    if not file.exists():
        raise ImageLoadError(name, "no such file")
    if file.is_dir():
        raise ImageLoadError(name, "is a directory, not an image file")
    if not file.is_file():
        raise ImageLoadError(name, "not a regular file")
    try:
        if file.stat().st_size == 0:
            raise ImageLoadError(name, "empty file (0 bytes)")
        stream = _EndOfFileWatcher(io.FileIO(file, "rb"))
    except PermissionError as error:
        raise ImageLoadError(name, "permission denied") from error
    except OSError as error:
        raise ImageLoadError(name, f"cannot open the file ({error.strerror or error})") from error

    with stream:
        return _decode_stream(stream, name, max_pixels)


def decode_image(
    data: bytes, name: str = "<bytes>", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Tensor:
    """Decode an encoded image held in memory, with the rules of :func:`load_image`.

    Used for images that never were files of their own (WebDataset shard members, HTTP
    bodies). ``name`` identifies the image in errors (e.g. ``"shard-0001.tar:0005.jpg"``).

    Returns:
        Tensor ``(3, H, W)``, float32, in ``[0, 1]``.

    Raises:
        ImageLoadError: as :func:`load_image`, for empty, unidentifiable, oversized,
            truncated or corrupt data.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if not data:
        raise ImageLoadError(name, "empty image data (0 bytes)")
    with _EndOfFileWatcher(io.BytesIO(data)) as stream:
        return _decode_stream(stream, name, max_pixels)


def _decode_stream(stream: _EndOfFileWatcher, name: str, max_pixels: int) -> Tensor:
    """Decode one image from ``stream``; see :func:`load_image` for the rules."""
    try:
        # PIL warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; make
        # the warning an error for this call only. (Before Python 3.14 the warnings
        # filters are process-wide, so a thread loading concurrently may briefly see it.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            name, "not a recognised image file (PIL cannot identify its format)"
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(
            name, f"refused by PIL's decompression-bomb check ({error})"
        ) from error
    except Exception as error:
        raise ImageLoadError(
            name, f"cannot read the image header ({type(error).__name__}: {error})"
        ) from error

    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            name,
            f"image declares {width}x{height} = {width * height} pixels, more than "
            f"max_pixels={max_pixels} (possible decompression bomb); not decoded",
        )
    rawmode = image.tile[0].args[0] if image.tile and image.tile[0].args else None
    rawmode = rawmode if isinstance(rawmode, str) else None
    file_format = image.format
    stream.armed = True
    try:
        image.load()
    except Exception as error:
        raise ImageLoadError(
            name, f"truncated or corrupt image data ({type(error).__name__}: {error})"
        ) from error
    if stream.read_past_end:
        raise ImageLoadError(
            name, "truncated image data: the file ends before the image is complete"
        )
    stream.armed = False
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:
        raise ImageLoadError(
            name, f"cannot apply the EXIF orientation ({type(error).__name__}: {error})"
        ) from error
    rgb = _to_float_rgb(image, file_format, rawmode, name)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()


def load_images(
    paths: Iterable[str | os.PathLike[str]], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[tuple[Path, Tensor]], list[ImageLoadError]]:
    """Load many images, reporting and skipping the bad ones: one bad file never stops a batch.

    Args:
        paths: image files, e.g. from :func:`iter_image_files`.
        max_pixels: as in :func:`load_image`.

    Returns:
        ``(loaded, errors)``: ``loaded`` holds ``(path, image)`` pairs in input order with
        images as returned by :func:`load_image`; ``errors`` holds one
        :class:`ImageLoadError` per file that failed, each also logged as a warning.
    """
    loaded: list[tuple[Path, Tensor]] = []
    errors: list[ImageLoadError] = []
    for path in paths:
        try:
            loaded.append((Path(path), load_image(path, max_pixels=max_pixels)))
        except ImageLoadError as error:
            logger.warning("skipping %s", error)
            errors.append(error)
    return loaded, errors


def save_image(image: Tensor, path: str | os.PathLike[str], *, quality: int = 95) -> Path:
    """Write a ``(3, H, W)`` or ``(1, H, W)`` float image to disk.

    Values are clamped to ``[0, 1]`` and rounded to 8 bits (``round(255 * x)``). The format
    follows the suffix: ``.png``, ``.jpg``/``.jpeg`` (with ``quality``), ``.bmp``,
    ``.tif``/``.tiff``, ``.webp``. Missing parent directories are created.

    Args:
        image: tensor ``(3, H, W)`` (RGB) or ``(1, H, W)`` (greyscale), floating point.
        path: destination file.
        quality: JPEG/WebP quality in ``[1, 100]``.

    Returns:
        The written path.

    Raises:
        TypeError: ``image`` is not a floating-point tensor.
        ValueError: wrong shape, NaN or infinite values, or an unsupported suffix.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating-point tensor in [0, 1], got {image.dtype}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    destination = Path(path)
    suffix = destination.suffix.lower()
    if suffix not in _SAVE_FORMATS:
        raise ValueError(
            f"cannot choose an image format for {os.fspath(path)!r}: suffix {suffix!r} is not "
            f"one of {sorted(_SAVE_FORMATS)}"
        )
    if not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"image has {bad} NaN or infinite values; refusing to write {path}")
    pil_image = to_pil(image)
    destination.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": quality} if _SAVE_FORMATS[suffix] in {"JPEG", "WEBP"} else {}
    pil_image.save(destination, format=_SAVE_FORMATS[suffix], **options)
    return destination


def recombine(l_fullres: Tensor, ab_lowres: Tensor, mode: str = "bilinear") -> Tensor:
    """Join a full-resolution L with a (lower-resolution) ab prediction into RGB.

    ab is resized to the size of L with ``torch.nn.functional.interpolate``
    (``align_corners=False`` for the linear and cubic modes), concatenated with L and
    converted with :func:`chromalab.color.lab_to_rgb` (clipped to ``[0, 1]``). This is the
    display step of all four papers: the network predicts ab at a reduced resolution and
    the original lightness is kept (Zhang et al., ECCV 2016, Sec. 2). When ab already has
    the size of L, it is used as is.

    Args:
        l_fullres: L in ``[0, 100]``, ``(B, 1, H, W)`` or unbatched ``(1, H, W)``.
        ab_lowres: ab in about ``[-110, 110]``, ``(B, 2, h, w)`` or unbatched ``(2, h, w)``.
        mode: interpolation mode: ``"bilinear"`` (default), ``"bicubic"``, ``"nearest"``,
            ``"nearest-exact"`` or ``"area"``.

    Returns:
        RGB ``(B, 3, H, W)`` (or ``(3, H, W)`` for unbatched input) in ``[0, 1]``.

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: bad shapes, batch sizes that differ, or an unknown mode.
    """
    for name, tensor in (("l_fullres", l_fullres), ("ab_lowres", ab_lowres)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if mode not in _INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {sorted(_INTERPOLATION_MODES)}, got {mode!r}")
    shapes = f"l_fullres {tuple(l_fullres.shape)} and ab_lowres {tuple(ab_lowres.shape)}"
    if l_fullres.dim() != ab_lowres.dim() or l_fullres.dim() not in (3, 4):
        raise ValueError(
            f"expected l_fullres (B, 1, H, W) with ab_lowres (B, 2, h, w), or unbatched "
            f"(1, H, W) with (2, h, w); got {shapes}"
        )
    unbatched = l_fullres.dim() == 3
    light = l_fullres.unsqueeze(0) if unbatched else l_fullres
    ab = ab_lowres.unsqueeze(0) if unbatched else ab_lowres
    if light.shape[1] != 1 or ab.shape[1] != 2:
        raise ValueError(f"L must have 1 channel and ab 2 channels; got {shapes}")
    if light.shape[0] != ab.shape[0]:
        raise ValueError(f"batch sizes differ: {shapes}")
    size = (light.shape[-2], light.shape[-1])
    if tuple(ab.shape[-2:]) != size:
        align = False if mode in {"bilinear", "bicubic"} else None
        ab = F.interpolate(ab, size=size, mode=mode, align_corners=align)
    rgb = lab_to_rgb(torch.cat([light, ab.to(light.dtype)], dim=1), clip=True)
    return rgb[0] if unbatched else rgb


def iter_image_files(root: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """List the image files under ``root``, sorted.

    Args:
        root: a directory, or a single file (returned as ``[root]`` whatever its suffix, so
            that a bad file is reported by :func:`load_image` rather than silently ignored).
        recursive: descend into sub-directories.

    Returns:
        Sorted paths of regular files whose lower-cased suffix is in
        :data:`IMAGE_EXTENSIONS` (so ``.JPG`` counts).

    Raises:
        FileNotFoundError: ``root`` does not exist (the message names it).
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", os.fspath(root))
    if not base.is_dir():
        return [base]
    candidates = base.rglob("*") if recursive else base.iterdir()
    return sorted(
        path for path in candidates if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
