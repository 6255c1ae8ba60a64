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


# --- the Hub path (``hf_hub_download`` stubbed: no network) and the loaders' arguments ---


def _plain_cic():
    """``CICModule`` without its ``moved_hparams`` (so no ``read_config`` before the mixin's
    own reads): what ``from_pretrained`` asks of the Hub is then ``chromalab.hub``'s alone."""
    from cic.module import CICModule

    class PlainCIC(CICModule):
        moved_hparams = {}

    return PlainCIC


def _fake_hub(monkeypatch, folder, absent=()):
    """``hf_hub_download`` serving the files of ``folder`` as a Hub repository; a file not in
    the folder (or in ``absent``) is the Hub's ``RemoteEntryNotFoundError``. Returns the calls:
    (repo_id, filename, the other options)."""
    import httpx2
    from huggingface_hub.errors import RemoteEntryNotFoundError

    calls = []

    def download(*, repo_id, filename, **options):
        calls.append((repo_id, filename, options))
        if filename in absent or not (folder / filename).is_file():
            url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
            response = httpx2.Response(404, request=httpx2.Request("GET", url))
            raise RemoteEntryNotFoundError(f"{filename} not in {repo_id}", response=response)
        return str(folder / filename)

    monkeypatch.setattr("chromalab.hub.hf_hub_download", download)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", download)
    return calls


OPTIONS = {"revision": "v1.2", "force_download": True, "local_files_only": True, "token": "hf_x"}


def test_a_hub_repository_is_read_with_the_callers_revision_token_and_cache(monkeypatch, tmp_path):
    import torch

    plain = _plain_cic()
    module = _perturbed(plain(width=0.125))
    module.save_pretrained(tmp_path / "repo")
    calls = _fake_hub(monkeypatch, tmp_path / "repo")
    options = OPTIONS | {"cache_dir": str(tmp_path / "cache")}
    loaded = plain.from_pretrained("chromalab/cic-tiny", **options)
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.restored
    # config.json, the tensors and the optional state file, each with every option
    assert {name for _, name, _ in calls} == {"config.json", "model.safetensors", STATE_FILE}
    assert all(repo == "chromalab/cic-tiny" and got == options for repo, _, got in calls), calls
    assert sum(name == STATE_FILE for _, name, _ in calls) == 1  # asked once, absent: no state


def test_a_hub_repository_without_its_config_or_tensors_is_the_hubs_error(monkeypatch, tmp_path):
    from huggingface_hub.errors import EntryNotFoundError

    plain = _plain_cic()
    plain(width=0.125).save_pretrained(tmp_path / "repo")
    for absent in ("config.json", "model.safetensors"):
        _fake_hub(monkeypatch, tmp_path / "repo", absent={absent})
        with pytest.raises(EntryNotFoundError, match=absent):
            plain.from_pretrained("chromalab/cic-tiny")


def test_a_folder_without_its_config_is_an_error_naming_it(tmp_path):
    plain = _plain_cic()
    plain(width=0.125).save_pretrained(tmp_path / "cic")
    (tmp_path / "cic" / "config.json").unlink()  # the tensors stay
    with pytest.raises(FileNotFoundError, match="no config.json"):
        plain.from_pretrained(tmp_path / "cic")


def test_read_config_reads_a_hub_repository_with_the_callers_options(monkeypatch, tmp_path):
    from chromalab.hub import read_config

    _plain_cic()(width=0.125).save_pretrained(tmp_path / "repo")
    calls = _fake_hub(monkeypatch, tmp_path / "repo")
    assert read_config("chromalab/cic-tiny", **OPTIONS)["width"] == 0.125
    assert calls == [("chromalab/cic-tiny", "config.json", OPTIONS)]


def test_not_strict_loads_a_folder_missing_a_tensor(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from cic.module import CICModule

    module = _perturbed(CICModule(width=0.125))
    module.save_pretrained(tmp_path / "cic")
    weights = tmp_path / "cic" / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if k != "network.readout.weight"}, weights)
    loaded = CICModule.from_pretrained(tmp_path / "cic", strict=False)
    assert torch.equal(loaded.state_dict()["network.readout.bias"], tensors["network.readout.bias"])


def test_map_location_is_where_safetensors_puts_the_tensors(monkeypatch, tmp_path):
    """Both loaders (the whole file; external parts aside) are asked for ``map_location``."""
    import safetensors.torch

    from cic.module import CICModule

    class External(CICModule):
        def external_parts(self):
            return {"network.readout.": lambda: None}

    devices = []
    load_file, load_model = safetensors.torch.load_file, safetensors.torch.load_model

    def spy_file(filename, device=None, **rest):  # device=None: not asked for one
        devices.append(("load_file", device))
        return load_file(filename, device="cpu", **rest)

    def spy_model(model, filename, strict=True, device=None):
        devices.append(("load_model", device))
        return load_model(model, filename, strict=strict)

    monkeypatch.setattr(safetensors.torch, "load_file", spy_file)
    monkeypatch.setattr(safetensors.torch, "load_model", spy_model)
    for cls in (CICModule, External):
        cls(width=0.125).save_pretrained(tmp_path / cls.__name__)
        cls.from_pretrained(tmp_path / cls.__name__, map_location="cpu")
    # load_model's own load_file call is the second entry
    assert devices == [("load_model", "cpu"), ("load_file", "cpu"), ("load_file", "cpu")]


def test_a_file_without_the_external_parts_says_it_holds_pytorch_tensors(tmp_path):
    """chromalab's own writer (external parts kept out) marks the header ``{"format": "pt"}``,
    as ``transformers`` marks its files (the mixin's writer, used otherwise, marks none)."""
    from safetensors import safe_open

    from cic.module import CICModule

    class External(CICModule):
        def external_parts(self):
            return {"network.readout.": lambda: None}

    External(width=0.125).save_pretrained(tmp_path / "w")
    with safe_open(tmp_path / "w" / "model.safetensors", "pt") as f:
        metadata, names = f.metadata(), list(f.keys())  # safe_open is not iterable
    assert metadata == {"format": "pt"}
    assert names and not any(name.startswith("network.readout.") for name in names)


def test_state_that_is_not_json_is_an_error_naming_the_module(tmp_path):
    module = _film()
    module.on_save_checkpoint = lambda checkpoint: checkpoint.update(words={"red", "blue"})
    with pytest.raises(TypeError, match="FilmColorModule's checkpoint entries are not JSON"):
        module.save_pretrained(tmp_path / "film")


def test_is_hub_folder_wants_both_files(tmp_path):
    from chromalab.hub import is_hub_folder

    assert not is_hub_folder(None)
    (tmp_path / "config.json").write_text("{}")
    assert not is_hub_folder(tmp_path)  # no model.safetensors
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert is_hub_folder(tmp_path) and is_hub_folder(str(tmp_path))
    assert not is_hub_folder(tmp_path / "config.json")  # a file, not a folder


def test_load_module_gives_the_checkpoint_or_the_folder_on_the_device(tmp_path):
    import torch

    from chromalab.hub import load_module

    class Recorder:
        @classmethod
        def load_from_checkpoint(cls, path, **options):
            return ("checkpoint", path, options)

        @classmethod
        def from_pretrained(cls, path, **options):
            return ("folder", path, options)

    device = torch.device("cuda", 1)  # never used: the recorder loads nothing
    got = load_module(Recorder, "last.ckpt", None, device)
    assert got == ("checkpoint", "last.ckpt", {"map_location": device})
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    got = load_module(Recorder, None, str(tmp_path), device)
    assert got == ("folder", str(tmp_path), {"map_location": "cuda:1"})
    assert load_module(Recorder, None, str(tmp_path / "none"), device) is None
