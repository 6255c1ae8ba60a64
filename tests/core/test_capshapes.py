"""Tests for chromalab.data.capshapes: the CapShapes dataset and its exporter."""

from __future__ import annotations

import json
import math
import re
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from chromalab.color import lab_to_rgb, rgb_to_lab
from chromalab.data import capshapes
from chromalab.data.capshapes import (
    CANONICAL_COLORS,
    OBJECT_L_RANGE,
    ONE_COLOR_PER_SHAPE,
    SHAPES,
    CapShapes,
    export_capshapes,
    gamut_max_chroma,
)
from chromalab.text import (
    CHROMATIC_COLORS,
    COLOR_LEXICON,
    DESCRIPTION_LEVELS,
    color_index,
    find_color_words,
)

CENTERS = np.array([COLOR_LEXICON[i].ab for i in CHROMATIC_COLORS])


@pytest.fixture(scope="module")
def dataset() -> CapShapes:
    return CapShapes(length=1_000, size=64, seed=0)


@pytest.fixture(scope="module")
def balanced_objects() -> dict[str, np.ndarray]:
    """Per-object colour id, mean L and mean ab of 500 scenes with uniform colours."""
    ds = CapShapes(length=500, size=64, seed=11, canonical_prob=0.0)
    ids, mean_l, mean_ab, hue_spread = [], [], [], []
    for i in range(len(ds)):
        item = ds[i]
        lab = rgb_to_lab(item["rgb"].double())
        for k in range(ds.max_objects):
            if item["color_ids"][k] < 0:
                continue
            pixels = lab[:, item["masks"][k]]
            ids.append(int(item["color_ids"][k]))
            mean_l.append(pixels[0].mean().item())
            mean_ab.append(pixels[1:].mean(1).numpy())
            centre = COLOR_LEXICON[ids[-1]].ab
            angle = torch.atan2(pixels[2], pixels[1]) - math.atan2(centre[1], centre[0])
            hue_spread.append(
                torch.remainder(angle + math.pi, 2 * math.pi).sub(math.pi).abs().max().item()
            )
    return {
        "ids": np.array(ids),
        "mean_l": np.array(mean_l),
        "mean_ab": np.stack(mean_ab),
        "hue_spread": np.degrees(np.array(hue_spread)),
    }


class TestItems:
    def test_keys_shapes_dtypes(self, dataset):
        item = dataset[3]
        k, s = dataset.max_objects, dataset.size
        assert item["rgb"].shape == (3, s, s) and item["rgb"].dtype == torch.float32
        assert item["rgb"].min() >= 0.0 and item["rgb"].max() <= 1.0
        assert item["masks"].shape == (k, s, s) and item["masks"].dtype == torch.bool
        for key, dtype in (("color_ids", torch.long), ("shape_ids", torch.long)):
            assert item[key].shape == (k,) and item[key].dtype == dtype
        for key in ("mentioned", "canonical"):
            assert item[key].shape == (k,) and item[key].dtype == torch.bool
        assert item["background_color_id"].shape == () and item["index"] == 3
        assert isinstance(item["caption"], str) and item["level"] in DESCRIPTION_LEVELS

    def test_padding_and_masks(self, dataset):
        counts = Counter()
        for i in range(200):
            item = dataset[i]
            real = item["color_ids"] >= 0
            n = int(real.sum())
            counts[n] += 1
            assert real.tolist() == [True] * n + [False] * (dataset.max_objects - n)
            assert torch.equal(item["shape_ids"] >= 0, real)
            assert not item["mentioned"][~real].any() and not item["canonical"][~real].any()
            assert not item["masks"][~real].any()
            assert (item["masks"][real].sum((1, 2)) >= 15).all()  # every object is visible
            assert item["masks"].sum(0).max() <= 1  # visible parts are disjoint
            assert set(item["color_ids"][real].tolist()) <= set(CHROMATIC_COLORS)
        assert set(counts) == {1, 2, 3, 4}

    def test_min_objects_crowds_the_scenes(self):
        ds = CapShapes(length=200, size=64, min_objects=3)
        counts = Counter(int((ds[i]["color_ids"] >= 0).sum()) for i in range(200))
        assert counts[3] > 60 and counts[4] > 60  # uniform over 3..4
        assert counts[3] + counts[4] >= 196  # only the rare unplaceable object is dropped

    def test_shared_noun_prob_pairs_the_shapes(self, dataset):
        def pairs(ds):
            shapes = [[s for s in ds[i]["shape_ids"].tolist() if s >= 0] for i in range(200)]
            return sum(len(s) - len(set(s)) for s in shapes), shapes

        base, _ = pairs(CapShapes(length=200, size=64, min_objects=3))
        paired, shapes = pairs(CapShapes(length=200, size=64, min_objects=3, shared_noun_prob=0.7))
        assert paired > 2 * base and paired > 150  # most 3-4 object scenes now share a noun
        assert max(max(Counter(s).values()) for s in shapes) == 2  # still at most two per shape
        # the captions tell the pair apart by position
        item = next(
            it
            for it in (CapShapes(length=50, size=64, min_objects=4, shared_noun_prob=1.0)[i]
                       for i in range(50))
            if it["level"] == "complete"
        )  # fmt: skip
        assert re.search(r"\b(left|right|top|bottom)\b", item["caption"])
        # off (the default) leaves every scene as it was
        off = CapShapes(length=200, size=64, shared_noun_prob=0.0)
        for i in (0, 3, 17):
            assert off[i]["caption"] == dataset[i]["caption"]
            assert torch.equal(off[i]["rgb"], dataset[i]["rgb"])

    def test_counterfactual_pairs_differ_only_in_the_binding(self, dataset):
        ds = CapShapes(length=400, size=32, seed=5, counterfactual_pairs=True)
        assert ds.group_size == 2 and dataset.group_size == 1
        seen = Counter()
        for k in range(100):
            a, b = ds[2 * k], ds[2 * k + 1]
            assert (a["index"], b["index"]) == (2 * k, 2 * k + 1)
            # the same grey image, objects, layout, level and caption words
            assert torch.allclose(rgb_to_lab(a["rgb"])[0], rgb_to_lab(b["rgb"])[0], atol=1e-3)
            for key in ("masks", "shape_ids", "mentioned", "background_color_id"):
                assert torch.equal(a[key], b[key])
            assert a["level"] == b["level"]

            def blanked(caption: str) -> str:
                for start, end, _ in reversed(find_color_words(caption)):
                    caption = caption[:start] + "_" + caption[end:]
                return re.sub(r"\ban\b", "a", caption)  # "an orange", "a red"

            assert blanked(a["caption"]) == blanked(b["caption"])
            n = int((a["color_ids"] >= 0).sum())
            old, new = a["color_ids"][:n], b["color_ids"][:n]
            named = a["mentioned"][:n]
            assert torch.equal(old[~named], new[~named])  # unnamed objects keep their colour
            assert set(new.tolist()) <= set(CHROMATIC_COLORS)
            shapes = b["shape_ids"][:n].tolist()
            own = [color_index(CANONICAL_COLORS.get(SHAPES[s], "gray")) for s in shapes]
            assert b["canonical"][:n].tolist() == [
                c == o for c, o in zip(new.tolist(), own, strict=True)
            ]
            if a["level"] == "scarce":
                assert torch.equal(a["rgb"], b["rgb"]) and a["caption"] == b["caption"]
                seen["scarce"] += 1
                continue
            assert bool((old[named] != new[named]).all())  # every named object changes colour
            if len(set(old[named].tolist())) > 1:  # the caption's colour words stay the same
                assert set(old[named].tolist()) == set(new[named].tolist())
                seen["exchanged"] += 1
            else:
                seen["recoloured"] += 1
            # the image shows the new colours: object hues follow the twin's colour ids
            for k2 in range(n):
                ab = rgb_to_lab(b["rgb"].double())[1:, b["masks"][k2]].mean(1).numpy()
                nearest = CHROMATIC_COLORS[int(np.argmin(((CENTERS - ab) ** 2).sum(1)))]
                assert nearest == int(new[k2]) or b["masks"][k2].sum() < 4
        assert min(seen["scarce"], seen["exchanged"], seen["recoloured"]) >= 5

    def test_variety(self, dataset):
        shapes = Counter(s for i in range(200) for s in dataset[i]["shape_ids"].tolist() if s >= 0)
        assert len(shapes) == len(SHAPES) >= 5
        assert len({dataset[i]["level"] for i in range(30)}) == 3

    def test_default_collate(self, dataset):
        batch = next(iter(DataLoader(dataset, batch_size=4)))
        assert batch["rgb"].shape == (4, 3, 64, 64) and batch["masks"].shape == (4, 4, 64, 64)
        assert batch["background_color_id"].shape == (4,)
        assert len(batch["caption"]) == 4 and batch["index"].tolist() == [0, 1, 2, 3]


class TestDeterminism:
    def test_same_index_same_item(self, dataset):
        other = CapShapes(length=10**12, size=64, seed=0)
        for i in (7, 0, 7, 500):
            a, b = dataset[i], other[i]
            assert a["caption"] == b["caption"]
            assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["masks"], b["masks"])

    def test_global_rng_untouched(self, dataset):
        torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
        before = dataset[5]
        assert torch.equal(torch.get_rng_state(), torch_state)
        assert np.array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
        torch.manual_seed(123)
        assert torch.equal(dataset[5]["rgb"], before["rgb"])

    def test_seed_changes_items(self):
        a, b = CapShapes(length=5, seed=0)[2], CapShapes(length=5, seed=1)[2]
        assert not torch.equal(a["rgb"], b["rgb"])

    def test_huge_length_and_range(self):
        ds = CapShapes(length=2**62)
        assert len(ds) == 2**62
        assert ds[2**62 - 1]["rgb"].shape == (3, 64, 64)
        for bad in (2**62, -1):
            with pytest.raises(IndexError, match=str(bad)):
                ds[bad]

    @pytest.mark.parametrize(
        "kwargs",
        [{"length": 0}, {"size": 8}, {"seed": -1}, {"max_objects": 0}, {"canonical_prob": 1.5}]
        + [{"min_objects": 0}, {"min_objects": 5}, {"shared_noun_prob": -0.1}],
    )
    def test_invalid_arguments(self, kwargs):
        with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
            CapShapes(**kwargs)

    def test_invalid_level_probs(self):
        with pytest.raises(ValueError, match="probs"):
            CapShapes(level_probs=(0.5, 0.5, 0.5))


class TestColours:
    def test_mean_ab_closest_to_own_centre(self, balanced_objects):
        nearest = np.array(CHROMATIC_COLORS)[
            ((balanced_objects["mean_ab"][:, None] - CENTERS) ** 2).sum(-1).argmin(1)
        ]
        accuracy = (nearest == balanced_objects["ids"]).mean()
        assert len(nearest) > 1000 and accuracy >= 0.99

    def test_hue_kept_when_chroma_is_reduced(self, balanced_objects):
        # Every object pixel keeps its colour's hue up to the 5 degree jitter: out-of-gamut
        # colours were pulled in along chroma, not clipped in RGB (which turns hues).
        assert balanced_objects["hue_spread"].max() <= 5.5

    def test_lightness_does_not_reveal_colour(self, balanced_objects):
        ids, mean_l = balanced_objects["ids"], balanced_objects["mean_l"]
        assert OBJECT_L_RANGE[0] - 0.5 <= mean_l.min() and mean_l.max() <= OBJECT_L_RANGE[1] + 0.5
        half = len(ids) // 2
        train_ids, train_l, test_ids, test_l = ids[:half], mean_l[:half], ids[half:], mean_l[half:]
        classes = np.array(CHROMATIC_COLORS)
        chance = 1.0 / len(classes)
        # Nearest class mean on the object's mean L.
        means = np.array([train_l[train_ids == c].mean() for c in classes])
        ncm = classes[np.abs(test_l[:, None] - means).argmin(1)]
        assert (ncm == test_ids).mean() <= chance + 0.06
        # Majority colour per lightness bin (a finer Bayes-like classifier).
        bins = np.linspace(*OBJECT_L_RANGE, 11)
        train_bin, test_bin = np.digitize(train_l, bins), np.digitize(test_l, bins)
        majority = {
            b: Counter(train_ids[train_bin == b]).most_common(1)[0][0] for b in set(train_bin)
        }
        binned = np.array([majority.get(b, classes[0]) for b in test_bin])
        assert (binned == test_ids).mean() <= chance + 0.06
        # Per-colour mean lightness barely differs.
        assert np.ptp([mean_l[ids == c].mean() for c in classes]) < 4.0

    def test_gamut_table(self):
        table = gamut_max_chroma()
        assert table.shape == (360, 200)
        gen = torch.Generator().manual_seed(0)
        hue = torch.rand(20_000, generator=gen, dtype=torch.float64) * 360
        lightness = torch.rand(20_000, generator=gen, dtype=torch.float64) * 100
        limit = table[hue.long(), (lightness / 0.5).long()].double()
        angle = torch.deg2rad(hue)
        lab = torch.stack([lightness, limit * torch.cos(angle), limit * torch.sin(angle)])
        rgb = lab_to_rgb(lab.view(3, -1, 1), clip=False)
        assert rgb.min() >= -1e-3 and rgb.max() <= 1 + 1e-3
        # ... and the table is not needlessly small: 10% more chroma leaves the gamut mostly.
        lab = torch.stack(
            [lightness, 1.1 * limit * torch.cos(angle), 1.1 * limit * torch.sin(angle)]
        )
        rgb = lab_to_rgb(lab.view(3, -1, 1), clip=False)
        outside = ((rgb < 0) | (rgb > 1)).any(0).flatten()
        assert outside[limit > 1].float().mean() > 0.9


class TestCanonicalAndCaptions:
    def test_canonical_colours(self):
        ds = CapShapes(length=600, seed=2, canonical_prob=0.8)
        own = {SHAPES.index(s): color_index(c) for s, c in CANONICAL_COLORS.items()}
        flags = []
        for i in range(len(ds)):
            item = ds[i]
            for shape, color, canonical in zip(
                item["shape_ids"].tolist(),
                item["color_ids"].tolist(),
                item["canonical"].tolist(),
                strict=True,
            ):
                if shape < 0:
                    continue
                assert canonical == (color == own.get(shape))
                if shape in own:
                    flags.append(canonical)
        assert abs(np.mean(flags) - 0.8) < 4 * math.sqrt(0.16 / len(flags))
        never = CapShapes(length=100, seed=2, canonical_prob=0.0)
        assert not any(never[i]["canonical"].any() for i in range(100))

    def test_one_colour_per_shape(self):
        colours = [color_index(ONE_COLOR_PER_SHAPE[s]) for s in SHAPES]
        assert sorted(colours) == sorted(CHROMATIC_COLORS)  # a bijection shapes <-> colours
        ds = CapShapes(
            length=40, size=32, seed=3, canonical_prob=1.0, canonical_colors=ONE_COLOR_PER_SHAPE
        )
        for i in range(len(ds)):
            item = ds[i]
            real = item["shape_ids"] >= 0
            expected = [colours[s] for s in item["shape_ids"][real].tolist()]
            assert item["color_ids"][real].tolist() == expected
            assert item["canonical"][real].all()
        # the default table is unchanged, scene for scene
        default, explicit = (
            CapShapes(length=5, seed=4),
            CapShapes(length=5, seed=4, canonical_colors=CANONICAL_COLORS),
        )
        assert all(torch.equal(default[i]["rgb"], explicit[i]["rgb"]) for i in range(5))

    @pytest.mark.parametrize(
        ("table", "message"),
        [({"blob": "red"}, "unknown shape 'blob'"), ({"circle": "gray"}, "'gray' is not one of")],
    )
    def test_bad_canonical_colours(self, table, message):
        with pytest.raises(ValueError, match=message):
            CapShapes(canonical_colors=table)

    def test_captions_match_objects(self, dataset):
        for i in range(300):
            item = dataset[i]
            real = item["color_ids"] >= 0
            said = item["color_ids"][real & item["mentioned"]].tolist()
            words = Counter(c for _, _, c in find_color_words(item["caption"]))
            if item["level"] == "complete":
                assert item["mentioned"][real].all()
                assert words == Counter(said + [int(item["background_color_id"])])
            elif item["level"] == "partial":
                assert words == Counter(said) and len(said) >= 1
                assert len(said) < int(real.sum()) or int(real.sum()) == 1
            else:
                assert not words and item["mentioned"][real].all()
            for shape in item["shape_ids"][real & item["mentioned"]].tolist():
                assert SHAPES[shape][:3] in item["caption"]  # "lea" of leaves

    def test_level_probs(self):
        ds = CapShapes(length=50, level_probs=(0.0, 1.0, 0.0))
        assert {ds[i]["level"] for i in range(50)} == {"partial"}


class TestShapes:
    @pytest.mark.parametrize("index", range(len(SHAPES)))
    def test_mirror_symmetric_and_sized(self, index):
        grid = (torch.arange(201, dtype=torch.float32) - 100) / 80.0
        v, u = torch.meshgrid(grid, grid, indexing="ij")
        inside = capshapes._SHAPE_FUNCTIONS[index](u, v)
        assert torch.equal(inside, inside.flip(1))
        circle = math.pi * 80**2
        assert 0.25 * circle < inside.sum() < 1.1 * circle
        others = [capshapes._SHAPE_FUNCTIONS[j](u, v) for j in range(len(SHAPES)) if j != index]
        for other in others:
            assert (inside ^ other).sum() > 0.1 * inside.sum()  # shapes are distinct


class TestExport:
    def test_folder(self, tmp_path, dataset):
        out = export_capshapes(tmp_path / "folder", n=4, format="folder", start=2)
        lines = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
        assert [line["index"] for line in lines] == [2, 3, 4, 5]
        for line in lines:
            item = dataset[line["index"]]
            real = item["color_ids"] >= 0
            assert line["caption"] == item["caption"] and line["level"] == item["level"]
            assert line["color_ids"] == item["color_ids"][real].tolist()
            assert line["shape_ids"] == item["shape_ids"][real].tolist()
            assert line["mentioned"] == item["mentioned"][real].tolist()
            assert line["canonical"] == item["canonical"][real].tolist()
            image = np.asarray(Image.open(out / line["image"])).astype(np.float32) / 255
            np.testing.assert_allclose(
                image.transpose(2, 0, 1), item["rgb"].numpy(), atol=0.5 / 255 + 1e-6
            )
            masks = np.load(out / "masks" / f"{line['index']:08d}.npz")["masks"]
            np.testing.assert_array_equal(masks, item["masks"][real].numpy())

    def test_jsonl_has_no_masks(self, tmp_path):
        out = export_capshapes(tmp_path / "j", n=2, format="jsonl")
        assert not (out / "masks").exists()
        assert len((out / "captions.jsonl").read_text().splitlines()) == 2
        assert sorted(p.name for p in (out / "images").iterdir()) == [
            "00000000.png",
            "00000001.png",
        ]

    def test_wds(self, tmp_path, dataset):
        out = export_capshapes(tmp_path / "w", n=5, format="wds", shard_size=2)
        shards = sorted(out.glob("*.tar"))
        assert [p.name for p in shards] == [f"capshapes-{k:06d}.tar" for k in range(3)]
        with tarfile.open(shards[1]) as tar:
            names = tar.getnames()
            assert names == [f"{i:08d}.{ext}" for i in (2, 3) for ext in ("png", "txt", "json")]
            caption = tar.extractfile("00000003.txt").read().decode()
            meta = json.loads(tar.extractfile("00000003.json").read())
        assert caption == dataset[3]["caption"] and meta["color_ids"] == [
            c for c in dataset[3]["color_ids"].tolist() if c >= 0
        ]

    def test_unknown_format(self, tmp_path):
        with pytest.raises(ValueError, match="parquet"):
            export_capshapes(tmp_path, n=1, format="parquet")


class TestHeldOutPairs:
    PAIRS = {"circle": ["green", "blue"], "heart": ["red"]}  # heart's canonical colour too

    def _objects(self, scenes):
        for i in range(len(scenes)):
            item = scenes[i]
            for s, c in zip(item["shape_ids"].tolist(), item["color_ids"].tolist(), strict=True):
                if s >= 0:
                    yield SHAPES[s], COLOR_LEXICON[c].name, item

    def test_training_scenes_never_show_a_held_out_pair(self):
        scenes = CapShapes(length=300, size=16, seed=0, held_out_pairs=self.PAIRS)
        seen = {(shape, color) for shape, color, _ in self._objects(scenes)}
        assert not seen & {("circle", "green"), ("circle", "blue"), ("heart", "red")}
        assert {c for s, c in seen if s == "heart"}  # hearts still appear, in other colours
        assert all(
            "held_out" in item and not item["held_out"].any() for *_, item in self._objects(scenes)
        )

    def test_evaluation_scenes_show_only_held_out_pairs_and_flag_them(self):
        scenes = CapShapes(length=300, size=16, seed=1, held_out_pairs=self.PAIRS, held_out="only")
        colours = {"circle": set(), "heart": set()}
        flagged = 0
        for i in range(len(scenes)):
            item = scenes[i]
            for k, (s, c) in enumerate(
                zip(item["shape_ids"].tolist(), item["color_ids"].tolist(), strict=True)
            ):
                if s < 0:
                    continue
                name = SHAPES[s]
                held = name in self.PAIRS
                assert bool(item["held_out"][k]) == held
                flagged += held
                if held:
                    colours[name].add(COLOR_LEXICON[c].name)
        assert colours == {"circle": {"green", "blue"}, "heart": {"red"}} and flagged > 50

    def test_without_the_option_the_scenes_are_unchanged(self):
        a, b = (
            CapShapes(length=20, size=16, seed=4),
            CapShapes(length=20, size=16, seed=4, held_out_pairs={"star": ["cyan"]}),
        )
        changed = [i for i in range(20) if not torch.equal(a[i]["color_ids"], b[i]["color_ids"])]
        # only scenes that drew a cyan star are drawn again
        for i in changed:
            assert any(
                SHAPES[s] == "star" and COLOR_LEXICON[c].name == "cyan"
                for s, c in zip(a[i]["shape_ids"].tolist(), a[i]["color_ids"].tolist(), strict=True)
                if s >= 0
            )
        assert "held_out" not in a[0]

    def test_bad_tables(self):
        with pytest.raises(ValueError, match="unknown shape"):
            CapShapes(length=1, held_out_pairs={"cube": ["red"]})
        with pytest.raises(ValueError, match="not one of"):
            CapShapes(length=1, held_out_pairs={"circle": ["mauve"]})
        with pytest.raises(ValueError, match="no colour left"):
            CapShapes(
                length=1,
                held_out_pairs={"circle": [COLOR_LEXICON[c].name for c in CHROMATIC_COLORS]},
            )
        with pytest.raises(ValueError, match="held_out must be"):
            CapShapes(length=1, held_out="some")
