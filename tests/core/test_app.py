"""What one press of the app's *Colorize* does (``chromalab.app.run_colorize``), without a
browser or gradio: the browser itself is ``tests/e2e`` (``make test-e2e``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from chromalab.app import ColorizerCache, run_colorize
from chromalab.data import CapShapes
from chromalab.io import save_image
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
    """A colorizer with sampling options, as lcad's."""

    input_size, uses_captions = 16, False

    def __init__(self):
        self.steps, self.guidance, self.seed = 50, 5.0, 0

    def colorize(self, l, captions=None):
        return torch.zeros(l.shape[0], 2, 16, 16)


def test_sampling_options_reach_a_colorizer_that_has_them(tmp_path):
    cache = ColorizerCache("cpu")
    cache.key, cache.model = ("lcad", None, None), Sampler()
    photo = str(save_image(torch.rand(3, 20, 20), tmp_path / "p.png"))
    run_colorize(cache, [photo], "lcad", None, None, None,
                 {"steps": 7.0, "guidance": 2, "seed": 3, "other": 1})  # fmt: skip
    assert (cache.model.steps, cache.model.guidance, cache.model.seed) == (7, 2.0, 3)
    _, _, status = run_colorize(cache, [photo], "lcad", None, None, None, {"seed": 4})
    assert "with lcad (seed 4) in" in status
    assert isinstance(cache.model.steps, int) and isinstance(cache.model.guidance, float)


def test_the_command_says_how_to_install_gradio_when_it_is_missing(monkeypatch, capsys):
    import sys

    from chromalab import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cli.main(["app", "--model", "film_color", "--weights", str(PUBLISHED)]) == 1
    assert "pip install './shared[app]'" in capsys.readouterr().err
