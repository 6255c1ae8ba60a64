"""Tests for chromalab.metrics.caption: CaptionConsistency and caption manipulation."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.utils.data import default_collate

from chromalab.bins import ABBins
from chromalab.color import lab_to_rgb
from chromalab.data.capshapes import CapShapes
from chromalab.metrics.caption import (
    CaptionConsistency,
    manipulate_batch,
    manipulation_accuracy,
    output_grid_ceiling,
)
from chromalab.text import (
    CHROMATIC_COLORS,
    COLOR_LEXICON,
    DESCRIPTION_LEVELS,
    color_index,
    find_color_words,
)

NAMES = (
    "accuracy",
    "accuracy_complete",
    "accuracy_partial",
    "accuracy_scarce",
    "unmentioned_canonical_accuracy",
)


def reference(pred_ab, masks, color_ids, mentioned, levels, canonical=None) -> dict[str, float]:
    """Direct transcription of the definition: one object at a time, plain Python maths."""
    batch, objects = color_ids.shape
    height, width = pred_ab.shape[-2:]
    in_h, in_w = masks.shape[-2:]
    correct = dict.fromkeys(NAMES, 0)
    total = dict.fromkeys(NAMES, 0)
    for b in range(batch):
        for k in range(objects):
            cid = int(color_ids[b, k])
            if cid < 0:
                continue
            sum_a = sum_b = 0.0
            area = 0
            for y in range(height):
                for x in range(width):
                    # nearest resize: source pixel floor(dst * in / out)
                    if masks[b, k, (y * in_h) // height, (x * in_w) // width]:
                        sum_a += float(pred_ab[b, 0, y, x])
                        sum_b += float(pred_ab[b, 1, y, x])
                        area += 1
            if area == 0:
                continue
            mean = (sum_a / area, sum_b / area)
            distances = [math.dist(mean, COLOR_LEXICON[c].ab) for c in CHROMATIC_COLORS]
            ok = CHROMATIC_COLORS[distances.index(min(distances))] == cid
            groups = []
            if mentioned[b, k]:
                groups += ["accuracy", f"accuracy_{levels[b]}"]
            elif canonical is not None and canonical[b, k]:
                groups.append("unmentioned_canonical_accuracy")
            for group in groups:
                correct[group] += ok
                total[group] += 1
    return {n: correct[n] / total[n] if total[n] else float("nan") for n in NAMES}


def random_inputs(seed: int, size=(12, 12), pred_size=(12, 12), batch=6, objects=4):
    """Rectangular masks; predictions paint each rectangle with its own colour centre or,
    half of the time, another one, plus noise; then the masks get pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    count = len(CHROMATIC_COLORS)
    pick = torch.randint(count, (batch, objects), generator=gen)
    ids = torch.tensor(CHROMATIC_COLORS)[pick]
    ids[torch.rand(batch, objects, generator=gen) < 0.2] = -1
    centres = torch.tensor([COLOR_LEXICON[c].ab for c in CHROMATIC_COLORS])
    other = torch.randint(count, (batch, objects), generator=gen)
    painted = torch.where(torch.rand(batch, objects, generator=gen) < 0.5, pick, other)
    masks = torch.zeros(batch, objects, *size, dtype=torch.bool)
    pred = 20 * torch.randn(batch, 2, *pred_size, generator=gen)
    for b in range(batch):
        for k in range(objects):
            y0, x0 = (int(torch.randint(n // 2, (1,), generator=gen)) for n in size)
            y1, x1 = (int(torch.randint(n // 2, n + 1, (1,), generator=gen)) for n in size)
            masks[b, k, y0:y1, x0:x1] = True
            sy, sx = (pred_size[0] / size[0], pred_size[1] / size[1])
            region = pred[b, :, int(y0 * sy) : int(y1 * sy), int(x0 * sx) : int(x1 * sx)]
            region += centres[painted[b, k]].view(2, 1, 1)
    masks &= torch.rand(masks.shape, generator=gen) < 0.8
    masks[0, 1] = False  # an empty mask is skipped
    mentioned = torch.rand(batch, objects, generator=gen) < 0.6
    canonical = torch.rand(batch, objects, generator=gen) < 0.5
    levels = [DESCRIPTION_LEVELS[int(i)] for i in torch.randint(3, (batch,), generator=gen)]
    return pred, masks, ids, mentioned, levels, canonical


def assert_matches(result: dict, expected: dict) -> None:
    assert set(result) == set(NAMES)
    for name in NAMES:
        value = float(result[name])
        assert (math.isnan(value) and math.isnan(expected[name])) or math.isclose(
            value, expected[name], abs_tol=1e-6
        ), name


@pytest.fixture(scope="module")
def batch() -> dict:
    ds = CapShapes(length=64, size=32, seed=4)
    return default_collate([ds[i] for i in range(24)])


def paint(masks: torch.Tensor, color_ids: torch.Tensor) -> torch.Tensor:
    """Predicted ab (B, 2, H, W): each object's mask painted with its colour centre."""
    pred = torch.zeros(masks.shape[0], 2, *masks.shape[-2:])
    for b in range(masks.shape[0]):
        for k in range(masks.shape[1]):
            if color_ids[b, k] >= 0:
                ab = torch.tensor(COLOR_LEXICON[int(color_ids[b, k])].ab)
                pred[b][:, masks[b, k]] = ab[:, None]
    return pred


class TestCaptionConsistency:
    @pytest.mark.parametrize("seed", range(4))
    def test_matches_reference(self, seed):
        inputs = random_inputs(seed)
        metric = CaptionConsistency()
        metric.update(*inputs)
        expected = reference(*inputs)
        assert_matches(metric.compute(), expected)
        assert 0 < expected["accuracy"] < 1  # the random case has both outcomes

    @pytest.mark.parametrize(("size", "pred_size"), [((16, 16), (8, 8)), ((8, 12), (24, 24))])
    def test_resizes_masks(self, size, pred_size):
        inputs = random_inputs(7, size=size, pred_size=pred_size)
        metric = CaptionConsistency()
        metric.update(*inputs)
        assert_matches(metric.compute(), reference(*inputs))

    def test_accumulates_like_ddp_sum(self):
        first, second = random_inputs(1), random_inputs(2)
        whole = CaptionConsistency()
        for inputs in (first, second):
            whole.update(*inputs)
        halves = [CaptionConsistency(), CaptionConsistency()]
        halves[0].update(*first)
        halves[1].update(*second)
        # DDP sums every state across processes; emulate it by summing the states.
        halves[0].correct += halves[1].correct
        halves[0].total += halves[1].total
        assert_matches(halves[0].compute(), {k: float(v) for k, v in whole.compute().items()})
        assert all(name in ("correct", "total") for name in whole._defaults)
        assert all(fx is not None and "sum" in fx.__name__ for fx in whole._reductions.values())

    def test_perfect_predictions(self, batch):
        metric = CaptionConsistency()
        pred = paint(batch["masks"], batch["color_ids"])
        metric.update(
            pred,
            batch["masks"],
            batch["color_ids"],
            batch["mentioned"],
            batch["level"],
            batch["canonical"],
        )
        result = metric.compute()
        for name in NAMES:
            assert float(result[name]) == 1.0, name
        assert int(metric.total[0]) == int(((batch["color_ids"] >= 0) & batch["mentioned"]).sum())

    def test_grey_predictions(self, batch):
        metric = CaptionConsistency()
        pred = torch.zeros(len(batch["level"]), 2, 32, 32)
        metric.update(pred, batch["masks"], batch["color_ids"], batch["mentioned"], batch["level"])
        # Grey (0, 0) is nearest to the chromatic centre of smallest chroma.
        closest = min(CHROMATIC_COLORS, key=lambda c: math.hypot(*COLOR_LEXICON[c].ab))
        said = batch["color_ids"][(batch["color_ids"] >= 0) & batch["mentioned"]]
        expected = (said == closest).float().mean()
        torch.testing.assert_close(metric.compute()["accuracy"], expected)
        assert math.isnan(float(metric.compute()["unmentioned_canonical_accuracy"]))

    def test_nan_for_missing_levels(self):
        pred, masks, ids, mentioned, _, canonical = random_inputs(3)
        metric = CaptionConsistency()
        metric.update(pred, masks, ids, mentioned, ["partial"] * 6, canonical)
        result = metric.compute()
        assert math.isnan(float(result["accuracy_complete"])) and math.isnan(
            float(result["accuracy_scarce"])
        )
        assert float(result["accuracy_partial"]) == float(result["accuracy"])

    def test_errors(self):
        pred, masks, ids, mentioned, levels, _ = random_inputs(0)
        metric = CaptionConsistency()
        with pytest.raises(ValueError, match=r"\(6, 3, 12, 12\)"):
            metric.update(pred[:, :1].expand(-1, 3, -1, -1), masks, ids, mentioned, levels)
        with pytest.raises(ValueError, match="bool"):
            metric.update(pred, masks.float(), ids, mentioned, levels)
        with pytest.raises(ValueError, match="color_ids"):
            metric.update(pred, masks, ids[:, :2], mentioned, levels)
        with pytest.raises(ValueError, match="verbose"):
            metric.update(pred, masks, ids, mentioned, ["verbose"] * 6)
        gray = ids.clone()
        gray[1, 0] = color_index("gray")
        masks = masks.clone()
        masks[1, 0, 0, 0] = True
        with pytest.raises(ValueError, match=str(color_index("gray"))):
            metric.update(pred, masks, gray, mentioned, levels)


class TestManipulation:
    def test_manipulate_batch(self, batch):
        out = manipulate_batch(batch, random.Random(0))
        assert out is not batch and out["rgb"] is batch["rgb"]
        changed = 0
        for b, level in enumerate(batch["level"]):
            mapping = out["color_swaps"][b]
            old, new = batch["color_ids"][b], out["color_ids"][b]
            said = (old >= 0) & batch["mentioned"][b]
            if level == "scarce":
                assert mapping == {} and out["caption"][b] == batch["caption"][b]
            for k in range(len(old)):
                if said[k] and level != "scarce":
                    assert int(new[k]) == mapping[int(old[k])] != int(old[k])
                    changed += 1
                else:
                    assert int(new[k]) == int(old[k])
            words = sorted(c for _, _, c in find_color_words(out["caption"][b]))
            expected = new[said].tolist() if level != "scarce" else []
            background = int(out["background_color_id"][b])
            if level == "complete":
                expected.append(background)
                assert background == mapping[int(batch["background_color_id"][b])]
            else:
                assert background == int(batch["background_color_id"][b])
            assert words == sorted(expected)
        assert changed > 10

    def test_oracle_and_caption_blind_colorizers(self, batch):
        def oracle(manipulated):  # follows the (new) caption colours
            return paint(manipulated["masks"], manipulated["color_ids"])

        def caption_blind(manipulated):  # paints the original colours whatever the caption
            return paint(batch["masks"], batch["color_ids"])

        assert float(manipulation_accuracy(oracle, batch, random.Random(1))) == 1.0
        assert float(manipulation_accuracy(caption_blind, batch, random.Random(1))) == 0.0

    def test_nan_without_colour_words(self, batch):
        scarce = dict(batch, level=["scarce"] * len(batch["level"]))
        scarce["caption"] = ["a picture of some shapes"] * len(batch["level"])
        result = manipulation_accuracy(
            lambda m: paint(m["masks"], m["color_ids"]), scarce, random.Random(0)
        )
        assert math.isnan(float(result))


def _thin_object_scene() -> dict:
    """16x16: object 0 red on columns 0-6, object 1 a blue 1-pixel column at x = 7."""
    red, blue = color_index("red"), color_index("blue")
    lab = torch.zeros(1, 3, 16, 16)
    lab[:, 0] = 50.0
    lab[0, 1:, :, :7] = torch.tensor(COLOR_LEXICON[red].ab)[:, None, None]
    lab[0, 1:, :, 7] = torch.tensor(COLOR_LEXICON[blue].ab)[:, None]
    masks = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    masks[0, 0, :, :7] = True
    masks[0, 1, :, 7] = True
    ids = torch.tensor([[red, blue]])
    return {"rgb": lab_to_rgb(lab), "masks": masks, "color_ids": ids, "level": ["complete"]}


def test_output_grid_ceiling_loses_what_a_coarse_grid_blurs_away():
    scene = _thin_object_scene()
    assert float(output_grid_ceiling([scene], 1)) == 1.0
    # x 4-7 is one cell at stride 4: three red columns outvote the blue one.
    assert float(output_grid_ceiling([scene], 4)) == 0.5
    assert float(output_grid_ceiling([scene], 4, ABBins.grid(25, 10))) == 0.5


def test_output_grid_ceiling_on_capshapes_rises_with_the_scene_resolution():
    def batches(size):
        scenes = CapShapes(length=64, size=size, seed=1)
        items = [scenes[i] for i in range(len(scenes))]
        return [default_collate(items[i : i + 32]) for i in (0, 32)]

    bins = ABBins.grid(25, 10)
    assert float(output_grid_ceiling(batches(64), 1, bins)) == pytest.approx(1.0, abs=0.01)
    coarse = float(output_grid_ceiling(batches(64), 4, bins))
    fine = float(output_grid_ceiling(batches(128), 4, bins))  # the same scenes, drawn larger
    assert coarse < 0.99
    assert fine > coarse


def test_output_grid_ceiling_rejects_bad_strides():
    scene = _thin_object_scene()
    with pytest.raises(ValueError, match="stride must be"):
        output_grid_ceiling([scene], 0)
    with pytest.raises(ValueError, match="not a multiple"):
        output_grid_ceiling([scene], 5)
    with pytest.raises(ValueError, match="no batches"):
        output_grid_ceiling([], 4)
