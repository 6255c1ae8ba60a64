"""Colorizing real folders and in-memory images (``chromalab.inference``): the aspect ratio and
full-resolution L kept, batches that change nothing, per-image captions, the folder tree,
resuming, side-by-side and JPEG output, caption checks, and the Python API."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import chromalab
from chromalab.color import rgb_to_lab
from chromalab.inference import (
    MAX_CAPTION_CHARS,
    canvas_region,
    clean_caption,
    colorize_jobs,
    plan_jobs,
    read_captions,
)
from chromalab.io import load_image


class LightnessAsColor:
    """Predicts a = (L - 50) / 4, b = 0 at the canvas resolution: where the output's colour comes
    from on the canvas shows in the result. Records its calls."""

    input_size = 32
    uses_captions = True

    def __init__(self):
        self.calls = []

    def colorize(self, l, captions=None):
        self.calls.append((tuple(l.shape), captions))
        return torch.cat(((l - 50) / 4, torch.zeros_like(l)), dim=1)


def _gradient(path, size=(60, 30), vertical=False):
    """A grey ramp (left to right, or top to bottom) as an RGB file of ``size`` (W, H)."""
    w, h = size
    ramp = np.linspace(20, 230, h if vertical else w)
    array = np.repeat(ramp[:, None], w, 1) if vertical else np.repeat(ramp[None], h, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([array] * 3, -1).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("size, vertical", [((60, 30), True), ((24, 72), False)])
def test_aspect_ratio_and_full_resolution_l_are_kept(tmp_path, size, vertical):
    source = _gradient(tmp_path / "in" / "ramp.png", size, vertical)
    model = LightnessAsColor()
    written, failed = colorize_jobs(model, plan_jobs([source], tmp_path / "out", caption="x"),
                                    progress=False)  # fmt: skip
    assert (written, failed) == (1, [])
    assert model.calls[0][0] == (1, 1, 32, 32)  # the square canvas
    lab = rgb_to_lab(load_image(tmp_path / "out" / "ramp.png")[None])[0]
    original = rgb_to_lab(load_image(source)[None])[0, 0]
    assert lab.shape[-2:] == original.shape  # full resolution
    assert (lab[0] - original).abs().median() < 1.0  # the input L kept
    # the colour follows the image's own lightness, not the canvas padding: the crop is right
    a = lab[1].flatten().numpy()
    assert np.corrcoef(a, original.flatten().numpy())[0, 1] > 0.98  # uncropped: 0.89
    assert canvas_region((30, 60), 32) == (16, 32) and canvas_region((72, 24), 32) == (32, 11)


def test_batches_change_nothing_and_the_tree_is_kept(tmp_path):
    for i, size in enumerate([(60, 30), (30, 60), (40, 40)]):
        _gradient(tmp_path / "in" / ("sub" if i else "") / f"img{i}.png", size, bool(i % 2))
    (tmp_path / "in" / "sub" / "broken.jpg").write_text("not an image")
    outputs = {}
    for batch in (1, 3):
        jobs = plan_jobs([tmp_path / "in"], tmp_path / f"out{batch}", caption="a red ramp")
        model = LightnessAsColor()
        written, failed = colorize_jobs(model, jobs, batch_size=batch, num_workers=batch - 1,
                                        progress=False)  # fmt: skip
        assert written == 3 and [(p.name, r) for p, r in failed][0][0] == "broken.jpg"
        # batch 3: [img0, broken, img1] (the broken one skipped) and [img2]
        assert [shape[0] for shape, _ in model.calls] == ([1, 1, 1] if batch == 1 else [2, 1])
        outputs[batch] = {
            p.relative_to(tmp_path / f"out{batch}").as_posix(): np.asarray(Image.open(p))
            for p in sorted((tmp_path / f"out{batch}").rglob("*.png"))
        }
    assert list(outputs[1]) == ["img0.png", "sub/img1.png", "sub/img2.png"]
    for name, image in outputs[1].items():
        assert np.array_equal(image, outputs[3][name]), name


def test_captions_per_file_skip_existing_side_by_side_and_jpeg(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _gradient(tmp_path / "in" / name)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"a.png": "a red ramp", "b.png": "a blue ramp"}))
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out", "jpg", None, read_captions(captions))
    model = LightnessAsColor()
    written, failed = colorize_jobs(model, jobs, batch_size=4, side_by_side=True,
                                    progress=False)  # fmt: skip
    assert written == 2 and [(p.name, r) for p, r in failed] == [
        ("c.png", "no caption for this file")
    ]
    assert model.calls[0][1] == ["a red ramp", "a blue ramp"]
    out = Image.open(tmp_path / "out" / "a.jpg")
    assert out.format == "JPEG" and out.size == (120, 30)  # grey input beside the result
    # resuming: done files are skipped, the fallback caption covers the rest
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out", "jpg", "a green ramp",
                     read_captions(captions))  # fmt: skip
    model = LightnessAsColor()
    assert colorize_jobs(model, jobs, skip_existing=True, progress=False) == (1, [])
    assert model.calls == [((1, 1, 32, 32), ["a green ramp"])]


def test_caption_files(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"file": "a.png", "caption": "red"}\n\n')
    (tmp_path / "c.csv").write_text('file,caption\na.png,"red, with a comma"\n')
    (tmp_path / "l.json").write_text('[{"file": "sub/a.png", "caption": "red"}]')
    assert read_captions(tmp_path / "c.jsonl") == {"a.png": "red"}
    assert read_captions(tmp_path / "c.csv") == {"a.png": "red, with a comma"}
    assert read_captions(tmp_path / "l.json") == {"sub/a.png": "red"}
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "bad.jsonl").write_text('{"file": "a.png"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_captions(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="record 1 needs 'file' and 'caption'"):
        read_captions(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=".json, .jsonl or .csv"):
        read_captions(_write(tmp_path / "c.txt"))
    with pytest.raises(FileNotFoundError):
        read_captions(tmp_path / "none.json")


def _write(path):
    path.write_text("x")
    return path


def test_bad_captions_have_defined_results(caplog):
    with pytest.raises(ValueError, match="empty"):
        clean_caption("   ", required=True)
    with pytest.raises(ValueError, match="give one"):
        clean_caption(None, required=True)
    assert clean_caption("", required=False) is None  # a model without captions ignores it
    with caplog.at_level(logging.WARNING):
        long = clean_caption("red " * 1250, required=True)
    assert len(long) <= MAX_CAPTION_CHARS and long.endswith("red") and "cut" in caplog.text
    assert clean_caption("un vélo rouge 🚲", required=True) == "un vélo rouge 🚲"
    with caplog.at_level(logging.INFO):
        assert clean_caption("a  car\n", required=True) == "a car"
    assert "scarce" in caplog.text


def test_python_api(tmp_path):
    model = LightnessAsColor()
    image = Image.open(_gradient(tmp_path / "r.png", (50, 20)))
    out = chromalab.colorize(image, model=model, caption="a red ramp")
    assert isinstance(out, Image.Image) and out.size == (50, 20)
    many = chromalab.colorize([image, tmp_path / "r.png"], model=model,
                              captions=["a red ramp", "a blue ramp"], output="pt")  # fmt: skip
    assert [t.shape for t in many] == [(3, 20, 50)] * 2
    assert model.calls[-1][1] == ["a red ramp", "a blue ramp"]
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        chromalab.colorize([image, image], model=model, captions=["x"])
    with pytest.raises(ValueError, match="caption"):
        chromalab.colorize(image, model=model)


def test_bf16_is_opt_in_autocast(tmp_path):
    seen = []

    class Recorder(LightnessAsColor):
        def colorize(self, l, captions=None):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().colorize(l, captions)

    source = _gradient(tmp_path / "r.png")
    for precision in ("fp32", "bf16"):
        jobs = plan_jobs([source], tmp_path / precision, caption="x")
        colorize_jobs(Recorder(), jobs, progress=False, precision=precision)
    assert seen == [False, True]
    with pytest.raises(ValueError, match="precision"):
        chromalab.colorize(Image.open(source), model=Recorder(), caption="x", precision="fp8")


def test_pil_images_read_as_files_do(tmp_path):
    from chromalab.io import from_pil

    rgba = Image.new("RGBA", (5, 4), (200, 10, 10, 0))  # fully transparent: white, as on disk
    rgba.save(tmp_path / "t.png")
    assert torch.equal(from_pil(Image.open(tmp_path / "t.png")), load_image(tmp_path / "t.png"))
    assert torch.equal(from_pil(rgba), torch.ones(3, 4, 5))


class Painter(LightnessAsColor):
    """An :class:`~chromalab.models.Explainer`: its map is red on the image's region of the
    canvas and blue on the padding (the canvas repeats the image's last column and row)."""

    def __init__(self, region):
        super().__init__()
        self.region = region

    def explain(self, l, captions=None):
        maps = torch.zeros(l.shape[0], 3, 8, 8)
        maps[:, 2] = 1
        h, w = self.region
        maps[:, :, :h, :w] = torch.tensor([1.0, 0, 0])[:, None, None]
        return self.colorize(l, captions), [{"paint": m} for m in maps]


def test_explanations_are_cropped_to_the_image_and_laid_over_its_grey(tmp_path):
    image = Image.open(_gradient(tmp_path / "r.png", (60, 30)))  # W 60, H 30: region 4 x 8 of 8
    model = Painter(region=(4, 8))
    result, maps = chromalab.colorize(image, model=model, caption="a red ramp", explain=True,
                                      output="pt")  # fmt: skip
    assert result.shape == (3, 30, 60) and list(maps) == ["paint"]
    shown = maps["paint"]
    assert shown.shape == (3, 30, 60)
    grey = rgb_to_lab(load_image(tmp_path / "r.png")[None])[0, 0] / 100
    # half red over the grey everywhere: no blue from the padding
    assert torch.allclose(shown[0], 0.5 * grey + 0.5, atol=0.02)
    assert torch.allclose(shown[2], 0.5 * grey, atol=0.02)
    plain = chromalab.colorize(image, model=model, caption="a red ramp", output="pt")
    assert torch.equal(plain, result)
    with pytest.raises(ValueError, match="no explanation"):
        chromalab.colorize(image, model=LightnessAsColor(), caption="x", explain=True)
