"""Colour lexicon and captions with any level of colour detail.

The lexicon holds the basic colour terms of Berlin & Kay (red, orange, yellow, green, blue,
purple, pink, brown and the achromatic gray, white, black) plus cyan, which is far enough
from green and blue in CIELab ab to be told apart. Each term has a canonical ab centre.

Source of the centres: each term has an 8-bit sRGB prototype colour (``ColorTerm.srgb``) and
its centre is the CIE Lab (D65) ``(a, b)`` of that prototype, computed once with
:func:`chromalab.color.rgb_to_lab` and written here as numbers (a test recomputes them). The
chromatic prototypes were chosen as vivid exemplars lying on a ring of Lab chroma 60 (cyan:
48.5, the most the sRGB gamut allows at that hue) at the hue angles of the terms' focal colours
(red 35, orange 62, yellow 95, green 140, cyan 200, blue 275, purple 310, pink 350 degrees).
Because the centres have (nearly) equal chroma, the nearest-centre regions in ab are angular
sectors: reducing a colour's chroma while keeping its hue keeps its nearest centre, which is
what :mod:`chromalab.data.capshapes` relies on when it pulls colours into the sRGB gamut.
Brown is dark orange, so it has a low-chroma centre and is left out of
:data:`CHROMATIC_COLORS` (the terms CapShapes paints with).

Captions follow the three description levels of L-CAD (Chang et al., NeurIPS 2023, Sec. 1 and
3.5, arXiv:2305.15217): *complete* descriptions give the
colour of every object and of the background, *partial* ones the colours of some objects only,
and *scarce* ones no colour at all. :func:`random_color_swap` automates the caption-manipulation
study of FiLM (Manjunatha et al., NAACL 2018, Sec. 3,
arXiv:1804.06026).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CHROMATIC_COLORS",
    "caption_variants",
    "COLOR_LEXICON",
    "DESCRIPTION_LEVELS",
    "ColorTerm",
    "RandomSource",
    "SceneBackground",
    "SceneObject",
    "ab_centers",
    "color_index",
    "describe_scene",
    "find_color_words",
    "nearest_color_ids",
    "random_color_swap",
    "remove_color_words",
    "sample_level",
    "swap_color_words",
]

#: Sources of randomness accepted by the caption functions.
RandomSource = torch.Generator | random.Random | np.random.Generator


@dataclass(frozen=True)
class ColorTerm:
    """A colour word with its canonical CIELab ab centre.

    Attributes:
        name: the canonical word, lower case.
        ab: CIE Lab (D65) ``(a, b)`` of the prototype, in about ``[-110, 110]``.
        synonyms: other words for the same colour (lower case).
        chromatic: ``False`` for the achromatic terms gray, white and black.
        srgb: the 8-bit sRGB prototype whose Lab gives ``ab``.
    """

    name: str
    ab: tuple[float, float]
    synonyms: tuple[str, ...] = ()
    chromatic: bool = True
    srgb: tuple[int, int, int] | None = None


#: The lexicon; a term's id is its index in this tuple.
COLOR_LEXICON: tuple[ColorTerm, ...] = (
    ColorTerm("red", (49.20, 34.48), ("scarlet", "crimson"), srgb=(203, 77, 63)),
    ColorTerm("orange", (28.11, 53.02), (), srgb=(224, 135, 60)),
    ColorTerm("yellow", (-5.38, 59.78), (), srgb=(221, 198, 81)),
    ColorTerm("green", (-46.12, 38.71), (), srgb=(58, 151, 61)),
    ColorTerm("cyan", (-45.49, -16.73), ("teal", "turquoise"), srgb=(0, 249, 255)),
    ColorTerm("blue", (5.29, -59.70), (), srgb=(0, 145, 247)),
    ColorTerm("purple", (38.44, -45.82), ("violet",), srgb=(112, 70, 167)),
    ColorTerm("pink", (59.09, -10.47), ("magenta",), srgb=(246, 110, 178)),
    ColorTerm("brown", (13.16, 24.75), (), srgb=(104, 66, 36)),
    ColorTerm("gray", (0.0, 0.0), ("grey",), chromatic=False, srgb=(128, 128, 128)),
    ColorTerm("white", (0.0, 0.0), (), chromatic=False, srgb=(255, 255, 255)),
    ColorTerm("black", (0.0, 0.0), (), chromatic=False, srgb=(0, 0, 0)),
)

_WORD_TO_ID: dict[str, int] = {
    word: i for i, term in enumerate(COLOR_LEXICON) for word in (term.name, *term.synonyms)
}

#: Ids of the hue terms CapShapes paints with (every chromatic term except brown).
CHROMATIC_COLORS: tuple[int, ...] = tuple(
    i for i, term in enumerate(COLOR_LEXICON) if term.chromatic and term.name != "brown"
)

#: The description levels of L-CAD, from most to least colour detail.
DESCRIPTION_LEVELS: tuple[str, ...] = ("complete", "partial", "scarce")

# Longest words first so that no word is shadowed by a prefix of it.
_COLOR_PATTERN = re.compile(
    r"\b(" + "|".join(sorted(_WORD_TO_ID, key=len, reverse=True)) + r")\b", re.IGNORECASE
)


def color_index(name: str) -> int:
    """Lexicon id of a colour word or synonym (case-insensitive), e.g. ``"Grey" -> gray``."""
    try:
        return _WORD_TO_ID[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown colour word {name!r}; known: {sorted(_WORD_TO_ID)}") from None


def ab_centers(ids: Sequence[int] = CHROMATIC_COLORS) -> Tensor:
    """Canonical ab centres of the given lexicon ids, float32 ``(len(ids), 2)``."""
    _check_ids(ids)
    return torch.tensor([COLOR_LEXICON[i].ab for i in ids], dtype=torch.float32)


def nearest_color_ids(ab: Tensor, ids: Sequence[int] = CHROMATIC_COLORS) -> Tensor:
    """Lexicon id of the nearest centre (Euclidean in ab) among ``ids``.

    Args:
        ab: ``(*, 2)`` ab values.
        ids: candidate lexicon ids.

    Returns:
        long tensor ``(*)`` of lexicon ids.
    """
    if ab.shape[-1:] != (2,):
        raise ValueError(f"ab must have shape (*, 2), got {tuple(ab.shape)}")
    centers = ab_centers(ids).to(device=ab.device, dtype=ab.dtype)
    dist = ((ab.unsqueeze(-2) - centers) ** 2).sum(-1)
    return torch.tensor(ids, device=ab.device)[dist.argmin(-1)]


def _check_ids(ids: Sequence[int]) -> None:
    for i in ids:
        if not 0 <= int(i) < len(COLOR_LEXICON):
            raise ValueError(f"colour id {i} is outside [0, {len(COLOR_LEXICON)})")


# --------------------------------------------------------------------------- randomness


def _random_int(generator: RandomSource, n: int) -> int:
    """A uniform integer in ``[0, n)`` from any supported generator."""
    if isinstance(generator, torch.Generator):
        return int(torch.randint(n, (1,), generator=generator).item())
    if isinstance(generator, random.Random):
        return generator.randrange(n)
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(n))
    raise TypeError(
        "generator must be a torch.Generator, random.Random or numpy.random.Generator, "
        f"got {type(generator).__name__}"
    )


def _random_float(generator: RandomSource) -> float:
    """A uniform float in ``[0, 1)`` from any supported generator."""
    if isinstance(generator, torch.Generator):
        return float(torch.rand((), generator=generator, dtype=torch.float64).item())
    if isinstance(generator, random.Random):
        return generator.random()
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    raise TypeError(
        "generator must be a torch.Generator, random.Random or numpy.random.Generator, "
        f"got {type(generator).__name__}"
    )


def _sample(generator: RandomSource, items: Sequence, k: int) -> list:
    """``k`` distinct items in random order (partial Fisher-Yates shuffle)."""
    pool = list(items)
    for i in range(k):
        j = i + _random_int(generator, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def sample_level(generator: RandomSource, probs: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> str:
    """Draw a description level from :data:`DESCRIPTION_LEVELS` with probabilities ``probs``."""
    if len(probs) != len(DESCRIPTION_LEVELS) or any(p < 0 for p in probs):
        raise ValueError(f"probs must be 3 non-negative numbers, got {tuple(probs)}")
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"probs must sum to 1, got {tuple(probs)} (sum {sum(probs)})")
    u = _random_float(generator)
    cumulative = 0.0
    for level, p in zip(DESCRIPTION_LEVELS, probs, strict=True):
        cumulative += p
        if u < cumulative:
            return level
    # u fell past the rounded cumulative sum: the last level with non-zero probability.
    return [lv for lv, p in zip(DESCRIPTION_LEVELS, probs, strict=True) if p > 0][-1]


# --------------------------------------------------------------------------- colour words


def find_color_words(caption: str) -> list[tuple[int, int, int]]:
    """Colour words in ``caption`` as ``(start, end, lexicon id)``, in order of appearance.

    Matching is case-insensitive, on whole words only (``"reddish"`` is not ``red``; the
    ``red`` of ``"red-haired"`` is), and includes synonyms (``"grey"`` is gray).
    """
    return [
        (m.start(), m.end(), _WORD_TO_ID[m.group(0).lower()])
        for m in _COLOR_PATTERN.finditer(caption)
    ]


def _match_case(word: str, template: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_color_words(caption: str, mapping: Mapping[int, int]) -> str:
    """Replace colour words whose id is a key of ``mapping`` by the canonical name of its value.

    Capitalization is kept (``"Red" -> "Blue"``, ``"RED" -> "BLUE"``); colour words whose id is
    not in ``mapping`` are left as they are. An indefinite article right before a replaced word
    follows it (``"a red ball" -> "an orange ball"``).
    """
    _check_ids(list(mapping.keys()) + list(mapping.values()))
    pieces: list[str] = []
    last = 0
    for start, end, cid in find_color_words(caption):
        if cid in mapping:
            name = _match_case(COLOR_LEXICON[mapping[cid]].name, caption[start:end])
            before = caption[last:start]
            article = _ARTICLE_BEFORE.search(before)
            if article is not None:
                fixed = _match_case(_article(name), article.group(1))
                before = before[: article.start(1)] + fixed + before[article.end(1) :]
            pieces.append(before)
            pieces.append(name)
            last = end
    pieces.append(caption[last:])
    return "".join(pieces)


_COPULA_BEFORE = re.compile(r"\s+(?:is|are|was|were)\s+$", re.IGNORECASE)
_AFTER_COLOR = re.compile(r"[\s-]*")
_COLOR_LIST = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", re.IGNORECASE)


def remove_color_words(caption: str) -> str:
    """``caption`` without its colour words: a scarce-level description of the same content
    (L-CAD's any-level training replaces complete and partial descriptions with scarce ones).

    Attributive colours go with the space or hyphen after them (``"a red circle" -> "a circle"``,
    ``"red-haired" -> "haired"``), predicative ones with their copula (``"the circle is red" ->
    "the circle"``); an indefinite article before a removed word follows the next word
    (``"an orange ball" -> "a ball"``); a list of colours goes as one (``"a red, white and blue
    flag" -> "a flag"``); spaces are collapsed and a caption left with no word becomes ``""``.
    Words of the colour lexicon go even where they name something else (``"an orange"``).
    """
    pieces: list[str] = []
    last = 0
    for start, end, _ in find_color_words(caption):
        if start < last:  # swallowed with the previous word's trailing separators
            continue
        before = caption[last:start]
        copula = _COPULA_BEFORE.search(before)
        if copula is not None:
            before = before[: copula.start()] + " "
        last = _AFTER_COLOR.match(caption, end).end()
        listed = _COLOR_LIST.match(caption, end)  # "red, white and blue": one span
        if listed is not None and _COLOR_PATTERN.match(caption, listed.end()):
            last = listed.end()
        article = _ARTICLE_BEFORE.search(before)
        following = re.match(r"\w+", caption[last:])
        if (
            article is not None
            and following is not None
            and not find_color_words(following.group(0))
        ):
            fixed = _match_case(_article(following.group(0)), article.group(1))
            before = before[: article.start(1)] + fixed + before[article.end(1) :]
        pieces.append(before)
    pieces.append(caption[last:])
    text = re.sub(r"\s+", " ", "".join(pieces))
    text = re.sub(r"\s+([,.;:!?])", r"\1", text).strip()
    return text if re.search(r"\w", text) else ""


def random_color_swap(
    caption: str,
    generator: RandomSource,
    choices: Sequence[int] = CHROMATIC_COLORS,
) -> tuple[str, dict[int, int]]:
    """Replace every colour word by a different colour, consistently (FiLM's manipulation study).

    Each colour present maps to one target drawn uniformly from ``choices`` minus itself, and
    distinct colours get distinct targets while ``choices`` allows it. Synonyms count as their
    colour (``"grey"`` and ``"gray"`` get the same target).

    Returns:
        The new caption and the mapping ``{old id: new id}`` (empty when there was no colour word).
    """
    _check_ids(choices)
    mapping: dict[int, int] = {}
    for _, _, cid in find_color_words(caption):
        if cid in mapping:
            continue
        options = [c for c in choices if c != cid and c not in mapping.values()]
        if not options:
            options = [c for c in choices if c != cid]
        if not options:
            raise ValueError(f"choices {tuple(choices)} offer no colour other than {cid}")
        mapping[cid] = options[_random_int(generator, len(options))]
    return swap_color_words(caption, mapping), mapping


# --------------------------------------------------------------------------- scene captions


class SceneObject(NamedTuple):
    """An object to describe: its noun, colour id and centre ``(x, y)`` in image coordinates
    (``x`` to the right, ``y`` downward, both in ``[0, 1]``)."""

    noun: str
    color_id: int
    position: tuple[float, float]


class SceneBackground(NamedTuple):
    """The background to describe: its colour id and an optional texture adjective
    (``"striped"``, ``"speckled"``, or ``""``)."""

    color_id: int
    texture: str = ""


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_IRREGULAR_PLURALS = {"leaf": "leaves", "knife": "knives", "mouse": "mice"}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


_ARTICLE_BEFORE = re.compile(r"(?:^|(?<=\W))(an?)\s+$", re.IGNORECASE)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _positions(objects: Sequence[SceneObject]) -> list[tuple[int, int, str]]:
    """For each object: (rank along the separating axis, group size, axis ``"x"``/``"y"``).

    Objects sharing a noun are ordered along ``x`` (left to right) or ``y`` (top to bottom),
    whichever axis separates the group better (largest smallest gap between neighbours).
    """
    out = [(0, 1, "x")] * len(objects)
    groups: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        groups.setdefault(obj.noun, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        gaps = []
        for axis in (0, 1):
            coords = sorted(objects[i].position[axis] for i in members)
            gaps.append(min(b - a for a, b in zip(coords, coords[1:], strict=False)))
        axis = 0 if gaps[0] >= gaps[1] else 1
        order = sorted(members, key=lambda i, axis=axis: objects[i].position[axis])
        for rank, i in enumerate(order):
            out[i] = (rank, len(members), "xy"[axis])
    return out


_ADJECTIVES = {"x": ("left", "middle", "right"), "y": ("top", "middle", "bottom")}
_LOCATIVES = {
    "x": ("on the left", "in the middle", "on the right"),
    "y": ("at the top", "in the middle", "at the bottom"),
}


def _position_index(rank: int, size: int) -> int:
    return 0 if rank == 0 else (2 if rank == size - 1 else 1)


def _attributive(obj: SceneObject, position: tuple[int, int, str], with_color: bool) -> str:
    """``"a red circle"``, ``"an orange star on the left"``, or ``"a circle"``."""
    words = f"{COLOR_LEXICON[obj.color_id].name} {obj.noun}" if with_color else obj.noun
    rank, size, axis = position
    phrase = f"{_article(words)} {words}"
    if size > 1:
        phrase += " " + _LOCATIVES[axis][_position_index(rank, size)]
    return phrase


def _predicative(obj: SceneObject, position: tuple[int, int, str]) -> str:
    """``"the heart is red"``, ``"the left circle is blue"``, ``"the second star from the top
    is green"``."""
    color = COLOR_LEXICON[obj.color_id].name
    rank, size, axis = position
    if size == 1:
        return f"the {obj.noun} is {color}"
    if size <= 3:
        return f"the {_ADJECTIVES[axis][_position_index(rank, size)]} {obj.noun} is {color}"
    side = "left" if axis == "x" else "top"
    return f"the {_ORDINALS[rank]} {obj.noun} from the {side} is {color}"


def _counted(objects: Sequence[SceneObject]) -> str:
    """``"two circles and a heart"`` (nouns in order of first appearance)."""
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.noun] = counts.get(obj.noun, 0) + 1
    parts = []
    for noun, n in counts.items():
        if n == 1:
            parts.append(f"{_article(noun)} {noun}")
        else:
            number = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
            parts.append(f"{number} {_plural(noun)}")
    return _join(parts)


def _check_scene(objects: Sequence[SceneObject], background: SceneBackground | None) -> None:
    if len(objects) == 0:
        raise ValueError("describe_scene needs at least one object, got none")
    for obj in objects:
        if not obj.noun or find_color_words(obj.noun):
            raise ValueError(f"object noun must be a non-empty non-colour word, got {obj.noun!r}")
        if len(obj.position) != 2:
            raise ValueError(f"object position must be (x, y), got {obj.position!r}")
    _check_ids([obj.color_id for obj in objects])
    if background is not None:
        _check_ids([background.color_id])
        if find_color_words(background.texture):
            raise ValueError(f"background texture must not be a colour, got {background.texture!r}")


def describe_scene(
    objects: Sequence[SceneObject | tuple[str, int, tuple[float, float]]],
    background: SceneBackground | tuple[int, str] | None,
    level: str,
    generator: RandomSource,
) -> tuple[str, list[bool]]:
    """Caption a scene at one of L-CAD's description levels.

    * ``"complete"``: every object and the background, each with its colour.
    * ``"partial"``: the colours of a non-empty strict subset of the objects (with a single
      object: that object, and not the background's colour).
    * ``"scarce"``: every object is named, with no colour word at all.

    Objects sharing a noun are told apart by position (``"the left circle is red and the right
    circle is blue"``, ``"a red circle at the top"``), along whichever axis separates them.
    Templates, object order and the partial subset are drawn from ``generator``, so the caption
    is a deterministic function of the inputs and the generator state.

    Args:
        objects: ``(noun, colour id, (x, y))`` per object, ``x``, ``y`` in ``[0, 1]``.
        background: ``(colour id, texture adjective)``, or ``None`` to never mention it.
        level: one of :data:`DESCRIPTION_LEVELS`.
        generator: a ``torch.Generator``, ``random.Random`` or ``numpy.random.Generator``.

    Returns:
        The caption and, per object in input order, whether the caption mentions it.
    """
    if level not in DESCRIPTION_LEVELS:
        raise ValueError(f"level must be one of {DESCRIPTION_LEVELS}, got {level!r}")
    objs = [SceneObject(str(o[0]), int(o[1]), tuple(o[2])) for o in objects]
    bg = None if background is None else SceneBackground(int(background[0]), *background[1:])
    _check_scene(objs, bg)
    positions = _positions(objs)
    n = len(objs)

    if level == "partial" and n > 1:
        chosen = sorted(_sample(generator, range(n), 1 + _random_int(generator, n - 1)))
    else:
        chosen = list(range(n))
    mentioned = [i in chosen for i in range(n)]
    order = _sample(generator, chosen, len(chosen))
    template = _random_int(generator, 4)
    texture = "" if bg is None else bg.texture
    textured_bg = f"{texture} background".strip()

    if level == "scarce":
        nouns = _counted([objs[i] for i in order])
        if template == 0 and bg is not None:
            return f"{nouns} on {_article(textured_bg)} {textured_bg}", mentioned
        prefix = ("", "a picture of ", "an image with ", "")[template]
        return prefix + nouns, mentioned

    # Predicative sentences only when attributive ones cannot name the positions.
    if max(p[1] for p in positions) > 3:
        template = 2
    attributive = _join([_attributive(objs[i], positions[i], True) for i in order])
    if template == 2:
        text = _join([_predicative(objs[i], positions[i]) for i in order])
        if level == "complete" and bg is not None:
            text += f", and the background is {COLOR_LEXICON[bg.color_id].name}"
        return text, mentioned
    if level == "complete" and bg is not None:
        bg_words = f"{texture} {COLOR_LEXICON[bg.color_id].name}".strip()
        where = ("on", "in front of", "", "on")[template]
        prefix = ("", "a picture of ", "", "an image of ")[template]
        return (
            f"{prefix}{attributive} {where} {_article(bg_words)} {bg_words} background",
            mentioned,
        )
    if template == 0 and texture:
        return f"{attributive} on {_article(textured_bg)} {textured_bg}", mentioned
    prefix = ("", "a picture of ", "", "an image of ")[template]
    return prefix + attributive, mentioned


def caption_variants(caption: str, count: int = 3) -> list[str]:
    """``count`` captions that differ from ``caption`` only in their colour words.

    The first is ``caption`` itself; variant ``i`` rotates every chromatic colour word ``i``
    steps along :data:`chromalab.text.CHROMATIC_COLORS` (a bijection, so distinct colours stay
    distinct).
    """
    ids = {cid for _, _, cid in find_color_words(caption) if cid in CHROMATIC_COLORS}
    if not ids:
        raise ValueError(f"caption has no chromatic colour word: {caption!r}")
    n = len(CHROMATIC_COLORS)
    variants = [caption]
    for shift in range(1, count):
        step = shift * max(1, n // count)
        mapping = {c: CHROMATIC_COLORS[(CHROMATIC_COLORS.index(c) + step) % n] for c in ids}
        variants.append(swap_color_words(caption, mapping))
    return variants
