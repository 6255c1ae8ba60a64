"""The published CapShapes FILM (``benchmarks/weights/capshapes-film-v1/``, a ``save_pretrained``
folder, see the package README): it must load through the real entry points and score what the
README records, so a change that breaks loading, the caption pathway, the relative maps, the
decoding or the manipulation metric for trained models fails here. Evaluation on the CPU is
deterministic, so the recorded values are pinned (+-0.02), not bounded from below: a bug can move
a metric up."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from chromalab.data.collate import add_lab
from film_color.evaluate import PUBLISHED, evaluate, scene_data
from film_color.module import FilmColorModule
from film_color.weights import (
    TRAINING_STATE_KEYS,
    load_trained,
    read_weights,
    trained_scene_size,
    trained_steps,
)

README = Path(__file__).resolve().parents[2] / "packages" / "film_color" / "README.md"

#: Measured on the first 64 validation scenes (seed 1) at 96 px, fp32 on the CPU.
RECORDED_64 = {"manipulation_accuracy": 0.9032, "caption_consistency": 0.6544, "acc@1": 0.1853}


def test_the_published_folder_is_the_one_the_readme_names_and_holds_no_pickle():
    weights = PUBLISHED / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    named = re.findall(r"sha256\s+`([0-9a-f]{64})`", README.read_text())
    assert named == [digest]  # a file replaced under the same name fails here
    assert weights.stat().st_size <= 12 * 2**20
    files = sorted(p.name for p in PUBLISHED.iterdir())
    assert files == ["README.md", "chromalab_state.json", "config.json", "model.safetensors"]
    for name in ("chromalab_state.json", "config.json"):
        json.loads((PUBLISHED / name).read_text())  # plain JSON
    assert weights.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_the_published_folder_records_its_recipe():
    blob = read_weights(PUBLISHED)
    assert not any(key in blob for key in TRAINING_STATE_KEYS)
    hparams = blob["hyper_parameters"]
    assert hparams["network"] == {"conditioning": "film", "width": 0.25, "embedding_dim": 64,
                                  "hidden_size": 128, "relative_maps": 2,
                                  "input_normalization": "image"}  # fmt: skip
    assert hparams["named_object_weight"] == 3.0 and hparams["relative_lr_scale"] == 30.0
    assert hparams["optimizer"] == {"lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0,
                                    "step_size": 5000, "gamma": 0.3}  # fmt: skip
    assert hparams["vocabulary"]["vocab_scan"] == 1000 and hparams["temperature"] == 0.38
    assert trained_scene_size(blob) == 96
    assert trained_steps(blob) == 70000  # 62000 before its last stage + its own 8000
    # it rebuilds with every argument the module takes today, and no other
    module = FilmColorModule.from_pretrained(str(PUBLISHED))
    assert module.total_steps == 70000 and len(module.vocabulary) == 38
    assert module.input_size == 96


def test_the_published_film_scores_what_the_readme_records():
    metrics = evaluate(PUBLISHED, scenes=64)
    for key, value in RECORDED_64.items():
        assert metrics[key] == pytest.approx(value, abs=0.02), key


def _scene_batch(dataset, indices: list[int]) -> dict:
    batch = torch.utils.data.default_collate([dataset[i] for i in indices])
    return add_lab(batch)


@torch.no_grad()
def _manipulation_state(module: FilmColorModule, dataset, batches: list[list[int]]) -> tuple:
    """(correct, total) of the manipulation metric after ``batches`` of scene indices."""
    metric = module.metrics["val_manipulation"]
    metric.reset()
    for indices in batches:
        batch = _scene_batch(dataset, indices)
        module.evaluate_batch(batch, "val")
    state = (metric.correct.clone(), metric.total.clone())
    for name in ("val_accuracy", "val_consistency", "val_manipulation"):
        module.metrics[name].reset()
    return state


def test_manipulation_accuracy_is_the_same_for_any_batch_size_and_rank_split(monkeypatch):
    """The swaps are seeded per scene: one batch of 48, batches of 20, and the even/odd split
    of two DDP ranks (each rank's batches summed, as torchmetrics syncs them) judge the same
    objects against the same new colours."""
    module = load_trained(PUBLISHED)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no trainer attached
    data = scene_data(48, 96)
    data.setup("validate")
    dataset = data.val_dataset
    scenes = list(range(48))
    whole = _manipulation_state(module, dataset, [scenes])
    assert int(whole[1].sum()) > 40  # swapped objects judged
    batches_of_20 = [scenes[i : i + 20] for i in (0, 20, 40)]
    ranks = [scenes[0::2][:12], scenes[0::2][12:], scenes[1::2][:12], scenes[1::2][12:]]
    for split in (batches_of_20, ranks):
        correct, total = _manipulation_state(module, dataset, split)
        assert torch.equal(correct, whole[0]) and torch.equal(total, whole[1])


def test_the_demo_shows_the_published_folder(tmp_path):
    from film_color.demo import main as demo

    demo(["--out", str(tmp_path), "--steps", "0", "--scenes", "8"])
    section = (tmp_path / "sections" / "020-film_color.html").read_text()
    assert "The published model" in section and "70000 training steps" in section


#: The README's scoring command on the first 64 test scenes (fp32 on the CPU), as RECORDED_64.
RECORDED_TEST_64 = {"manipulation_accuracy": 0.9294, "caption_consistency": 0.6336, "acc@1": 0.2063}


def test_the_readme_scoring_command(monkeypatch, capsys):
    """``python -m film_color.evaluate benchmarks/weights/capshapes-film-v1 --split test --scenes
    2048`` as the README shows it (the published folder, typed relative to the checkout's root),
    on 64 of the scenes: it prints every metric as JSON, and the published model's scores."""
    from film_color.evaluate import main

    shown = re.findall(r"^python -m film_color\.evaluate (benchmarks/\S+ .*)$", README.read_text(),
                       re.MULTILINE)  # fmt: skip
    assert len(shown) == 1 and "--split test" in shown[0]
    monkeypatch.chdir(README.parents[2])
    main([*shown[0].split(), "--scenes", "64"])
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{") :])
    keys = {"acc@1", "acc@5", "caption_consistency", "manipulation_accuracy", "loss"}
    assert keys <= set(printed)
    assert all(0 <= printed[k] <= 1 for k in keys - {"loss"})
    for key, value in RECORDED_TEST_64.items():
        assert printed[key] == pytest.approx(value, abs=0.02), key
    # the 64 validation scenes' pins are of the same model: the splits agree within noise
    assert abs(printed["manipulation_accuracy"] - RECORDED_64["manipulation_accuracy"]) < 0.05


def test_scenes_of_a_kind_reach_the_scoring(monkeypatch, capsys):
    """``--options`` draws the test scenes with CapShapes options (here two or more objects that
    share a noun, the instance-awareness scenes): the data module's scenes obey them, and the
    published model scores other figures on them than on the default scenes."""
    import film_color.evaluate as film_evaluate

    shared = {"min_objects": 2, "shared_noun_prob": 1.0}
    data = scene_data(16, 64, options=shared)
    data.setup("test")
    for scene in (data.test_dataset[i] for i in range(16)):
        shapes = [s for s in scene["shape_ids"].tolist() if s >= 0]
        assert len(shapes) >= 2 and len(set(shapes)) < len(shapes)
    seen = []
    monkeypatch.setattr(film_evaluate, "evaluate", lambda *a, **kw: seen.append(kw) or {"x": 1.0})
    film_evaluate.main([str(PUBLISHED), "--scenes", "16", "--options", json.dumps(shared)])
    assert seen[0]["options"] == shared
    monkeypatch.undo()
    plain, kind = (evaluate(PUBLISHED, scenes=32, split="test", options=o) for o in (None, shared))
    assert plain["caption_consistency"] != kind["caption_consistency"]
