"""The recipe of the published CapShapes FILM (``configs/recipes/capshapes-film-v1``): every
stage config parses, and the chain of continuations runs end to end and yields a model of the
published kind (the real stage files; only the step count and, in the fast test, the sizes
overridden)."""

from __future__ import annotations

import pytest
import torch

from film_color.evaluate import PUBLISHED
from film_color.recipe import main, stage_steps, stages
from film_color.weights import TRAINING_STATE_KEYS, load_trained, read_weights, trained_steps
from tests.film_color.components import CONFIGS

RECIPE = CONFIGS / "recipes" / "capshapes-film-v1"
#: sizes that make the 12 stages take seconds: the stage files set everything else
TINY = [
    "--model.network.width", "0.125",
    "--model.prior_batches", "1",
    "--model.vocabulary.vocab_scan", "64",
    "--data.capshapes_size", "32",
    "--data.num_workers", "0",
    "--trainer.num_sanity_val_steps", "0",
]  # fmt: skip


def test_the_stages_add_up_to_the_published_model(tmp_path):
    names = [stage.name for stage in stages(RECIPE)]
    assert names[0] == "01-fcnn.yaml" and names[-1] == "12-named-objects.yaml" and len(names) == 12
    steps = [stage_steps(stage) for stage in stages(RECIPE)]
    # 4000 FCNN steps, then the 70000 FILM steps behind the published weights
    assert steps[0] == 4000 and sum(steps[1:]) == trained_steps(read_weights(PUBLISHED)) == 70000
    with pytest.raises(FileNotFoundError, match="stage configs"):
        stages(tmp_path)
    (tmp_path / "01-x.yaml").write_text("model:\n  optimizer:\n    lr: 0.1\n")
    with pytest.raises(ValueError, match="max_steps"):
        stage_steps(tmp_path / "01-x.yaml")


def _run_chain(tmp_path, *extra: str):
    publish = tmp_path / "v1"
    last = main([str(RECIPE), "--out", str(tmp_path / "runs"), "--max-steps", "1",
                 "--publish", str(publish), *extra])  # fmt: skip
    return last, publish


def test_the_recipe_chain_runs_in_tiny_form(tmp_path):
    last, publish = _run_chain(tmp_path, *TINY)
    assert last == tmp_path / "runs" / "12-named-objects" / "checkpoints" / "last.ckpt"
    blob = read_weights(publish)
    assert not any(key in blob for key in TRAINING_STATE_KEYS)
    assert trained_steps(blob) == 11  # one step per FILM stage (the FCNN's is not counted)
    published = read_weights(PUBLISHED)["hyper_parameters"]
    hparams = blob["hyper_parameters"]
    for key in ("conditioning", "input_normalization", "relative_maps"):
        assert hparams["network"][key] == published["network"][key], key
    assert hparams["network"]["width"] == 0.125  # TINY's, over every stage's
    assert hparams["named_object_weight"] == published["named_object_weight"]
    assert hparams["optimizer"] == published["optimizer"]  # the last stage's
    assert (publish / "model.safetensors").is_file()  # a save_pretrained folder
    module = load_trained(publish)
    assert module.network.relative is not None
    with torch.no_grad():
        out = module(torch.rand(1, 1, 32, 32) * 100, ["a red circle and a blue star"])
    assert out.shape == (1, 625, 8, 8)
    # a second call reuses every finished stage: nothing is trained again
    stamp = last.stat().st_mtime_ns
    _run_chain(tmp_path, *TINY)
    assert last.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_the_recipe_chain_runs_at_its_own_sizes(tmp_path):
    _, publish = _run_chain(tmp_path, "--trainer.num_sanity_val_steps", "0")
    module = load_trained(publish)
    theirs = load_trained(PUBLISHED)
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in module.state_dict().items() if k in shapes} == shapes
