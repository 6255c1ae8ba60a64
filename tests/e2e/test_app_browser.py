"""``chromalab app`` in a real browser: upload a photo with a caption, get a coloured result
and the model's explanation, download it; a broken upload shows an error and the app keeps
serving. A screenshot of each state is left in the test's tmp dir."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from chromalab.data import CapShapes
from chromalab.io import save_image
from film_color.evaluate import PUBLISHED
from tests.e2e.conftest import start_app

pytestmark = pytest.mark.e2e

#: Generous: the first request loads the model.
WAIT_MS = 120_000

#: A finished run: the status names what the run did (``expect``).
FINISHED = r"""expect => {
    const node = document.querySelector('#status');
    return node !== null && node.innerText.includes(expect);
}"""


def _chroma(image: Image.Image) -> float:
    """Mean distance of the pixels from grey (0 for a grey image), on 0-255 values."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).mean())


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "app.log"
    process, url = start_app(["--model", "film_color", "--weights", str(PUBLISHED)], log)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def page(browser, app):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(app)
    page.locator("#run").wait_for()
    yield page
    page.close()


def _upload(page, files, caption: str) -> None:
    page.locator("#photos input[type=file]").set_input_files([str(f) for f in files])
    for f in files:  # the upload has finished when the file is listed
        page.locator("#photos").get_by_text(f.name).first.wait_for()
    page.locator("#caption textarea").fill(caption)


def _colorize(page, files, expect: str, caption: str) -> str:
    """Upload ``files``, press Colorize, wait for a status that contains ``expect``."""
    _upload(page, files, caption)
    page.locator("#run").click()
    page.wait_for_function(FINISHED, arg=expect)
    return page.locator("#status").inner_text()


def test_a_photo_with_a_caption_comes_back_coloured(page, tmp_path):
    scene = CapShapes(length=1, size=96, seed=11)[0]
    photo = save_image(scene["rgb"], tmp_path / "scene.jpg")  # a colour photo: turned grey
    status = _colorize(page, [photo], "Colorized 1 photo (scene.jpg)", scene["caption"])
    assert "with film_color" in status
    page.screenshot(path=str(tmp_path / "app-result.png"), full_page=True)
    # the result offered for download: a PNG at the photo's size, coloured
    link = page.locator("#downloads a[href]").first
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    result = Image.open(io.BytesIO(response.body()))
    assert result.format == "PNG" and result.size == (96, 96)
    grey = Image.open(photo).convert("L").convert("RGB")
    assert _chroma(grey) == 0.0
    assert _chroma(result) > 10.0
    # the gallery shows input, result and FiLM maps of blocks 6-8
    gallery = page.locator("#gallery")
    for label in ("scene: input", "scene: result", "scene: block 6", "scene: block 8"):
        assert gallery.get_by_text(label).count() >= 1 or label in gallery.inner_html()


def test_a_broken_upload_shows_an_error_and_the_app_keeps_serving(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    status = _colorize(page, [broken], "Could not read broken.png", "a red circle")
    assert "not a recognised image file" in status
    page.screenshot(path=str(tmp_path / "app-error.png"), full_page=True)
    assert page.locator("#status").is_visible()
    # an empty caption: the caption rule's error, in the status
    scene = CapShapes(length=1, size=96, seed=12)[0]
    photo = save_image(scene["rgb"], tmp_path / "next.png")
    page.locator(
        "#photos button[aria-label*='Clear'], #photos button[title*='Clear']"
    ).first.click()
    _colorize(page, [photo], "Error: the caption is empty", "   ")
    page.screenshot(path=str(tmp_path / "app-caption-error.png"), full_page=True)
    # the same page colorizes the next request
    page.locator("#caption textarea").fill(scene["caption"])
    page.locator("#run").click()
    page.wait_for_function(FINISHED, arg="Colorized 1 photo (next.png)")
    assert "broken" not in page.locator("#status").inner_text()
