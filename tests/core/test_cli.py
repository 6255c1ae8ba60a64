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
from chromalab.models import ColorizeOption, with_options
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


#: The stand-in model's own options: one of each kind.
CONSTANT_OPTIONS = (
    ColorizeOption("steps", int, 10, "sampling steps of the stand-in", minimum=1, app="control"),
    ColorizeOption("sampler", str, "euler", "its sampler", choices=("euler", "heun"), app="flag"),
    ColorizeOption("shade", float, 20.0, "the a of its colour"),
    ColorizeOption("points", str, None, "repeatable", flag="--point", multiple=True,
                   metavar="X,Y"),
    ColorizeOption("sharp", bool, False, "a switch"),
)  # fmt: skip


@with_options(*CONSTANT_OPTIONS)
def load_constant(shade=None, **options):
    return ConstantColorizer(ab=(20.0 if shade is None else shade, -30.0), shade=shade, **options)


def load_plain(**options):
    """A model that declares no options of its own."""
    return ConstantColorizer(**options)


@pytest.fixture
def fake_model(monkeypatch):
    points = {
        name: EntryPoint(name=name, value=f"{__name__}:{factory}", group="chromalab.models")
        for name, factory in (("const", "load_constant"), ("plain", "load_plain"))
    }
    monkeypatch.setattr(models, "_entry_points", lambda: points)
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


def test_colorize_passes_the_models_options_and_each_source(tmp_path, fake_model, monkeypatch):
    folder = write_photos(tmp_path / "in", n=1, size=(50, 37))
    args = ["colorize", str(folder), "-o", str(tmp_path / "out"), "--model", "const", "-q"]
    args += ["--caption", "a red ball"]
    extra = ["--steps", "7", "--sampler", "heun", "--point", "1,2", "--point", "3,4", "--sharp"]
    assert cli.main([*args, *extra]) == 0
    _, _, options = fake_model.calls[0]
    assert options["steps"] == 7 and options["sampler"] == "heun" and options["sharp"] is True
    assert options["points"] == ["1,2", "3,4"]
    assert options["shade"] is None  # only what was given: the factory applies its defaults
    assert "temperature" in options and "progress" in options  # the common ones, as before
    seen = []

    def colorize(self, l, captions=None, **where):
        seen.append(where)
        return torch.zeros(l.shape[0], 2, 8, 8)

    monkeypatch.setattr(fake_model, "uses_source", True, raising=False)
    monkeypatch.setattr(fake_model, "colorize", colorize)
    assert cli.main(args) == 0
    assert seen == [{"source": [folder / "img0.png"], "full_size": [(37, 50)]}]


def test_an_options_value_changes_the_result(tmp_path, fake_model):
    """--shade reaches the model as a float and changes the written colour."""
    folder = write_photos(tmp_path / "in", n=1, size=(40, 40))
    base = ["colorize", str(folder), "--model", "const", "--caption", "x", "-q"]
    medians = {}
    for shade in ("-25.5", None):
        out = tmp_path / str(shade)
        assert cli.main([*base, "-o", str(out), *(["--shade", shade] if shade else [])]) == 0
        written = skimage.color.rgb2lab(np.asarray(Image.open(out / "img0.png")))
        medians[shade] = np.median(written[..., 1])  # a, read back by scikit-image
    assert fake_model.calls[0][2]["shade"] == -25.5
    assert medians["-25.5"] < -15 and medians[None] > 15, medians  # gamut clipping: not exact


def test_colorize_help_shows_the_chosen_models_options(fake_model, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["colorize", "--model", "const", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "options of model const:" in out
    for text in ("--steps STEPS sampling steps of the stand-in", "--sampler {euler,heun}",
                 "--shade SHADE", "--point X,Y repeatable", "--sharp a switch"):  # fmt: skip
        assert text in out, text
    with pytest.raises(SystemExit):  # without --model: the installed models, no options
        cli.main(["colorize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "installed model: const, plain" in out
    assert "options of model" not in out and "--steps" not in out
    with pytest.raises(SystemExit):  # a model that declares none
        cli.main(["colorize", "--model=plain", "--help"])
    assert "options of model" not in capsys.readouterr().out


def test_an_option_the_model_does_not_have_is_a_clear_error(tmp_path, fake_model, capsys):
    folder = write_photos(tmp_path / "in", n=1)
    base = ["colorize", str(folder), "-o", str(tmp_path / "out"), "--caption", "x", "-q"]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*base, "--model", "plain", "--steps", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --steps" in err and "no options of its own" in err
    with pytest.raises(SystemExit):
        cli.main([*base, "--model", "const", "--guidance", "3"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --guidance 3" in err
    assert "these options of its own: --steps, --sampler, --shade, --point, --sharp" in err
    for wrong, message in ((["--sampler", "ddim"], "invalid choice: 'ddim'"),
                           (["--steps", "2.5"], "invalid int value: '2.5'")):  # fmt: skip
        with pytest.raises(SystemExit):
            cli.main([*base, "--model", "const", *wrong])
        assert message in capsys.readouterr().err
    assert cli.main([*base, "--model", "const", "--steps", "0"]) == 1
    assert "error: option steps: 0 is below the minimum 1" in capsys.readouterr().err
    assert fake_model.calls == []  # nothing ran
    # the Python API checks the same schema
    with pytest.raises(ValueError, match="model plain has no option steps; its own options: none"):
        models.load_colorizer("plain", steps=3)
    with pytest.raises(ValueError, match="option steps: expected int, got 2.5"):
        models.load_colorizer("const", steps=2.5)


def test_a_model_whose_option_clashes_with_the_commands_is_refused(fake_model, monkeypatch):
    @with_options(ColorizeOption("size", int, 3, "clashes: --size is the command's"))
    def load_clashing(**options):
        return ConstantColorizer(**options)

    monkeypatch.setattr(sys.modules[__name__], "load_plain", load_clashing)
    with pytest.raises(ValueError, match="model plain declares --size, which chromalab colorize"):
        cli.build_parser(["colorize", "--model", "plain"])


def test_skip_existing_writes_nothing_the_second_time(tmp_path, fake_model, capsys):
    """Resuming: a second run with --skip-existing rewrites no result (same bytes, same
    modification times, another colour would have changed them) and colorizes only a new
    input; the count it reports says so."""
    folder = write_photos(tmp_path / "in", n=2, size=(30, 20))
    out = tmp_path / "out"
    base = ["colorize", str(folder), "-o", str(out), "--model", "const", "--caption", "x", "-q"]
    assert cli.main(base) == 0
    assert "colorized 2 image(s)" in capsys.readouterr().out
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert len(before) == 2
    write_photos(tmp_path / "more", n=1, size=(30, 20))
    (tmp_path / "more" / "img0.png").rename(folder / "new.png")
    calls = len(fake_model.calls)
    assert cli.main([*base, "--skip-existing", "--shade", "-40"]) == 0
    assert "colorized 1 image(s)" in capsys.readouterr().out
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert sorted(after) == ["img0.png", "img1.png", "new.png"]
    for name, (mtime, data) in before.items():
        assert after[name] == (mtime, data), name
    assert fake_model.calls[calls][0][0] == 1  # only the new image reached the model
    assert cli.main([*base, "--skip-existing"]) == 0  # all done: nothing to do
    assert "colorized 0 image(s)" in capsys.readouterr().out


def test_colorize_unknown_model(tmp_path, fake_model, capsys):
    code = cli.main(["colorize", str(tmp_path), "-o", str(tmp_path / "o"), "--model", "nope"])
    assert code == 1
    assert "installed models: const" in capsys.readouterr().err


def test_an_option_converts_values_to_its_type_and_refuses_others():
    steps = ColorizeOption("steps", int, 10, "steps", minimum=1)
    assert steps.convert(3.0) == 3 and isinstance(steps.convert("4"), int)
    assert steps.convert(1) == 1
    with pytest.raises(ValueError, match="option steps: 0 is below the minimum 1"):
        steps.convert(0)
    assert steps.convert(None) is None and steps.cli_flag == "--steps"
    for bad in (2.5, "x", True):
        with pytest.raises(ValueError, match=f"option steps: expected int, got {bad!r}"):
            steps.convert(bad)
    sampler = ColorizeOption("sampler", str, "a", "which", choices=("a", "b"))
    assert sampler.convert("b") == "b"
    with pytest.raises(ValueError, match="option sampler: 'c' is not one of a, b"):
        sampler.convert("c")
    switch = ColorizeOption("auto_masks", bool, False, "a switch")
    assert switch.cli_flag == "--auto-masks" and switch.convert(True) is True
    with pytest.raises(ValueError, match="expected bool"):
        switch.convert("yes")
    points = ColorizeOption("points", float, None, "xs", multiple=True)
    assert points.convert(["1", 2]) == [1.0, 2.0] and points.convert("3") == [3.0]


def test_a_schema_that_cannot_work_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match="type must be one of"):
        ColorizeOption("size", list, None, "a list")
    with pytest.raises(ValueError, match="expected int, got 'many'"):
        ColorizeOption("steps", int, "many", "a default of the wrong type")
    with pytest.raises(ValueError, match="not one of"):
        ColorizeOption("sampler", str, "c", "default not a choice", choices=("a", "b"))
    with pytest.raises(ValueError, match="only a number has a minimum"):
        ColorizeOption("name", str, minimum=1)
    with pytest.raises(ValueError, match="identifier"):
        ColorizeOption("text-encoder", str)
    with pytest.raises(ValueError, match="must start with '--'"):
        ColorizeOption("steps", int, flag="-s")
    with pytest.raises(ValueError, match=r"declared twice \(same name\): steps"):
        with_options(ColorizeOption("steps", int), ColorizeOption("steps", float))
    with pytest.raises(ValueError, match=r"declared twice \(same flag\): --n"):
        with_options(ColorizeOption("a", int, flag="--n"), ColorizeOption("b", int, flag="--n"))
    with pytest.raises(ValueError, match="ckpt are common to every model"):
        with_options(ColorizeOption("ckpt", str))
    assert models.factory_options(load_plain) == ()  # no decorator: no options
    assert models.factory_options(load_constant) == CONSTANT_OPTIONS


def test_a_plugin_that_does_not_load_is_left_out_of_the_app_with_a_warning(
    fake_model, monkeypatch, caplog
):
    points = dict(models._entry_points())
    points["broken"] = EntryPoint(name="broken", value="no_such_package_xyz:load",
                                  group="chromalab.models")  # fmt: skip
    monkeypatch.setattr(models, "_entry_points", lambda: points)
    with caplog.at_level("WARNING"):
        loadable = models.loadable_model_options(["const", "broken", "plain"])
    assert list(loadable) == ["const", "plain"]
    assert [o.name for o in loadable["const"]] == [o.name for o in models.model_options("const")]
    assert "model broken does not load" in caplog.text
