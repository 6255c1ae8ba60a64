"""Hub-style weights (``chromalab.hub``): every paper module saves ``config.json`` +
``model.safetensors`` and loads back with equal tensors and outputs, from a local folder;
missing and corrupt files are clear errors; no pickle is involved."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from chromalab.hub import STATE_FILE


def _perturbed(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.state_dict().values():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * 0.01)
    return module.eval()


def _cic():
    from cic.module import CICModule

    return CICModule(width=0.125, init_from="no/such/release.pth")


def _film():
    from film_color.language import Vocabulary
    from tests.film_color.components import tiny_module

    module = tiny_module("film")
    module.set_vocabulary(Vocabulary(["<pad>", "<unk>", "a", "red", "blue", "circle"]))
    return module


def _lcoins():
    from lcoins.cli import CONFIGS
    from lcoins.module import LCoInsModule

    settings = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())["model"]
    return LCoInsModule(**settings)


def _lcad():
    from chromalab.text_models import EMBEDDED_TEXT_ENCODER
    from lcad.module import LCADDiffusionModule
    from tests.lcad.components import TEXT_OPTIONS, TINY_UNET, TINY_VAE

    return LCADDiffusionModule(
        vae=TINY_VAE, unet=TINY_UNET, text_encoder=EMBEDDED_TEXT_ENCODER, text_pretrained=False,
        text_options=TEXT_OPTIONS, max_caption_length=16, sample_steps=2,
        compression_from="no/such/stage1.ckpt",
    )  # fmt: skip


def _output(module, l):
    captions = ["a red circle"] * l.shape[0]
    if type(module).__name__ == "CICModule":
        return module(l)
    if type(module).__name__ == "LCADDiffusionModule":
        gens = [torch.Generator().manual_seed(0) for _ in range(l.shape[0])]
        return module.colorize_rgb(l, captions, generators=gens)
    return module.colorize(l, captions)


@pytest.mark.parametrize("build", [_cic, _film, _lcoins, _lcad], ids=lambda f: f.__name__[1:])
def test_save_and_load_give_the_same_module(build, tmp_path):
    module = _perturbed(build())
    module.save_pretrained(tmp_path / "weights")
    files = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert "config.json" in files and "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".ckpt", ".pth"))]  # no pickle
    loaded = type(module).from_pretrained(tmp_path / "weights")
    assert loaded._restored and not loaded.training
    same = lambda h: json.loads(json.dumps(dict(h)))  # noqa: E731  (JSON: tuples come back as lists)
    assert same(loaded.hparams) == same(module.hparams)
    theirs = loaded.state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(theirs[key], value), key
    l = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        torch.testing.assert_close(_output(loaded, l), _output(module, l), rtol=0, atol=0)
    # fit keeps the loaded weights: no init_from / stage-1 reload over them (missing here)
    if "init_from" in module.hparams or "compression_from" in module.hparams:
        loaded.setup("fit")


def test_film_vocabulary_travels_as_json(tmp_path):
    module = _film()
    module.save_pretrained(tmp_path / "film")
    state = json.loads((tmp_path / "film" / STATE_FILE).read_text())
    assert state["film_color"]["vocabulary"][:3] == ["<pad>", "<unk>", "a"]
    from film_color.module import FilmColorModule

    (tmp_path / "film" / STATE_FILE).unlink()
    with pytest.raises(ValueError, match="vocabulary"):
        FilmColorModule.from_pretrained(tmp_path / "film")


def test_missing_and_corrupt_files_are_named(tmp_path):
    from cic.module import CICModule

    CICModule(width=0.125).save_pretrained(tmp_path / "cic")
    weights = tmp_path / "cic" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        CICModule.from_pretrained(tmp_path / "cic")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        CICModule.from_pretrained(tmp_path / "cic")
    (tmp_path / "cic" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        CICModule.from_pretrained(tmp_path / "cic")
    # tensors of another model: strict loading names them
    CICModule(width=0.25).save_pretrained(tmp_path / "wide")
    config = json.loads((tmp_path / "wide" / "config.json").read_text())
    (tmp_path / "wide" / "config.json").write_text(json.dumps(config | {"width": 0.125}))
    with pytest.raises(RuntimeError, match="network"):
        CICModule.from_pretrained(tmp_path / "wide")


def test_the_colorize_command_takes_a_weights_folder(tmp_path):
    from PIL import Image

    from chromalab import cli
    from chromalab.models import load_colorizer

    module = _perturbed(_film())
    module.input_size = 32
    module.save_pretrained(tmp_path / "film")
    Image.new("RGB", (40, 30), (120, 80, 40)).save(tmp_path / "photo.png")
    args = ["colorize", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "-q",
            "--model", "film_color", "--weights", str(tmp_path / "film"),
            "--caption", "a red a"]  # fmt: skip
    assert cli.main(args) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (40, 30)
    model = load_colorizer("film_color", weights=str(tmp_path / "film"), device="cpu")
    assert model.input_size == 32  # the module's own state came back
    with pytest.raises(ValueError, match="save_pretrained folder"):
        load_colorizer("lcoins", weights=str(tmp_path / "nothing"), device="cpu")
