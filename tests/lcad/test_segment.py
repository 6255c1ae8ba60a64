"""SAM masks for instance-aware sampling on a tiny Segment Anything (random weights, 64-pixel
image encoder): prompts of each kind, automatic masks from attention peaks, errors."""

from __future__ import annotations

import pytest
import torch

from lcad.attention import EditMode
from lcad.segment import SamSegmenter, sam_model_type
from tests.lcad.components import tiny_sam
from tests.lcad.test_pipeline import CAPTIONS, _gens, _grey, _pipeline, _spy_modes


def test_points_boxes_and_their_coordinates_reach_sam():
    seg = SamSegmenter(tiny_sam())
    calls = []
    predict = seg.predictor.predict
    seg.predictor.predict = lambda **kw: calls.append(kw) or predict(**kw)
    l = _grey()[0]  # 32x48
    masks = seg(l, {"a": (10, 20), "b": (5, 5, 30, 30), "c": [(1, 2), (40, 30)]})
    assert list(masks) == ["a", "b", "c"]
    assert all(m.dtype == torch.bool and m.shape == (32, 48) for m in masks.values())
    assert calls[0]["point_coords"].tolist() == [[10, 20]]
    assert calls[0]["point_labels"].tolist() == [1]
    assert calls[1]["box"].tolist() == [5, 5, 30, 30] and "point_coords" not in calls[1]
    assert calls[2]["point_coords"].tolist() == [[1, 2], [40, 30]]
    assert not seg.predictor.is_image_set  # nothing kept for the next image
    with pytest.raises(ValueError, match="a point"):
        seg(l, {"a": (1, 2, 3)})


def test_checkpoints_are_local_and_typed(tmp_path):
    width = lambda c: {"image_encoder.pos_embed": torch.zeros(1, 4, 4, c)}  # noqa: E731
    assert [sam_model_type(width(c)) for c in (768, 1024, 1280)] == ["vit_b", "vit_l", "vit_h"]
    with pytest.raises(ValueError, match="width 32"):
        sam_model_type(tiny_sam().state_dict())
    with pytest.raises(ValueError, match="not a Segment Anything"):
        sam_model_type({})
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        SamSegmenter.from_checkpoint(tmp_path / "sam_vit_b.pth")


def test_pipeline_masks_from_prompts_and_automatic_masks():
    pipe, seg, l = _pipeline(), SamSegmenter(tiny_sam()), _grey()
    kw = dict(num_inference_steps=3, edit_step_size=20.0)
    prompts = [{"red circle": (10, 10), "blue square": (4, 4, 40, 28)}, None]
    from_prompts = pipe(l, CAPTIONS, prompts=prompts, segmenter=seg, generator=_gens(1, 2), **kw)
    masks = [seg(l[0], prompts[0]), None]
    given = pipe(l, CAPTIONS, masks=masks, generator=_gens(1, 2), **kw)
    assert torch.equal(from_prompts.images, given.images)

    auto = lambda: pipe(l, CAPTIONS, auto_masks=True, segmenter=seg, generator=_gens(1, 2), **kw)  # noqa: E731
    first, second = auto(), auto()
    assert torch.equal(first.images, second.images)
    # one mask per colour word: "red" and "blue" in the first caption, "green" in the second
    assert [list(m) for m in first.masks] == [["red", "blue"], ["green"]]
    assert all(m.shape == (32, 48) for per in first.masks for m in per.values())
    plain = pipe(l, CAPTIONS, generator=_gens(1, 2), num_inference_steps=3).images
    assert not torch.allclose(first.images, plain, atol=1e-4)
    with pytest.raises(ValueError, match="segmenter"):
        pipe(l, CAPTIONS, auto_masks=True)
    with pytest.raises(ValueError, match="one of masks, prompts and auto_masks"):
        pipe(l, CAPTIONS, masks=masks, auto_masks=True, segmenter=seg)


def test_automatic_masks_observe_the_first_step_then_edit(monkeypatch):
    """Automatic masks: the first step's guided pass observes the colour words' attention (whose
    peaks prompt SAM, once); the edit (record, then apply) starts at the second step and stops
    after ``edit_steps``."""
    pipe, seg, l = _pipeline(), SamSegmenter(tiny_sam()), _grey()
    calls, segmented = _spy_modes(monkeypatch, pipe), []

    def counted(image, points):
        segmented.append(len(calls))
        return seg(image, points)

    pipe(l, CAPTIONS, auto_masks=True, segmenter=counted, generator=_gens(1, 2),
         num_inference_steps=4, edit_steps=3)  # fmt: skip
    rec, app = EditMode.RECORD, EditMode.APPLY
    expected = [(4, EditMode.OBSERVE), (2, rec), (4, app), (2, rec), (4, app), (4, None)]
    assert [(rows, mode) for rows, _, mode in calls] == expected
    assert segmented == [1, 1]  # SAM, once per image, right after the first UNet call
