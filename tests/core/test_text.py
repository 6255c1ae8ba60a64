"""Tests for chromalab.text: colour lexicon, colour words and any-level scene captions."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from chromalab.color import rgb_to_lab
from chromalab.text import (
    CHROMATIC_COLORS,
    COLOR_LEXICON,
    DESCRIPTION_LEVELS,
    ColorTerm,
    SceneObject,
    ab_centers,
    color_index,
    describe_scene,
    find_color_words,
    nearest_color_ids,
    random_color_swap,
    remove_color_words,
    sample_level,
    swap_color_words,
)

NOUNS = ("circle", "square", "heart", "star", "leaf", "cross")


def _reference_color_words(caption: str) -> list[tuple[int, int, int]]:
    """Independent transcription: split into letter runs, look each up case-insensitively."""
    words = {w: i for i, t in enumerate(COLOR_LEXICON) for w in (t.name, *t.synonyms)}
    return [
        (m.start(), m.end(), words[m.group(0).lower()])
        for m in re.finditer(r"[A-Za-z]+", caption)
        if m.group(0).lower() in words
    ]


def _between_words(text: str, words: list[tuple[int, int, int]]) -> list[str]:
    """The pieces of ``text`` between the given word spans."""
    starts = [0] + [end for _, end, _ in words]
    ends = [start for start, _, _ in words] + [len(text)]
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def _without_articles(pieces: list[str]) -> list[str]:
    return [re.sub(r"\ban\b", "a", piece.lower()) for piece in pieces]


def _random_scene(rng: random.Random, n: int, unique_nouns: bool = False) -> list[SceneObject]:
    nouns = rng.sample(NOUNS, n) if unique_nouns else [rng.choice(NOUNS) for _ in range(n)]
    return [
        SceneObject(noun, rng.choice(CHROMATIC_COLORS), (rng.random(), rng.random()))
        for noun in nouns
    ]


class TestColorLexicon:
    def test_basic_terms_present(self):
        names = {t.name for t in COLOR_LEXICON}
        basic = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"}
        assert basic | {"gray", "white", "black"} <= names
        assert all(isinstance(t, ColorTerm) for t in COLOR_LEXICON)

    def test_achromatic_flagged(self):
        for name in ("gray", "white", "black"):
            term = COLOR_LEXICON[color_index(name)]
            assert not term.chromatic
            assert math.hypot(*term.ab) < 0.5
        for name in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"):
            assert COLOR_LEXICON[color_index(name)].chromatic

    def test_centres_recomputed_from_prototypes(self):
        srgb = torch.tensor([t.srgb for t in COLOR_LEXICON], dtype=torch.float64) / 255.0
        ours = rgb_to_lab(srgb.T.reshape(3, -1, 1))[1:, :, 0].T
        skimage = rgb2lab(srgb.numpy()[None])[0, :, 1:]
        stored = torch.tensor([t.ab for t in COLOR_LEXICON], dtype=torch.float64)
        torch.testing.assert_close(ours, stored, atol=0.006, rtol=0)
        np.testing.assert_allclose(skimage, stored.numpy(), atol=0.02)

    def test_chromatic_centres_well_separated(self):
        chromatic = [t for t in COLOR_LEXICON if t.chromatic]
        for s, t in itertools.combinations(chromatic, 2):
            assert math.dist(s.ab, t.ab) >= 25.0, (s.name, t.name)

    def test_chromatic_colors(self):
        assert len(CHROMATIC_COLORS) >= 7
        assert all(COLOR_LEXICON[i].chromatic for i in CHROMATIC_COLORS)
        assert color_index("gray") not in CHROMATIC_COLORS

    def test_nearest_centre_depends_only_on_hue(self):
        # Scaling a centre's chroma (down to 40%, up to 150%) keeps it nearest to itself, even
        # 5 degrees off its hue: CapShapes relies on this when it reduces chroma into the gamut.
        centers = np.array([COLOR_LEXICON[i].ab for i in CHROMATIC_COLORS])
        for j, (a, b) in enumerate(centers):
            for scale in np.linspace(0.4, 1.5, 23):
                for turn in np.radians([-5.0, 0.0, 5.0]):
                    c, s = math.cos(turn), math.sin(turn)
                    point = scale * np.array([a * c - b * s, a * s + b * c])
                    dist = [math.dist(point, q) for q in centers]
                    assert int(np.argmin(dist)) == j

    def test_words_unique(self):
        words = [w for t in COLOR_LEXICON for w in (t.name, *t.synonyms)]
        assert len(words) == len(set(words))


class TestColorIndex:
    def test_names_and_synonyms(self):
        for i, term in enumerate(COLOR_LEXICON):
            assert color_index(term.name) == i
            for synonym in term.synonyms:
                assert color_index(synonym) == i
        assert color_index("Grey") == color_index("gray") == color_index("GRAY")

    def test_unknown(self):
        with pytest.raises(ValueError, match="chartreuse"):
            color_index("chartreuse")

    def test_centers_and_nearest(self):
        centers = ab_centers()
        assert centers.shape == (len(CHROMATIC_COLORS), 2)
        assert nearest_color_ids(centers).tolist() == list(CHROMATIC_COLORS)
        with pytest.raises(ValueError, match=r"\(\*, 2\)"):
            nearest_color_ids(torch.zeros(3, 3))
        with pytest.raises(ValueError, match="99"):
            ab_centers([99])


class TestFindColorWords:
    def test_handwritten(self):
        caption = "A RED-haired Grey cat, a reddish dog, a bluebird and a Teal cup; green."
        found = find_color_words(caption)
        expected = []
        for word, name in (("RED", "red"), ("Grey", "gray"), ("Teal", "cyan"), ("green", "green")):
            start = caption.index(word)
            expected.append((start, start + len(word), color_index(name)))
        assert found == expected

    def test_against_reference_on_generated_captions(self):
        rng = random.Random(0)
        for _ in range(200):
            objects = _random_scene(rng, rng.randint(1, 4))
            level = rng.choice(DESCRIPTION_LEVELS)
            caption, _ = describe_scene(
                objects, (rng.choice(CHROMATIC_COLORS), "striped"), level, rng
            )
            for variant in (caption, caption.upper(), caption.title()):
                assert find_color_words(variant) == _reference_color_words(variant)


class TestSwapColorWords:
    def test_capitalization_and_synonyms(self):
        red, blue, gray, green = (color_index(c) for c in ("red", "blue", "gray", "green"))
        out = swap_color_words("Red, RED, red; a grey and a Grey; green", {red: blue, gray: green})
        assert out == "Blue, BLUE, blue; a green and a Green; green"

    def test_bad_ids(self):
        with pytest.raises(ValueError, match="-3"):
            swap_color_words("red", {0: -3})

    @pytest.mark.parametrize(
        "make_generator",
        [random.Random, lambda s: torch.Generator().manual_seed(s), np.random.default_rng],
    )
    def test_random_swap(self, make_generator):
        rng = random.Random(1)
        for trial in range(100):
            objects = _random_scene(rng, rng.randint(1, 4))
            caption, _ = describe_scene(objects, (color_index("gray"), "striped"), "complete", rng)
            new, mapping = random_color_swap(caption, make_generator(trial))
            assert (new, mapping) == random_color_swap(caption, make_generator(trial))
            old_words, new_words = find_color_words(caption), find_color_words(new)
            assert set(mapping) == {cid for _, _, cid in old_words}
            assert all(src != dst for src, dst in mapping.items())
            assert len(set(mapping.values())) == len(mapping)
            assert all(dst in CHROMATIC_COLORS for dst in mapping.values())
            assert [mapping[c] for _, _, c in old_words] == [c for _, _, c in new_words]
            # Everything but the colour words and their articles is unchanged.
            assert _without_articles(_between_words(caption, old_words)) == _without_articles(
                _between_words(new, new_words)
            )

    def test_swapped_caption_is_the_caption_of_the_recoloured_scene(self):
        rng = random.Random(2)
        for trial in range(200):
            objects = _random_scene(rng, rng.randint(1, 4))
            background = (rng.choice(CHROMATIC_COLORS), "speckled")
            caption, _ = describe_scene(objects, background, "complete", random.Random(trial))
            new, mapping = random_color_swap(caption, random.Random(trial))
            recoloured = [o._replace(color_id=mapping[o.color_id]) for o in objects]
            expected, _ = describe_scene(
                recoloured, (mapping[background[0]], "speckled"), "complete", random.Random(trial)
            )
            assert new == expected  # articles included: "a red ..." -> "an orange ..."

    def test_articles_follow_the_new_colour(self):
        red, orange = color_index("red"), color_index("orange")
        out = swap_color_words(
            "A red box, an orange cup, bread, a  red", {red: orange, orange: red}
        )
        assert out == "An orange box, a red cup, bread, an  orange"

    def test_no_colour_words(self):
        assert random_color_swap("a circle and a star", random.Random(0)) == (
            "a circle and a star",
            {},
        )


class TestSampleLevel:
    def test_frequencies(self):
        rng = random.Random(3)
        probs = (0.5, 0.3, 0.2)
        counts = Counter(sample_level(rng, probs) for _ in range(4000))
        for level, p in zip(DESCRIPTION_LEVELS, probs, strict=True):
            assert abs(counts[level] / 4000 - p) < 4 * math.sqrt(p * (1 - p) / 4000)

    def test_degenerate_and_deterministic(self):
        assert {sample_level(random.Random(s), (0, 0, 1)) for s in range(50)} == {"scarce"}
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert [sample_level(g1) for _ in range(20)] == [sample_level(g2) for _ in range(20)]

    @pytest.mark.parametrize("probs", [(0.5, 0.5), (0.5, 0.6, -0.1), (0.2, 0.2, 0.2)])
    def test_invalid(self, probs):
        with pytest.raises(ValueError, match="probs"):
            sample_level(random.Random(0), probs)

    def test_bad_generator(self):
        with pytest.raises(TypeError, match="generator"):
            sample_level(42)  # type: ignore[arg-type]


class TestDescribeScene:
    def _words(self, caption: str) -> list[int]:
        return [cid for _, _, cid in find_color_words(caption)]

    def test_complete(self):
        rng = random.Random(0)
        for _ in range(200):
            objects = _random_scene(rng, rng.randint(1, 4))
            background = rng.choice(CHROMATIC_COLORS)
            caption, mentioned = describe_scene(objects, (background, "speckled"), "complete", rng)
            assert mentioned == [True] * len(objects)
            assert Counter(self._words(caption)) == Counter(
                [o.color_id for o in objects] + [background]
            )
            assert all(o.noun in caption for o in objects)

    def test_partial(self):
        rng = random.Random(1)
        for _ in range(200):
            n = rng.randint(1, 4)
            objects = _random_scene(rng, n)
            caption, mentioned = describe_scene(objects, (color_index("gray"), ""), "partial", rng)
            assert 1 <= sum(mentioned) <= max(n - 1, 1)
            said = [o.color_id for o, m in zip(objects, mentioned, strict=True) if m]
            assert Counter(self._words(caption)) == Counter(said)  # the background never
            assert all(o.noun in caption for o, m in zip(objects, mentioned, strict=True) if m)

    def test_scarce(self):
        rng = random.Random(2)
        for _ in range(200):
            objects = _random_scene(rng, rng.randint(1, 4))
            caption, mentioned = describe_scene(objects, (0, "striped"), "scarce", rng)
            assert find_color_words(caption) == []
            assert mentioned == [True] * len(objects)
            plural = {"leaf": "leaves"}
            assert all(o.noun in caption or plural.get(o.noun, "?") in caption for o in objects)

    def test_colours_bound_to_their_nouns(self):
        rng = random.Random(3)
        for _ in range(200):
            objects = _random_scene(rng, rng.randint(1, 4), unique_nouns=True)
            caption, _ = describe_scene(objects, None, "complete", rng)
            for o in objects:
                color = COLOR_LEXICON[o.color_id].name
                assert f"{color} {o.noun}" in caption or f"{o.noun} is {color}" in caption, caption

    @pytest.mark.parametrize(
        ("positions", "words"),
        [
            (((0.2, 0.5), (0.8, 0.45)), ("left", "right")),
            (((0.5, 0.1), (0.45, 0.9)), ("top", "bottom")),
        ],
    )
    def test_same_noun_told_apart_by_position(self, positions, words):
        red, blue = color_index("red"), color_index("blue")
        objects = [
            SceneObject("circle", red, positions[0]),
            SceneObject("circle", blue, positions[1]),
        ]
        seen_templates = set()
        for seed in range(40):
            caption, _ = describe_scene(objects, None, "complete", random.Random(seed))
            first = rf"({words[0]} circle is red|red circle (on|at) the {words[0]})"
            second = rf"({words[1]} circle is blue|blue circle (on|at) the {words[1]})"
            assert re.search(first, caption) and re.search(second, caption), caption
            seen_templates.add(re.sub(r"\b(red|blue|left|right|top|bottom)\b", "_", caption))
        assert len(seen_templates) >= 3  # templates vary

    def test_many_same_noun_uses_ordinals(self):
        objects = [SceneObject("star", CHROMATIC_COLORS[i], (0.1 + 0.2 * i, 0.5)) for i in range(4)]
        caption, _ = describe_scene(objects, None, "complete", random.Random(0))
        for i, ordinal in enumerate(("first", "second", "third", "fourth")):
            color = COLOR_LEXICON[CHROMATIC_COLORS[i]].name
            assert f"the {ordinal} star from the left is {color}" in caption

    def test_deterministic(self):
        objects = _random_scene(random.Random(4), 3)
        for level in DESCRIPTION_LEVELS:
            outs = [
                describe_scene(objects, (1, "striped"), level, random.Random(9)) for _ in range(3)
            ]
            assert outs[0] == outs[1] == outs[2]

    def test_invalid(self):
        objects = [SceneObject("circle", 0, (0.5, 0.5))]
        with pytest.raises(ValueError, match="level"):
            describe_scene(objects, None, "verbose", random.Random(0))
        with pytest.raises(ValueError, match="at least one object"):
            describe_scene([], None, "complete", random.Random(0))
        with pytest.raises(ValueError, match="orange"):
            describe_scene(
                [SceneObject("orange", 0, (0.5, 0.5))], None, "complete", random.Random(0)
            )
        with pytest.raises(ValueError, match="42"):
            describe_scene(
                [SceneObject("circle", 42, (0.5, 0.5))], None, "complete", random.Random(0)
            )


@pytest.mark.parametrize(
    ("caption", "scarce"),
    [
        ("a red circle and a blue square", "a circle and a square"),
        ("an orange ball", "a ball"),
        ("a red apple on a striped green background", "an apple on a striped background"),
        ("the left circle is red and the right circle is blue, and the background is green",
         "the left circle and the right circle, and the background"),
        ("a red, white and blue flag", "a flag"),
        ("A man in a GRAY suit.", "A man in a suit."),
        ("Red-haired woman", "haired woman"),
        ("a shape", "a shape"),
        ("Pink", ""),
    ],
)  # fmt: skip
def test_remove_color_words(caption, scarce):
    assert remove_color_words(caption) == scarce


def test_removing_colours_from_scene_captions_leaves_every_noun_and_no_colour():
    rng = random.Random(0)
    for trial in range(200):
        n = 1 + trial % 4
        objects = [
            SceneObject(
                rng.choice(NOUNS), rng.choice(CHROMATIC_COLORS), (rng.random(), rng.random())
            )
            for _ in range(n)
        ]
        caption, _ = describe_scene(objects, (color_index("gray"), "striped"), "complete", rng)
        scarce = remove_color_words(caption)
        assert find_color_words(scarce) == [], (caption, scarce)
        for obj in objects:
            assert obj.noun in scarce or obj.noun[:-1] in scarce, (caption, scarce)
        assert "  " not in scarce and " ," not in scarce
