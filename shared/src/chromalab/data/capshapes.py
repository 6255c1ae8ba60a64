"""CapShapes: procedural captioned scenes that make language conditioning measurable.

Each scene holds 1 to ``max_objects`` shapes (circle, square, triangle, cross, heart, star,
leaf, drop) on a striped or speckled background. Every object gets a colour word from
:data:`chromalab.text.CHROMATIC_COLORS` and an ab drawn near that word's centre, while its
lightness is drawn independently of the colour, with shading and texture: the grey image alone
cannot tell the colour of an object, only the caption can. Captions come from
:func:`chromalab.text.describe_scene` at a level (complete, partial or scarce, as in L-CAD,
arXiv:2305.15217) drawn with ``level_probs``. Some shapes
have a canonical colour (:data:`CANONICAL_COLORS`, e.g. hearts are red) used with probability
``canonical_prob``, so that a model can also learn a prior for objects the caption leaves out.

Colour pipeline. Scenes are composed in CIE Lab and converted with
:func:`chromalab.color.lab_to_rgb`. A colour of lightness ``L`` and hue ``h`` can only be so
chromatic inside the sRGB gamut, so each pixel's chroma is reduced to at most the gamut's
largest chroma at its ``(L, h)`` (a table computed once by bisection), keeping the hue; clipping
in RGB, which would shift the hue, is thus avoided. Since the chromatic centres lie on a ring
of nearly equal chroma, the nearest centre of a colour depends only on its hue, so this
reduction keeps every object's ab closest to its own centre (tested over the whole lightness
range). Object lightness lies in ``[35, 80]``, where the gamut still allows a chroma of at least
22 at every hue.

Rasterization is vectorized torch on a coordinate grid (implicit inside tests per shape, no
anti-aliasing: a mask is exactly the set of pixels painted with its object). Objects may
overlap; later ones are drawn on top and the masks are the visible parts.
"""

from __future__ import annotations

import io
import json
import math
import operator
import sys
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from chromalab.color import lab_to_rgb
from chromalab.text import (
    CHROMATIC_COLORS,
    COLOR_LEXICON,
    SceneBackground,
    SceneObject,
    color_index,
    describe_scene,
    sample_level,
)

__all__ = [
    "BACKGROUND_TEXTURES",
    "CANONICAL_COLORS",
    "ONE_COLOR_PER_SHAPE",
    "OBJECT_L_RANGE",
    "SHAPES",
    "CapShapes",
    "export_capshapes",
    "gamut_max_chroma",
]

#: Shape nouns; a shape id is its index here.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "heart", "star", "leaf", "drop")
#: Canonical colour of the shapes that have one (shape name -> colour name).
CANONICAL_COLORS: dict[str, str] = {
    "heart": "red",
    "star": "yellow",
    "leaf": "green",
    "drop": "blue",
}
#: A canonical colour for every shape, each its own (``canonical_colors`` of :class:`CapShapes`).
#: With ``canonical_prob=1`` a scene's colours follow from its shapes alone, as object colours
#: largely do in ImageNet: a colorizer pretrained on such scenes must learn to tell the shapes
#: apart, which scenes with the default table never ask of the four shapes it leaves out.
ONE_COLOR_PER_SHAPE: dict[str, str] = {
    **CANONICAL_COLORS,
    "circle": "orange",
    "square": "purple",
    "triangle": "cyan",
    "cross": "pink",
}
#: Texture adjectives of the background, as used in captions.
BACKGROUND_TEXTURES: tuple[str, ...] = ("striped", "speckled")
#: Lightness range of object pixels (after shading), the same for every colour.
OBJECT_L_RANGE: tuple[float, float] = (35.0, 80.0)

_OBJECT_BASE_L = (42.0, 72.0)  # per-object mean lightness, uniform
_OBJECT_SHADING = 9.0  # largest lightness change across an object's radius
_OBJECT_TEXTURE = 3.0  # largest amplitude of the object's smooth lightness noise
_BACKGROUND_L = (30.0, 80.0)
_HUE_JITTER = math.radians(5.0)
_CHROMA_JITTER = (0.9, 1.15)
_SCALE_RANGE = (0.22, 0.4)  # object radius, in units of the half image width
_MAX_SAME_SHAPE = 2
_GAMUT_L_STEP = 0.5
_GAMUT_SAFETY = 0.98

_CHROMATIC_IDS = torch.tensor(CHROMATIC_COLORS)
_BASE_ROTATION = {"leaf": 0.6}


def _pair_ids(pairs: dict[str, list[str]]) -> dict[int, tuple[int, ...]]:
    """Shape id -> lexicon ids of a ``held_out_pairs`` table, checked."""
    out = {}
    names = [COLOR_LEXICON[c].name for c in CHROMATIC_COLORS]
    for shape, colors in pairs.items():
        if shape not in SHAPES:
            raise ValueError(f"held_out_pairs: unknown shape {shape!r}; shapes are {SHAPES}")
        if isinstance(colors, str) or not colors:
            raise ValueError(f"held_out_pairs: {shape!r} needs a non-empty list of colours")
        ids = []
        for color in colors:
            try:
                cid = color_index(color)
            except (KeyError, ValueError):
                cid = -1
            if cid not in CHROMATIC_COLORS:
                raise ValueError(f"held_out_pairs: {shape!r} -> {color!r} is not one of {names}")
            ids.append(cid)
        if len(set(ids)) >= len(CHROMATIC_COLORS):
            raise ValueError(f"held_out_pairs: {shape!r} would have no colour left for training")
        out[SHAPES.index(shape)] = tuple(dict.fromkeys(ids))
    return out


def _canonical_ids(colors: dict[str, str]) -> dict[int, int]:
    """Shape id -> lexicon id of a ``canonical_colors`` table, checked."""
    out = {}
    for shape, color in colors.items():
        if shape not in SHAPES:
            raise ValueError(f"canonical_colors: unknown shape {shape!r}; shapes are {SHAPES}")
        try:
            cid = color_index(color)
        except (KeyError, ValueError):
            cid = -1
        if cid not in CHROMATIC_COLORS:
            names = [COLOR_LEXICON[c].name for c in CHROMATIC_COLORS]
            raise ValueError(f"canonical_colors: {shape!r} -> {color!r} is not one of {names}")
        out[SHAPES.index(shape)] = cid
    return out


# --------------------------------------------------------------------------- gamut


@lru_cache(maxsize=1)
def gamut_max_chroma() -> Tensor:
    """Conservative largest in-gamut chroma per (hue degree, lightness cell).

    Returns:
        float32 ``(360, 201)``: entry ``[h, j]`` is ``0.98`` times the smallest sRGB gamut
        chroma limit over the cell ``hue in [h, h + 1) deg, L in [j / 2, (j + 1) / 2]``
        (the minimum over the cell's corners, found by bisection with
        :func:`chromalab.color.lab_to_rgb`). Any Lab colour of that cell with a smaller
        chroma converts to RGB within about ``[0, 1]``.
    """
    hue = torch.deg2rad(torch.arange(361, dtype=torch.float64))
    lightness = torch.arange(0.0, 100.0 + _GAMUT_L_STEP / 2, _GAMUT_L_STEP, dtype=torch.float64)
    hh, ll = torch.meshgrid(hue, lightness, indexing="ij")
    lo, hi = torch.zeros_like(hh), torch.full_like(hh, 140.0)
    for _ in range(28):
        mid = (lo + hi) / 2
        lab = torch.stack([ll, mid * torch.cos(hh), mid * torch.sin(hh)])
        rgb = lab_to_rgb(lab, clip=False)
        inside = ((rgb >= 0) & (rgb <= 1)).all(0)
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    corners = torch.minimum(lo[:-1], lo[1:])
    corners = torch.minimum(corners[:, :-1], corners[:, 1:])
    return (_GAMUT_SAFETY * corners[:, : int(round(100 / _GAMUT_L_STEP))].clone()).float()


# --------------------------------------------------------------------------- shapes
# Each takes object-frame coordinates (u right, v down, unit ~ the object's radius) and
# returns the boolean inside mask.

_STAR_OUTER, _STAR_INNER = 1.05, 0.45
_STAR_HALF = math.pi / 5
_DROP_TAN = 0.65 / math.sqrt(1.4**2 - 0.65**2)


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return u * u + v * v <= 1.0


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.85


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    return (v <= 0.55) & (v + 1.1 >= math.sqrt(3.0) * u.abs())


def _cross(u: Tensor, v: Tensor) -> Tensor:
    a, b = u.abs(), v.abs()
    return ((a <= 0.32) & (b <= 0.95)) | ((b <= 0.32) & (a <= 0.95))


def _heart(u: Tensor, v: Tensor) -> Tensor:
    x, y = 1.15 * u, 0.2 - 1.15 * v
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _star(u: Tensor, v: Tensor) -> Tensor:
    r = torch.sqrt(u * u + v * v)
    theta = torch.atan2(u, -v)  # 0 points up, to an outer tip
    psi = (torch.remainder(theta + _STAR_HALF, 2 * _STAR_HALF) - _STAR_HALF).abs()
    px, py = r * torch.cos(psi), r * torch.sin(psi)
    ix, iy = _STAR_INNER * math.cos(_STAR_HALF), _STAR_INNER * math.sin(_STAR_HALF)
    return (ix - _STAR_OUTER) * py - iy * (px - _STAR_OUTER) >= 0.0


def _leaf(u: Tensor, v: Tensor) -> Tensor:
    v2 = v * v
    return ((u - 0.65) ** 2 + v2 <= 1.3225) & ((u + 0.65) ** 2 + v2 <= 1.3225)


def _drop(u: Tensor, v: Tensor) -> Tensor:
    ball = u * u + (v - 0.35) ** 2 <= 0.4225
    cone = (u.abs() <= _DROP_TAN * (v + 1.05)) & (v <= 0.049)
    return ball | cone


_SHAPE_FUNCTIONS = (_circle, _square, _triangle, _cross, _heart, _star, _leaf, _drop)


# --------------------------------------------------------------------------- dataset


class CapShapes(Dataset):
    """Captioned procedural scenes, deterministic by ``(seed, index)``.

    Item ``i`` depends only on the constructor arguments and ``i``: its random numbers come
    from ``numpy.random.default_rng([seed, i])``, never from a global generator, so any index
    can be drawn in any order, by any worker.

    Args:
        length: number of items; may be huge (up to ``sys.maxsize``).
        size: image side in pixels (at least 16).
        seed: non-negative dataset seed.
        max_objects: most objects per scene (at least 1); also the padded size ``K``.
        min_objects: fewest objects per scene (1 to ``max_objects``); the count is uniform in
            between. Raising it gives a training split more of the crowded scenes (and shared
            nouns told apart by position) where binding colour words to objects is hard.
        shared_noun_prob: probability that an object after the first takes the shape of an
            earlier one (of a shape the scene may hold once more), so that two objects share a
            noun and the caption tells them apart by position ("the left circle is red and the
            right circle is blue"). 0 (the default) draws every shape uniformly among those
            allowed, and leaves the scenes exactly as without this option.
        level_probs: probabilities of the complete, partial and scarce caption levels.
        canonical_prob: probability that a shape with a canonical colour gets it; otherwise
            it gets one of the other chromatic colours, uniformly.
        canonical_colors: shape name -> canonical colour name (chromatic); default
            :data:`CANONICAL_COLORS`. Shapes left out have none.
        counterfactual_pairs: items ``2k`` and ``2k + 1`` show the same scene (shapes, layout,
            lightness, textures and caption template: the same grey image) and differ only in
            which colour goes with which named object: item ``2k + 1`` maps the distinct
            colours of the objects its caption colours onto each other by a random cycle (every
            such object changes colour, the set of colour words stays the same), or, with one
            such colour, to another chromatic colour. Unnamed objects, the background and
            scarce-level scenes (no colour words) are left as they are. A batch holding both
            items rewards only a model that binds each colour word to its object; painting the
            objects with the caption's colours regardless of which is which earns nothing on
            the pair. Training option, not in any of the papers; off by default (the scenes are
            then exactly those without it). :attr:`group_size` is 2 with it: the training
            sampler keeps a pair together.
        held_out_pairs: shape name -> colour names, pairs kept out of training to measure how a
            model colours combinations it never saw (L-CoIns, Fig. 1, "unobserved
            correspondences"). With ``held_out="exclude"`` (training) no object of such a shape
            gets such a colour (a draw that would is made again among the other colours); with
            ``held_out="only"`` (evaluation) every object of such a shape gets one of its
            held-out colours, and items carry ``held_out`` (bool ``(K,)``): the object shows a
            held-out pair. ``None`` (the default) leaves the scenes exactly as without it.
        held_out: ``"exclude"`` or ``"only"`` (see ``held_out_pairs``).

    Items are dicts (fixed shapes, so the default collate stacks them):

    * ``rgb``: float32 ``(3, size, size)`` in ``[0, 1]``.
    * ``caption`` (str) and ``level`` (str, one of ``chromalab.text.DESCRIPTION_LEVELS``).
    * ``masks``: bool ``(K, size, size)``, visible part of each object, all-False padding.
    * ``color_ids``, ``shape_ids``: long ``(K,)``, lexicon and :data:`SHAPES` ids, ``-1`` pads.
    * ``mentioned``: bool ``(K,)``, the caption names the object.
    * ``canonical``: bool ``(K,)``, the object has its shape's canonical colour.
    * ``background_color_id``: long scalar tensor; ``index``: int.
    """

    def __init__(
        self,
        length: int = 10_000,
        size: int = 64,
        seed: int = 0,
        max_objects: int = 4,
        min_objects: int = 1,
        shared_noun_prob: float = 0.0,
        level_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        canonical_prob: float = 0.8,
        canonical_colors: dict[str, str] | None = None,
        counterfactual_pairs: bool = False,
        held_out_pairs: dict[str, list[str]] | None = None,
        held_out: str = "exclude",
    ) -> None:
        if not 1 <= length <= sys.maxsize:
            raise ValueError(f"length must be in [1, {sys.maxsize}], got {length}")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not 1 <= max_objects <= _MAX_SAME_SHAPE * len(SHAPES):
            raise ValueError(
                f"max_objects must be in [1, {_MAX_SAME_SHAPE * len(SHAPES)}], got {max_objects}"
            )
        if not 1 <= min_objects <= max_objects:
            raise ValueError(
                f"min_objects must be in [1, max_objects={max_objects}], got {min_objects}"
            )
        if not 0.0 <= shared_noun_prob <= 1.0:
            raise ValueError(f"shared_noun_prob must be in [0, 1], got {shared_noun_prob}")
        if not 0.0 <= canonical_prob <= 1.0:
            raise ValueError(f"canonical_prob must be in [0, 1], got {canonical_prob}")
        sample_level(np.random.default_rng(0), level_probs)  # validates level_probs
        self.length = int(length)
        self.size = int(size)
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.min_objects = int(min_objects)
        self.shared_noun_prob = float(shared_noun_prob)
        self.level_probs = tuple(float(p) for p in level_probs)
        self.canonical_prob = float(canonical_prob)
        self.canonical_colors = dict(
            CANONICAL_COLORS if canonical_colors is None else canonical_colors
        )
        self._canonical_ids = _canonical_ids(self.canonical_colors)
        self.counterfactual_pairs = bool(counterfactual_pairs)
        if held_out not in ("exclude", "only"):
            raise ValueError(f"held_out must be 'exclude' or 'only', got {held_out!r}")
        self.held_out = held_out
        self.held_out_pairs = None if held_out_pairs is None else dict(held_out_pairs)
        self._held_out_ids = _pair_ids(self.held_out_pairs or {})
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
        self._x = coords.view(1, 1, size)
        self._y = coords.view(1, size, 1)
        self._gamut = gamut_max_chroma().flatten()
        self._gamut_cols = int(round(100 / _GAMUT_L_STEP))
        self._object_numbers = torch.arange(1, max_objects + 1).view(-1, 1, 1)

    def __len__(self) -> int:
        return self.length

    @property
    def group_size(self) -> int:
        """Consecutive items a sampler must keep together: 2 with ``counterfactual_pairs``."""
        return 2 if self.counterfactual_pairs else 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = operator.index(index)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} is out of range for CapShapes of length {self.length}")
        if not self.counterfactual_pairs:
            return self._scene(i, i)
        base, variant = divmod(i, 2)
        item = self._scene(base, i)
        if variant:
            colors = self._exchange_colors(item, np.random.default_rng([self.seed, base, 1]))
            if colors is not None:
                item = self._scene(base, i, colors)
        return item

    def _scene(self, scene: int, index: int, colors: list[int] | None = None) -> dict[str, Any]:
        """Scene number ``scene`` as item ``index``; ``colors`` replaces its object colours."""
        rng = np.random.default_rng([self.seed, scene])
        shapes, drawn, canonical = self._draw_objects(rng)
        centers, scales = self._place(rng, len(shapes))
        shapes, drawn, canonical = (x[: len(centers)] for x in (shapes, drawn, canonical))
        if colors is None:
            colors = drawn
        else:  # the generator's draws do not depend on the colours: all else stays the same
            own = [self._canonical_ids.get(s) for s in shapes]
            canonical = [c == o for c, o in zip(colors, own, strict=True)]
        n = len(shapes)
        bg_color = int(rng.choice([*CHROMATIC_COLORS, color_index("gray")]))
        texture = BACKGROUND_TEXTURES[int(rng.integers(len(BACKGROUND_TEXTURES)))]
        label = self._rasterize(rng, shapes, centers, scales)
        rgb = self._paint(rng, label, colors, centers, scales, bg_color, texture)

        level = sample_level(rng, self.level_probs)
        objects = [
            SceneObject(SHAPES[s], c, ((x + 1) / 2, (y + 1) / 2))
            for s, c, (x, y) in zip(shapes, colors, centers, strict=True)
        ]
        caption, mentioned = describe_scene(objects, SceneBackground(bg_color, texture), level, rng)

        k = self.max_objects
        pad = k - n
        return {
            "rgb": rgb,
            "caption": caption,
            "level": level,
            "masks": label.unsqueeze(0) == self._object_numbers,
            "color_ids": torch.tensor(colors + [-1] * pad, dtype=torch.long),
            "shape_ids": torch.tensor(shapes + [-1] * pad, dtype=torch.long),
            "mentioned": torch.tensor(mentioned + [False] * pad, dtype=torch.bool),
            "canonical": torch.tensor(canonical + [False] * pad, dtype=torch.bool),
            "background_color_id": torch.tensor(bg_color, dtype=torch.long),
            "index": index,
        } | self._held_out_flags(shapes, colors, pad)

    def _held_out_flags(self, shapes: list[int], colors: list[int], pad: int) -> dict[str, Any]:
        """``{"held_out": (K,) bool}`` with ``held_out_pairs``, else nothing."""
        if self.held_out_pairs is None:
            return {}
        flags = [c in self._held_out_ids.get(s, ()) for s, c in zip(shapes, colors, strict=True)]
        return {"held_out": torch.tensor(flags + [False] * pad, dtype=torch.bool)}

    @staticmethod
    def _exchange_colors(item: dict[str, Any], rng: np.random.Generator) -> list[int] | None:
        """Object colours of the counterfactual twin of ``item`` (see ``counterfactual_pairs``),
        or ``None`` when its caption colours no object (scarce level)."""
        if item["level"] == "scarce":
            return None
        colors = [int(c) for c in item["color_ids"].tolist() if c >= 0]
        named = item["mentioned"].tolist()[: len(colors)]
        distinct = list(dict.fromkeys(c for c, m in zip(colors, named, strict=True) if m))
        if not distinct:
            return None
        if len(distinct) == 1:
            options = [c for c in CHROMATIC_COLORS if c != distinct[0]]
            mapping = {distinct[0]: options[int(rng.integers(len(options)))]}
        else:  # a random cycle through the named colours: no colour keeps its objects
            cycle = [distinct[j] for j in rng.permutation(len(distinct))]
            mapping = dict(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        return [mapping[c] if m else c for c, m in zip(colors, named, strict=True)]

    # ------------------------------------------------------------------ scene parameters

    def _draw_objects(self, rng: np.random.Generator) -> tuple[list[int], list[int], list[bool]]:
        """Shape ids (at most two per shape), colour ids and canonical flags."""
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        shapes: list[int] = []
        colors: list[int] = []
        canonical: list[bool] = []
        for _ in range(n):
            allowed = [s for s in range(len(SHAPES)) if shapes.count(s) < _MAX_SAME_SHAPE]
            again = [s for s in allowed if s in shapes]
            # no draw at all when the option is off: the default scenes stay as they were
            if self.shared_noun_prob > 0 and again and rng.random() < self.shared_noun_prob:
                allowed = again
            shape = allowed[int(rng.integers(len(allowed)))]
            own = self._canonical_ids.get(shape)
            held = self._held_out_ids.get(shape, ())
            if held and self.held_out == "only":
                color = held[int(rng.integers(len(held)))]
            elif own is not None and own not in held and rng.random() < self.canonical_prob:
                color = own
            else:
                options = [c for c in CHROMATIC_COLORS if c != own]
                color = options[int(rng.integers(len(options)))]
                if color in held:  # never seen in training: draw again among the others
                    options = [c for c in options if c not in held]
                    color = options[int(rng.integers(len(options)))]
            shapes.append(shape)
            colors.append(color)
            canonical.append(color == own)
        return shapes, colors, canonical

    @staticmethod
    def _place(rng: np.random.Generator, n: int) -> tuple[list[tuple[float, float]], list[float]]:
        """Centres in ``[-1, 1]^2`` and radii; objects may overlap but never hide each other.

        An object that finds no place in 30 tries is dropped (rare: the scene keeps fewer).
        """
        centers: list[tuple[float, float]] = []
        scales: list[float] = []
        for _ in range(n):
            for _ in range(30):
                s = float(rng.uniform(*_SCALE_RANGE))
                x, y = rng.uniform(-1 + 0.9 * s, 1 - 0.9 * s, size=2).tolist()
                if all(
                    math.hypot(x - cx, y - cy) >= 0.8 * (s + cs)
                    for (cx, cy), cs in zip(centers, scales, strict=True)
                ):
                    centers.append((x, y))
                    scales.append(s)
                    break
        return centers, scales

    def _rasterize(
        self,
        rng: np.random.Generator,
        shapes: list[int],
        centers: list[tuple[float, float]],
        scales: list[float],
    ) -> Tensor:
        """Label map long ``(size, size)``: 0 background, ``k + 1`` object ``k`` (on top)."""
        n = len(shapes)
        angles = rng.uniform(-0.5, 0.5, size=n)
        angles += np.array([_BASE_ROTATION.get(SHAPES[s], 0.0) for s in shapes])
        cos = torch.tensor(np.cos(angles), dtype=torch.float32).view(n, 1, 1)
        sin = torch.tensor(np.sin(angles), dtype=torch.float32).view(n, 1, 1)
        inv_scale = torch.tensor([1.0 / s for s in scales], dtype=torch.float32).view(n, 1, 1)
        cx = torch.tensor([c[0] for c in centers], dtype=torch.float32).view(n, 1, 1)
        cy = torch.tensor([c[1] for c in centers], dtype=torch.float32).view(n, 1, 1)
        dx, dy = (self._x - cx) * inv_scale, (self._y - cy) * inv_scale
        u, v = dx * cos + dy * sin, dy * cos - dx * sin
        label = torch.zeros(self.size, self.size, dtype=torch.long)
        for k, shape in enumerate(shapes):
            label = torch.where(_SHAPE_FUNCTIONS[shape](u[k], v[k]), k + 1, label)
        return label

    def _smooth_noise(self, rng: np.random.Generator, channels: int, cells: int) -> Tensor:
        """Bilinearly upsampled Gaussian noise ``(channels, size, size)``, about unit scale."""
        grid = torch.from_numpy(rng.standard_normal((1, channels, cells, cells), dtype=np.float32))
        return F.interpolate(grid, size=(self.size, self.size), mode="bilinear")[0]

    def _paint(
        self,
        rng: np.random.Generator,
        label: Tensor,
        colors: list[int],
        centers: list[tuple[float, float]],
        scales: list[float],
        bg_color: int,
        texture: str,
    ) -> Tensor:
        """Compose the scene in Lab (shading, texture, gamut-limited chroma) and convert to RGB."""
        n = len(colors)
        # Region table, row 0 the background: L, dL/dx, dL/dy, cx, cy, texture, chroma, hue.
        table = np.zeros((n + 1, 8), dtype=np.float64)
        table[1:, 0] = rng.uniform(*_OBJECT_BASE_L, size=n)
        direction = rng.uniform(0.0, 2 * math.pi, size=n)
        slope = rng.uniform(0.0, _OBJECT_SHADING, size=n) / np.asarray(scales)
        table[1:, 1], table[1:, 2] = slope * np.cos(direction), slope * np.sin(direction)
        table[1:, 3:5] = np.asarray(centers)
        table[1:, 5] = rng.uniform(0.0, _OBJECT_TEXTURE, size=n)
        table[0, 0] = rng.uniform(*_BACKGROUND_L)
        ids = [bg_color, *colors]
        ab = np.array([COLOR_LEXICON[c].ab for c in ids])
        chroma = np.hypot(ab[:, 0], ab[:, 1]) * rng.uniform(*_CHROMA_JITTER, size=n + 1)
        chroma[0] *= rng.uniform(0.55, 0.8)
        table[:, 6] = chroma
        hue = np.arctan2(ab[:, 1], ab[:, 0]) + rng.uniform(-_HUE_JITTER, _HUE_JITTER, size=n + 1)
        table[:, 7] = np.remainder(hue, 2 * math.pi)

        noise = self._smooth_noise(rng, 2, 6)
        values = torch.from_numpy(table.astype(np.float32)).index_select(0, label.flatten())
        values = values.T.reshape(8, self.size, self.size)
        x, y = self._x[0], self._y[0]
        lightness = values[0] + values[1] * (x - values[3]) + values[2] * (y - values[4])
        lightness = lightness + values[5] * noise[0]
        background = label == 0
        if texture == "striped":
            angle, freq, phase = rng.uniform(0, math.pi), rng.uniform(1.5, 4.0), rng.uniform(0, 7)
            wave = x * math.cos(angle) + y * math.sin(angle)
            pattern = torch.tanh(3.0 * torch.sin(2 * math.pi * freq * wave + phase))
        else:
            pattern = self._smooth_noise(rng, 1, max(self.size // 4, 4))[0]
        amplitude = float(rng.uniform(4.0, 10.0))
        lightness = torch.where(background, lightness + amplitude * pattern, lightness)
        lightness = lightness.clamp(min(OBJECT_L_RANGE[0], _BACKGROUND_L[0]), OBJECT_L_RANGE[1])
        lightness = torch.where(background, lightness, lightness.clamp(*OBJECT_L_RANGE))

        # Largest in-gamut chroma at each pixel's (hue, L) cell; hue is constant per region.
        hue_bins = torch.from_numpy(np.floor(np.degrees(table[:, 7])).astype(np.int64) % 360)
        cell = hue_bins[label] * self._gamut_cols + (lightness / _GAMUT_L_STEP).long().clamp(
            max=self._gamut_cols - 1
        )
        pixel_chroma = torch.minimum(values[6] * (1.0 + 0.06 * noise[1]), self._gamut[cell])
        a = pixel_chroma * torch.cos(values[7])
        b = pixel_chroma * torch.sin(values[7])
        return lab_to_rgb(torch.stack([lightness, a, b]), clip=True)


# --------------------------------------------------------------------------- export


def _metadata(item: dict[str, Any]) -> dict[str, Any]:
    real = item["color_ids"] >= 0
    color_ids = item["color_ids"][real].tolist()
    shape_ids = item["shape_ids"][real].tolist()
    background = int(item["background_color_id"])
    return {
        "index": item["index"],
        "caption": item["caption"],
        "level": item["level"],
        "color_ids": color_ids,
        "colors": [COLOR_LEXICON[c].name for c in color_ids],
        "shape_ids": shape_ids,
        "shapes": [SHAPES[s] for s in shape_ids],
        "mentioned": item["mentioned"][real].tolist(),
        "canonical": item["canonical"][real].tolist(),
        "background_color_id": background,
        "background_color": COLOR_LEXICON[background].name,
    }


def _png_bytes(rgb: Tensor) -> bytes:
    array = (rgb * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def export_capshapes(
    out_dir: str | Path,
    n: int,
    format: str = "folder",
    seed: int = 0,
    size: int = 64,
    start: int = 0,
    shard_size: int = 1000,
) -> Path:
    """Write CapShapes items ``start .. start + n - 1`` to disk.

    Formats:

    * ``"folder"``: ``images/{i:08d}.png``, ``masks/{i:08d}.npz`` (array ``masks``, bool
      ``(objects, size, size)``) and ``captions.jsonl``, one line per item with ``image`` (path
      relative to ``out_dir``), ``caption``, ``level`` and the object metadata (``color_ids``,
      ``shape_ids``, ``mentioned``, ``canonical``, their names, the background colour).
    * ``"jsonl"``: the same without the masks.
    * ``"wds"``: WebDataset shards ``capshapes-{k:06d}.tar`` of ``shard_size`` items, shard
      ``k`` holding items ``start + k * shard_size ...``; each item is ``{key}.png``,
      ``{key}.txt`` (the caption) and ``{key}.json`` (the metadata), with ``key = f"{i:08d}"``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    if format not in ("folder", "jsonl", "wds"):
        raise ValueError(f"format must be 'folder', 'jsonl' or 'wds', got {format!r}")
    if n < 1 or start < 0 or shard_size < 1:
        raise ValueError(
            f"need n >= 1, start >= 0, shard_size >= 1; got {n}, {start}, {shard_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = CapShapes(length=start + n, size=size, seed=seed)
    if format == "wds":
        with tqdm(total=n, desc="CapShapes -> wds", unit="scene") as progress:
            for k, first in enumerate(range(start, start + n, shard_size)):
                with tarfile.open(out / f"capshapes-{k:06d}.tar", "w") as tar:
                    for i in range(first, min(first + shard_size, start + n)):
                        item = dataset[i]
                        key = f"{i:08d}"
                        _add_member(tar, f"{key}.png", _png_bytes(item["rgb"]))
                        _add_member(tar, f"{key}.txt", str(item["caption"]).encode())
                        _add_member(tar, f"{key}.json", json.dumps(_metadata(item)).encode())
                        progress.update(1)
        return out

    (out / "images").mkdir(exist_ok=True)
    if format == "folder":
        (out / "masks").mkdir(exist_ok=True)
    with open(out / "captions.jsonl", "w", encoding="utf-8") as lines:
        for i in tqdm(range(start, start + n), desc=f"CapShapes -> {format}", unit="scene"):
            item = dataset[i]
            image = f"images/{i:08d}.png"
            (out / image).write_bytes(_png_bytes(item["rgb"]))
            if format == "folder":
                masks = item["masks"][item["color_ids"] >= 0]
                np.savez_compressed(out / "masks" / f"{i:08d}.npz", masks=masks.numpy())
            lines.write(json.dumps({"image": image, **_metadata(item)}) + "\n")
    return out
