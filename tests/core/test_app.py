"""What one press of the app's *Colorize* does (``chromalab.app.run_colorize``), without a
browser or gradio: the browser itself is ``tests/e2e`` (``make test-e2e``)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import torch
from PIL import Image

from chromalab import models
from chromalab.app import ColorizerCache, run_colorize
from chromalab.data import CapShapes
from chromalab.io import save_image
from chromalab.models import ColorizeOption, with_options
from film_color.evaluate import PUBLISHED


@pytest.fixture(scope="module")
def cache():
    return ColorizerCache("cpu")


def test_a_press_gives_input_result_and_film_maps(cache, tmp_path):
    scene = CapShapes(length=1, size=96, seed=5)[0]
    photo = save_image(scene["rgb"], tmp_path / "scene.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no image here")
    gallery, written, status = run_colorize(
        cache, [str(photo), str(broken)], "film_color", "", str(PUBLISHED), scene["caption"],
        out_dir=tmp_path / "out",
    )  # fmt: skip
    labels = [label for _, label in gallery]
    assert labels == ["scene: input", "scene: result", "scene: block 6", "scene: block 7",
                      "scene: block 8"]  # fmt: skip
    assert status.startswith("Colorized 1 photo (scene.png) with film_color")
    assert "**Could not read broken.jpg**" in status
    assert written == [str(tmp_path / "out" / "scene_colorized.png")]
    saved = np.asarray(Image.open(written[0]), dtype=np.float32)
    grey = np.asarray(gallery[0][0], dtype=np.float32)
    assert saved.shape == grey.shape == (96, 96, 3)
    assert np.ptp(grey, axis=-1).max() <= 1  # the input is shown grey
    assert np.ptp(saved, axis=-1).mean() > 20  # the result is coloured
    # the same model object serves the next press; another caption gives other colours
    model = cache.model
    _, again, _ = run_colorize(cache, [str(photo)], "film_color", " ", f" {PUBLISHED} ",
                               "the background is red", out_dir=tmp_path / "again")  # fmt: skip
    assert cache.model is model  # the same paths, typed with spaces around them
    assert not np.array_equal(np.asarray(Image.open(again[0])), saved.astype(np.uint8))


def test_bad_requests_raise_what_the_page_shows(cache, tmp_path):
    photo = str(save_image(torch.rand(3, 20, 20), tmp_path / "p.png"))
    weights = str(PUBLISHED)
    with pytest.raises(ValueError, match="upload"):
        run_colorize(cache, [], "film_color", "", weights, "a red car")
    with pytest.raises(ValueError, match="caption is empty"):
        run_colorize(cache, [photo], "film_color", "", weights, "   ")
    with pytest.raises(FileNotFoundError, match="no weights at"):
        run_colorize(cache, [photo], "film_color", "", str(tmp_path / "missing"), "a red car")
    with pytest.raises(ValueError, match="unknown model"):
        run_colorize(cache, [photo], "nope", "", weights, "a red car")
    # all uploads unreadable: nothing colorized, each named
    bad = tmp_path / "bad.png"
    bad.write_text("text")
    gallery, written, status = run_colorize(cache, [str(bad)], "film_color", "", weights, "red")
    assert gallery == [] and written == []
    assert status.startswith("**Could not read bad.png**: not a recognised image file")


class Sampler:
    """A colorizer with sampling settings, as a diffusion model's: a = (L - 50) / 4 plus
    ``guidance``, at the canvas resolution (where a result's colours come from shows)."""

    input_size, uses_captions = 16, False

    def __init__(self, **options):
        self.steps, self.guidance, self.seed = 50, 5.0, 0
        self.options = options

    def colorize(self, l, captions=None):
        return torch.cat(((l - 50) / 4 + self.guidance, torch.zeros_like(l)), dim=1)


SAMPLER_OPTIONS = (
    ColorizeOption("steps", int, 50, "sampling steps", minimum=1, app="control"),
    ColorizeOption("guidance", float, 5.0, "guidance scale", app="control"),
    ColorizeOption("seed", int, 0, "seed", app="control"),
    ColorizeOption("sampler", str, "euler", "sampler", choices=("euler", "heun"), app="flag"),
    ColorizeOption("masks", str, None, "per-file masks: command line only"),
)

LOADED: list[Sampler] = []


@with_options(*SAMPLER_OPTIONS)
def load_sampler(**options):
    LOADED.append(Sampler(**options))
    return LOADED[-1]


@pytest.fixture
def sampler_model(monkeypatch):
    point = EntryPoint(name="sampler", value=f"{__name__}:load_sampler", group="chromalab.models")
    monkeypatch.setattr(models, "_entry_points", lambda: {"sampler": point})
    LOADED.clear()


def test_the_models_controls_and_flags_reach_its_colorizer(tmp_path, sampler_model):
    cache = ColorizerCache(
        "cpu", {"sampler": {"sampler": "heun", "masks": None}, "other": {"x": 1}}
    )
    photo = str(save_image(torch.rand(3, 20, 20), tmp_path / "p.png"))
    _, _, status = run_colorize(cache, [photo], "sampler", None, None, None,
                                {"steps": 7.0, "guidance": 2, "seed": 3, "other": 1})  # fmt: skip
    model = cache.model
    assert model.options == {"ckpt": None, "weights": None, "device": "cpu", "sampler": "heun"}
    assert (model.steps, model.guidance, model.seed) == (7, 2.0, 3)
    assert isinstance(model.steps, int) and isinstance(model.guidance, float)
    assert "with sampler (steps 7, guidance 2.0, seed 3) in" in status
    _, _, status = run_colorize(cache, [photo], "sampler", None, None, None, {"seed": 4})
    assert "with sampler (seed 4) in" in status and cache.model is model  # no reload
    with pytest.raises(ValueError, match="option steps: expected int, got 2.5"):
        run_colorize(cache, [photo], "sampler", None, None, None, {"steps": 2.5})
    with pytest.raises(ValueError, match="option steps: 0 is below the minimum 1"):
        run_colorize(cache, [photo], "sampler", None, None, None, {"steps": 0})


def test_each_photo_of_a_request_gets_its_own_result(tmp_path, sampler_model):
    """Two photos of different sizes and lightness in one request: each result has its own
    photo's size and lightness, and its colour follows that lightness."""
    cache = ColorizerCache("cpu")
    dark = save_image(torch.full((3, 24, 40), 0.2), tmp_path / "dark.png")
    ramp = torch.linspace(0, 1, 30).view(1, 30, 1).expand(3, 30, 18)
    bright = save_image(ramp.contiguous(), tmp_path / "ramp.png")
    gallery, written, status = run_colorize(cache, [str(dark), str(bright)], "sampler", None,
                                            None, None, out_dir=tmp_path / "out")  # fmt: skip
    assert status.startswith("Colorized 2 photos (dark.png, ramp.png)")
    assert [label for _, label in gallery] == ["dark: input", "dark: result", "ramp: input",
                                               "ramp: result"]  # fmt: skip
    assert [Path(w).name for w in written] == ["dark_colorized.png", "ramp_colorized.png"]
    for path, source, shown in zip(written, (dark, bright), (gallery[1][0], gallery[3][0]),
                                   strict=True):  # fmt: skip
        result = np.asarray(Image.open(path))
        assert result.shape[:2] == np.asarray(Image.open(source)).shape[:2]
        assert np.array_equal(np.asarray(shown), result)  # the gallery shows what was written
        lab = skimage.color.rgb2lab(result)
        expected_l = skimage.color.rgb2lab(np.asarray(Image.open(source).convert("RGB")))[..., 0]
        assert np.abs(lab[..., 0] - expected_l).mean() < 2  # its own lightness
        expected_a = (expected_l - 50) / 4 + 5.0  # the stand-in's colour of that lightness
        assert np.abs(lab[..., 1] - expected_a).mean() < 3


def test_chromalab_app_takes_the_models_flags(monkeypatch, sampler_model, capsys):
    from chromalab import app, cli

    served = []
    monkeypatch.setattr(app, "main", lambda *args, **kwargs: served.append((args, kwargs)))
    assert cli.main(["app", "--model", "sampler", "--sampler", "heun", "--port", "1"]) == 0
    args, kwargs = served[-1]
    assert args[0] == "sampler" and args[-1] == 1
    assert kwargs == {"model_options": {"sampler": {"sampler": "heun"}}}
    assert cli.main(["app"]) == 0  # flags not given: none passed
    assert served[-1][1] == {"model_options": {"sampler": {}}}
    with pytest.raises(SystemExit):  # only the flags: controls are on the page
        cli.main(["app", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "options of model sampler: --sampler {euler,heun} sampler" in out
    assert "--steps" not in out and "--masks" not in out
    with pytest.raises(SystemExit):
        cli.main(["app", "--masks", "m/"])
    assert "unrecognized arguments: --masks m/" in capsys.readouterr().err


def test_the_page_builds_a_control_per_option_with_its_elem_id(sampler_model):
    gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install './shared[app]'")
    from chromalab.app import build_app

    blocks = build_app("sampler", device="cpu")
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert isinstance(by_id["steps"], gr.Number) and by_id["steps"].value == 50
    assert by_id["steps"].precision == 0 and by_id["steps"].minimum == 1
    assert isinstance(by_id["guidance"], gr.Number) and by_id["guidance"].value == 5.0
    assert isinstance(by_id["seed"], gr.Number) and "sampler" not in by_id  # a flag: not here
    panels = [b for b in blocks.blocks.values() if isinstance(b, gr.Accordion)]
    assert [p.label for p in panels] == ["Sampling (sampler)"] and panels[0].visible
    show = next(f.fn for f in blocks.fns.values() if f.name == "show")  # on choosing a model
    assert show("sampler")["visible"] is True and show("film_color")["visible"] is False


def test_the_command_says_how_to_install_gradio_when_it_is_missing(monkeypatch, capsys):
    import sys

    from chromalab import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cli.main(["app", "--model", "film_color", "--weights", str(PUBLISHED)]) == 1
    assert "pip install './shared[app]'" in capsys.readouterr().err
