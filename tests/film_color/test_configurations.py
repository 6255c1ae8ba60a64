"""``FilmColorModule``'s nested arguments (``network``, ``vocabulary``, ``optimizer``): what the
command line and config files set reaches the built network and the optimizer, a partial
setting keeps the other defaults, bad fields are refused, and checkpoints and weights folders of
the flat versions before them still load."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from chromalab.modules import StepDecayAdam
from film_color.datamodule import FilmColorDataModule
from film_color.evaluate import PUBLISHED
from film_color.language import VocabularyConfig
from film_color.module import DEFAULT_OPTIMIZER, FilmColorModule
from film_color.networks import FilmNetworkConfig
from film_color.weights import FLAT_HPARAMS, load_trained, nested_hparams, network_hparams
from tests.film_color.components import TINY_CONFIG, tiny_module, tiny_vocabulary
from tests.training import fit

#: ``config.json`` of the published folder as the flat version wrote it (its sha256 was
#: 389988caeeded774302dbb35dbad5b9a9c5cb21132246ebd0f10d2e6689d0328)
PUBLISHED_FLAT = {
    "betas": [0.9, 0.999], "channels_last": True, "conditioning": "film", "embedding_dim": 64,
    "hidden_size": 128, "init_from": None, "input_normalization": "image", "lam": 0.5,
    "lr": 0.0001, "lr_gamma": 0.3, "lr_step_size": 5000, "manipulation_seed": 0,
    "max_caption_length": 64, "max_vocab_size": None, "min_count": 1,
    "named_object_weight": 3.0, "prior": None, "prior_batches": 20, "relative_lr_scale": 30.0,
    "relative_maps": 2, "sigma": 5.0, "temperature": 0.38, "vocab_scan": 1000,
    "weight_decay": 0.0, "width": 0.25,
}  # fmt: skip


def _cli(*args: str) -> FilmColorModule:
    """The module ``film-color fit --config tiny.yaml ARGS`` builds (nothing is run)."""
    cli = LightningCLI(
        FilmColorModule, FilmColorDataModule, run=False, args=["--config", TINY_CONFIG, *args]
    )
    return cli.model


def test_the_command_line_reaches_one_field_of_the_network_and_the_optimizer():
    tiny = _cli()
    assert tiny.network_config == FilmNetworkConfig(width=0.125, embedding_dim=16, hidden_size=8)
    wider = _cli("--model.network.width", "0.25", "--model.optimizer.gamma", "0.5",
                 "--model.vocabulary.max_caption_length", "9")  # fmt: skip
    # the network is built at the width given; tiny.yaml's other fields are kept
    assert wider.network_config == FilmNetworkConfig(width=0.25, embedding_dim=16, hidden_size=8)
    assert wider.network.block_channels == [2 * c for c in tiny.network.block_channels]
    assert wider.network.caption_encoder.output_dim == tiny.network.caption_encoder.output_dim
    scheduler = wider.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert (scheduler.optimizer.defaults["lr"], scheduler.gamma) == (1e-3, 0.5)  # tiny.yaml's lr
    assert wider.vocabulary_config == VocabularyConfig(vocab_scan=16, max_caption_length=9)
    # a flat argument of the earlier versions is refused by the parser: nothing is ignored
    with pytest.raises(SystemExit):
        _cli("--model.width", "0.25")


def test_a_partial_configuration_keeps_the_other_defaults():
    module = FilmColorModule(network={"width": 0.125}, optimizer={"lr": 1e-3})
    assert module.hparams.optimizer == {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0,
                                        "step_size": 100_000, "gamma": 0.1}  # fmt: skip
    assert module.hparams.network == asdict(FilmNetworkConfig(width=0.125))
    assert module.network_config == FilmNetworkConfig("film", 0.125, 300, 256, 0, "paper")
    assert module.hparams.vocabulary == {"min_count": 1, "max_vocab_size": None,
                                         "vocab_scan": 5000, "max_caption_length": 64}  # fmt: skip
    configured = module.configure_optimizers()
    assert configured["optimizer"].defaults["betas"] == DEFAULT_OPTIMIZER.betas
    assert configured["lr_scheduler"]["scheduler"].step_size == DEFAULT_OPTIMIZER.step_size
    # a whole StepDecayAdam is taken as it is
    given = StepDecayAdam(lr=0.5, betas=(0.5, 0.6), weight_decay=0.1, step_size=3, gamma=0.2)
    assert FilmColorModule(network={"width": 0.125}, optimizer=given).hparams.optimizer == {
        "lr": 0.5, "betas": (0.5, 0.6), "weight_decay": 0.1, "step_size": 3, "gamma": 0.2
    }  # fmt: skip


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"optimizer": {"lr": 0.0}}, "optimizer.lr must be > 0"),
        ({"optimizer": {"betas": [0.9, 1.0]}}, "optimizer.betas"),
        ({"optimizer": {"step_size": 0}}, "optimizer.step_size must be >= 1"),
        ({"optimizer": {"gamma": -0.1}}, "optimizer.gamma must be > 0"),
        ({"optimizer": {"lr_gamma": 0.3}}, r"StepDecayAdam has no field \['lr_gamma'\]"),
        ({"network": {"conditioning": "add"}}, "network.conditioning"),
        ({"network": {"relative_maps": -1}}, "network.relative_maps"),
        ({"network": {"input_normalization": "batch"}}, "network.input_normalization"),
        ({"network": {"widht": 0.5}}, r"FilmNetworkConfig has no field \['widht'\]"),
        ({"vocabulary": {"vocab_scan": 0}}, "vocab_scan and max_caption_length must be >= 1"),
        ({"vocabulary": {"min_count": 0}}, "vocabulary.min_count must be >= 1"),
        ({"relative_lr_scale": 0.0}, "relative_lr_scale"),
    ],
)
def test_bad_fields_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        FilmColorModule(**arguments)


def test_flat_hyper_parameters_of_earlier_versions_convert():
    nested = nested_hparams(PUBLISHED_FLAT)
    assert nested == json.loads((PUBLISHED / "config.json").read_text())  # the folder's today
    assert nested["optimizer"] == {"lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0,
                                   "step_size": 5000, "gamma": 0.3}  # fmt: skip
    assert nested_hparams(nested) == nested
    # every flat key has a field to go to, and only the Adam ones are renamed
    for flat, (argument, field) in FLAT_HPARAMS.items():
        assert argument in ("network", "vocabulary", "optimizer")
        assert field == {"lr_step_size": "step_size", "lr_gamma": "gamma"}.get(flat, flat)
    # the readers of init_from see the network of any version, and a cic checkpoint's width
    flat_blob = {"hyper_parameters": {"conditioning": "concat", "width": 0.5}}
    assert network_hparams(flat_blob) == asdict(FilmNetworkConfig("concat", 0.5))
    cic_blob = {"hyper_parameters": {"width": 0.25, "bins": "grid", "optimizer": {"lr": 1.0}}}
    assert network_hparams(cic_blob) == {"width": 0.25}
    assert network_hparams({"model_out.weight": torch.zeros(1)}) == {}


def test_a_weights_folder_of_the_flat_version_loads_the_same_model(tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(PUBLISHED, flat)
    (flat / "config.json").write_text(json.dumps(PUBLISHED_FLAT, indent=2, sort_keys=True))
    theirs, ours = load_trained(flat), load_trained(PUBLISHED)
    assert dict(theirs.hparams) == dict(ours.hparams)
    assert theirs.network_config.relative_maps == 2 and theirs.restored
    l = torch.rand(2, 1, 32, 32) * 100
    captions = ["a red circle and a blue star", "the left heart is green"]
    with torch.no_grad():
        assert torch.equal(theirs(l, captions), ours(l, captions))
    # written again, the folder is in today's form
    theirs.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads(
        (PUBLISHED / "config.json").read_text()
    )


def _flatten(hparams: dict) -> dict:
    """``hparams`` in the form the flat versions stored them (the inverse of
    :func:`nested_hparams`)."""
    flat = {k: v for k, v in hparams.items() if k not in ("network", "vocabulary", "optimizer")}
    for key, (argument, field) in FLAT_HPARAMS.items():
        flat[key] = hparams[argument][field]
    return flat


def test_a_checkpoint_of_the_flat_version_loads_and_continues(tmp_path, monkeypatch):
    import sys

    from film_color.cli import run

    monkeypatch.setattr(sys, "argv", ["film-color"])
    ckpt = fit(run, TINY_CONFIG, tmp_path / "nested", "--model.network.relative_maps", "1",
               "--model.optimizer.step_size", "7")  # fmt: skip
    nested = FilmColorModule.load_from_checkpoint(ckpt)
    blob = torch.load(ckpt, weights_only=True)
    blob["hyper_parameters"] = _flatten(blob["hyper_parameters"])
    assert "network" not in blob["hyper_parameters"] and "relative_maps" in blob["hyper_parameters"]
    flat_ckpt = tmp_path / "flat.ckpt"
    torch.save(blob, flat_ckpt)
    flat = FilmColorModule.load_from_checkpoint(flat_ckpt)
    assert flat.hparams.network == nested.hparams.network
    assert flat.hparams.optimizer == nested.hparams.optimizer
    assert flat.network_config.relative_maps == 1 and flat.vocabulary == nested.vocabulary
    for key, value in nested.state_dict().items():
        assert torch.equal(flat.state_dict()[key], value), key
    # init_from reads it whole (same conditioning: weights and vocabulary), and the CLI resumes it
    again = fit(run, TINY_CONFIG, tmp_path / "again", "--model.network.relative_maps", "1",
                "--model.init_from", str(flat_ckpt))  # fmt: skip
    assert FilmColorModule.load_from_checkpoint(again).vocabulary == nested.vocabulary
    resumed = fit(run, TINY_CONFIG, tmp_path / "resumed", "--ckpt_path", str(flat_ckpt),
                  "--trainer.max_steps", "3")  # fmt: skip
    module = FilmColorModule.load_from_checkpoint(resumed)
    assert module.hparams.network["relative_maps"] == 1
    assert module.hparams.optimizer["step_size"] == 7


def test_the_tiny_components_nest_their_sizes():
    module = tiny_module("concat", network={"relative_maps": 1})
    module.set_vocabulary(tiny_vocabulary())
    assert module.network_config == FilmNetworkConfig("concat", 0.125, 8, 8, relative_maps=1)
    assert Path(TINY_CONFIG).is_file()
