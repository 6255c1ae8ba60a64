"""The published model's recipe (``configs/recipes/capshapes-lcoins-v1.yaml``): its trainer
settings build a Lightning Trainer, as ``lcoins fit`` builds it."""

from __future__ import annotations

import importlib

import lightning.pytorch as pl
import yaml

from lcoins.cli import CONFIGS

RECIPE = CONFIGS / "recipes" / "capshapes-lcoins-v1.yaml"


def _instantiate(spec: dict, tmp_path):
    module, name = spec["class_path"].rsplit(".", 1)
    options = dict(spec.get("init_args") or {})
    for key in ("dirpath", "save_dir"):
        if key in options:
            options[key] = str(tmp_path / options[key])
    return getattr(importlib.import_module(module), name)(**options)


def test_the_recipes_trainer_builds(tmp_path):
    """Lightning refuses two checkpoint callbacks whose state would share a key (same cadence):
    the kept checkpoints and ``last.ckpt`` must differ in it."""
    trainer = yaml.safe_load(RECIPE.read_text())["trainer"]
    callbacks = [_instantiate(spec, tmp_path) for spec in trainer.pop("callbacks")]
    logger = _instantiate(trainer.pop("logger"), tmp_path)
    built = pl.Trainer(callbacks=callbacks, logger=logger, **trainer, enable_progress_bar=False)
    checkpoints = [c for c in built.callbacks if isinstance(c, pl.callbacks.ModelCheckpoint)]
    assert len(checkpoints) == 2 and len({c.state_key for c in checkpoints}) == 2
