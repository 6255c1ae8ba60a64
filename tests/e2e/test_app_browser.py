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
from tests.e2e.conftest import ROOT, start_app

pytestmark = pytest.mark.e2e

#: Generous: the first request loads the model.
WAIT_MS = 120_000

#: The uploads have finished: every file is listed (the list shows stem and suffix apart).
UPLOADED = r"""names => {
    const node = document.querySelector('#photos');
    const text = node ? node.innerText.replace(/\s+/g, '') : '';
    return names.every(name => text.includes(name));
}"""

#: The gallery shows ``count`` images, all loaded.
SHOWN = r"""count => {
    const images = [...document.querySelectorAll('#gallery img')];
    return images.length >= count && images.every(img => img.complete && img.naturalWidth > 0);
}"""

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
    weights = PUBLISHED.relative_to(ROOT).as_posix()  # as a user types it
    process, url = start_app(["--model", "film_color", "--weights", weights], log)
    yield url
    process.terminate()
    process.wait(timeout=30)


def _open(browser, url: str):
    """A page of the app at ``url``, ready for a request."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.locator("#run").wait_for()
    return page


@pytest.fixture
def page(browser, app):
    page = _open(browser, app)
    yield page
    page.close()


def _upload(page, files, caption: str) -> None:
    page.locator("#photos input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_function(UPLOADED, arg=[f.name for f in files])
    page.locator("#caption textarea").fill(caption)


def _colorize(page, files, expect: str, caption: str) -> str:
    """Upload ``files``, press Colorize, wait for a status that contains ``expect``."""
    _upload(page, files, caption)
    page.locator("#run").click()
    _wait_for_status(page, expect)
    return page.locator("#status").inner_text()


def _wait_for_status(page, expect: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # optional: [e2e] extra

    try:
        page.wait_for_function(FINISHED, arg=expect)
    except PlaywrightTimeout as err:  # say what the page showed instead
        raise AssertionError(
            f"waited for {expect!r}; the status reads {page.locator('#status').inner_text()!r}"
        ) from err


def test_photos_with_a_caption_come_back_coloured(page, tmp_path):
    scenes = CapShapes(length=2, size=96, seed=11)
    colour = save_image(scenes[0]["rgb"], tmp_path / "scene.jpg")  # a colour photo: turned grey
    grey = tmp_path / "wide.png"  # a grey photo of another shape
    Image.open(save_image(scenes[1]["rgb"], tmp_path / "w.png")).convert("L").resize(
        (144, 96)
    ).save(grey)
    status = _colorize(page, [colour, grey], "Colorized 2 photos (scene.jpg, wide.png)",
                       scenes[0]["caption"])  # fmt: skip
    assert "with film_color" in status
    page.wait_for_function(SHOWN, arg=10)  # 2 x (input, result, 3 maps)
    page.wait_for_timeout(1000)  # gradio's fade-in of updated outputs
    page.screenshot(path=str(tmp_path / "app-result.png"), full_page=True)
    # the results offered for download: PNGs at the photos' sizes, coloured
    links = page.locator("#downloads a[href]")
    assert links.count() == 2
    for i, (source, size) in enumerate(((colour, (96, 96)), (grey, (144, 96)))):
        response = page.request.get(links.nth(i).get_attribute("href"))
        assert response.ok
        result = Image.open(io.BytesIO(response.body()))
        assert result.format == "PNG" and result.size == size
        assert _chroma(Image.open(source).convert("L").convert("RGB")) == 0.0
        assert _chroma(result) > 10.0, source.name
    # the gallery shows, per photo, input, result and the FiLM maps of blocks 6-8
    html = page.locator("#gallery").inner_html()
    for stem in ("scene", "wide"):
        for label in ("input", "result", "block 6", "block 7", "block 8"):
            assert f"{stem}: {label}" in html


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
    _wait_for_status(page, "Colorized 1 photo (next.png)")
    assert "broken" not in page.locator("#status").inner_text()


@pytest.fixture(scope="module")
def lcad_app(tmp_path_factory):
    """The app on a tiny L-CAD (its three stages fitted for 2 steps each)."""
    import sys

    from tests.lcad.test_cli import _fit_stages

    root = tmp_path_factory.mktemp("lcad")
    argv, sys.argv = sys.argv, ["lcad"]
    try:
        stages = _fit_stages(root)
    finally:
        sys.argv = argv
    process, url = start_app(["--model", "lcad", "--ckpt", str(stages["diffusion"])],
                             root / "app.log")  # fmt: skip
    yield url
    process.terminate()
    process.wait(timeout=30)


def _set_number(page, selector: str, value: int) -> None:
    """Type ``value`` into a number box and leave it (gradio takes the value on change). A box
    in an accordion that has just opened may still be set to its initial value after the first
    typing, so it is typed again until it holds ``value``."""
    box = page.locator(selector)
    box.wait_for(state="visible")
    for _ in range(10):
        box.fill(str(value))
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"{selector} holds {box.input_value()!r}, not {value}")


def _download(page, index: int = 0) -> bytes:
    response = page.request.get(page.locator("#downloads a[href]").nth(index).get_attribute("href"))
    assert response.ok
    return response.body()


def test_lcad_samples_with_the_pages_options_and_shows_its_attention(browser, lcad_app, tmp_path):
    page = _open(browser, lcad_app)
    scene = CapShapes(length=1, size=64, seed=2)[0]
    photo = save_image(scene["rgb"], tmp_path / "street.png")
    caption = "a red circle and a blue square"
    page.get_by_text("Sampling (lcad)").click()
    _set_number(page, "#steps input[type=number]", 3)
    _set_number(page, "#seed input", 1)
    _colorize(page, [photo], "with lcad (steps 3, guidance 5.0, seed 1)", caption)
    html = page.locator("#gallery").inner_html()
    for label in ("street: input", "street: result", "street: red", "street: blue"):
        assert label in html
    first = _download(page)
    page.wait_for_function(SHOWN, arg=4)
    page.screenshot(path=str(tmp_path / "app-lcad.png"), full_page=True)
    # another seed gives another picture, the first seed again the first picture
    for seed, same in ((2, False), (1, True)):
        _set_number(page, "#seed input", seed)
        page.locator("#run").click()
        _wait_for_status(page, f"seed {seed})")
        assert (_download(page) == first) is same, seed
    page.close()


@pytest.fixture(scope="module")
def lcoins_app(tmp_path_factory):
    """The app on the published CapShapes L-CoIns, as a user starts it."""
    from lcoins.demo import PUBLISHED as LCOINS

    log = tmp_path_factory.mktemp("lcoins") / "app.log"
    weights = LCOINS.relative_to(ROOT).as_posix()
    process, url = start_app(["--model", "lcoins", "--weights", weights], log)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_lcoins_colours_a_photo_by_its_caption_and_shows_its_groups(browser, lcoins_app, tmp_path):
    page = _open(browser, lcoins_app)
    scenes = CapShapes(length=16, size=64, seed=3)
    scene = next(s for s in (scenes[i] for i in range(16)) if s["level"] == "complete")
    photo = save_image(scene["rgb"], tmp_path / "shapes.png")
    status = _colorize(page, [photo], "Colorized 1 photo (shapes.png)", scene["caption"])
    assert "with lcoins" in status
    page.wait_for_function(SHOWN, arg=3)  # input, result, group map
    html = page.locator("#gallery").inner_html()
    for label in ("shapes: input", "shapes: result", "shapes: groups"):
        assert label in html
    result = Image.open(io.BytesIO(_download(page)))
    assert result.size == (64, 64) and _chroma(result) > 5.0
    page.screenshot(path=str(tmp_path / "app-lcoins.png"), full_page=True)
    page.close()
