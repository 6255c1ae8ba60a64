import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import numpy as np
import pytest
import skimage.color
import torch
from PIL import Image

from chromalab import cli, models
from chromalab.bins import ABBins
from chromalab.color import rgb_to_lab
from chromalab.data.folders import ImageFolderDataset
from chromalab.io import load_image
from chromalab.rebalance import empirical_prior, load_prior


class ConstantColorizer:
    """A stand-in model: predicts one ab colour at 1/4 resolution; records its inputs."""

    input_size = 32
    uses_captions = True
    calls: list = []

    def __init__(self, ab=(20.0, -30.0), **options):
        self.ab = torch.tensor(ab)
        self.options = options

    def colorize(self, l, captions=None):
        ConstantColorizer.calls.append((tuple(l.shape), captions, self.options))
        b, _, h, w = l.shape
        return self.ab.view(1, 2, 1, 1).expand(b, 2, h // 4, w // 4).clone()


def load_constant(**options):
    return ConstantColorizer(**options)


@pytest.fixture
def fake_model(monkeypatch):
    point = EntryPoint(name="const", value=f"{__name__}:load_constant", group="chromalab.models")
    monkeypatch.setattr(models, "_entry_points", lambda: {"const": point})
    ConstantColorizer.calls = []
    return ConstantColorizer


def write_photos(folder, n=3, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.png")
    return folder


def test_info_lists_versions(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "chromalab-shared" in out and "models" in out


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "chromalab.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "colorize" in out.stdout


def test_data_capshapes_export(tmp_path, capsys):
    assert cli.main(["data", "capshapes", "--out", str(tmp_path / "cs"), "--n", "5"]) == 0
    lines = (tmp_path / "cs" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert (tmp_path / "cs" / first["image"]).is_file() and first["caption"]
    assert (
        cli.main(["data", "capshapes", "--out", str(tmp_path / "w"), "--n", "3", "--format", "wds"])
        == 0
    )
    assert list((tmp_path / "w").glob("*.tar"))


def test_prior_matches_direct_computation(tmp_path):
    folder = write_photos(tmp_path / "photos")
    out = tmp_path / "prior.pt"
    code = cli.main(
        [
            "prior",
            "--data",
            str(folder),
            "-o",
            str(out),
            "--image-size",
            "24",
            "--stride",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    bins = ABBins.gamut()
    dataset = ImageFolderDataset(folder, image_size=24, train=False)
    ab = [rgb_to_lab(dataset[i]["rgb"][None])[:, 1:, ::2, ::2] for i in range(len(dataset))]
    expected = empirical_prior(ab, bins)
    assert torch.allclose(load_prior(out, bins), expected)


def test_prior_on_empty_folder_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli.main(
        ["prior", "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "p.pt"), "--quiet"]
    )
    assert code == 1


def test_colorize_recombines_and_skips_bad_files(tmp_path, fake_model, capsys):
    folder = write_photos(tmp_path / "in", n=2, size=(50, 37))
    (folder / "broken.jpg").write_text("not an image")
    code = cli.main(
        [
            "colorize",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "const",
            "--caption",
            "a red ball",
            "--temperature",
            "0.2",
            "--quiet",
        ]
    )
    assert code == 2  # some inputs were skipped
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "colorized 2 image(s)" in out
    shapes, captions, options = fake_model.calls[0]
    assert shapes == (2, 1, 32, 32) and captions == ["a red ball"] * 2  # one batch
    assert options["temperature"] == 0.2
    result = load_image(tmp_path / "out" / "img0.png")
    source = load_image(folder / "img0.png")
    assert result.shape == source.shape  # full resolution kept
    lab = rgb_to_lab(result[None])
    # the original lightness survives (up to 8-bit rounding and gamut clipping)
    assert (lab[:, 0] - rgb_to_lab(source[None])[:, 0]).abs().median() < 1.0
    # ... with the model's colour, read back from the PNG by scikit-image
    written = skimage.color.rgb2lab(np.asarray(Image.open(tmp_path / "out" / "img0.png")))
    median_ab = np.median(written[..., 1:].reshape(-1, 2), axis=0)
    assert np.abs(median_ab - np.array([20.0, -30.0])).max() < 3.0, median_ab


def test_colorize_passes_sampling_options_and_each_source(
    tmp_path, fake_model, caplog, monkeypatch
):
    folder = write_photos(tmp_path / "in", n=1, size=(50, 37))
    args = ["colorize", str(folder), "-o", str(tmp_path / "out"), "--model", "const", "-q"]
    args += ["--caption", "a red ball"]
    assert cli.main([*args, "--steps", "7", "--scheduler", "dpm++", "--prompt", "a=1,2"]) == 0
    _, _, options = fake_model.calls[0]
    assert options["steps"] == 7 and options["scheduler"] == "dpm++"
    assert options["prompts"] == ["a=1,2"] and "seed" not in options  # only what was given
    assert "has no sampling options" in caplog.text  # this model does not take them
    seen = []

    def colorize(self, l, captions=None, **where):
        seen.append(where)
        return torch.zeros(l.shape[0], 2, 8, 8)

    monkeypatch.setattr(fake_model, "uses_source", True, raising=False)
    monkeypatch.setattr(fake_model, "colorize", colorize)
    assert cli.main(args) == 0
    assert seen == [{"source": [folder / "img0.png"], "full_size": [(37, 50)]}]


def test_colorize_unknown_model(tmp_path, fake_model, capsys):
    code = cli.main(["colorize", str(tmp_path), "-o", str(tmp_path / "o"), "--model", "nope"])
    assert code == 1
    assert "installed models: const" in capsys.readouterr().err
