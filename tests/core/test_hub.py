"""Hub-style weights (``chromalab.hub``): missing and corrupt files are clear errors, state
beyond tensors travels as JSON, and ``chromalab colorize --weights`` reads a folder. That every
paper module saves ``config.json`` + ``model.safetensors`` (no pickle) and loads back with equal
tensors and outputs is a check of every package: :class:`tests.package_checks.HubChecks`."""

from __future__ import annotations

import json

import pytest

from chromalab.hub import STATE_FILE
from tests.package_checks import perturbed as _perturbed


def _film():
    from tests.film_color.components import tiny_module, tiny_vocabulary

    module = tiny_module("film")
    module.set_vocabulary(tiny_vocabulary())
    return module


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


def test_a_weights_folder_missing_a_tensor_or_holding_an_extra_one_is_an_error_naming_it(
    tmp_path,
):
    from safetensors.torch import load_file, save_file

    from cic.module import CICModule

    CICModule(width=0.125).save_pretrained(tmp_path / "cic")
    weights = tmp_path / "cic" / "model.safetensors"
    tensors = load_file(weights)
    missing = "network.readout.weight"
    assert missing in tensors  # a real tensor of the network: the check below is not vacuous
    save_file({k: v for k, v in tensors.items() if k != missing}, weights)
    with pytest.raises(RuntimeError, match=missing.replace(".", r"\.")):
        CICModule.from_pretrained(tmp_path / "cic")
    save_file(tensors | {"network.extra.weight": tensors[missing].clone()}, weights)
    with pytest.raises(RuntimeError, match=r"network\.extra\.weight"):
        CICModule.from_pretrained(tmp_path / "cic")


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
