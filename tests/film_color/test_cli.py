"""The film_color package through its real entry points: the LightningCLI, ``film-color
explain`` and ``chromalab colorize``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from chromalab import cli as chromalab_cli
from chromalab.data import CapShapes
from chromalab.text import CHROMATIC_COLORS, COLOR_LEXICON
from film_color.cli import main, run
from film_color.language import Vocabulary, tokenize
from film_color.module import FilmColorModule
from film_color.weights import (
    TRAINING_STATE_KEYS,
    film_network_state,
    read_weights,
    slim_checkpoint,
    trained_scene_size,
    trained_steps,
)
from tests.training import fit

CONFIGS = Path(__file__).resolve().parents[2] / "packages" / "film_color" / "configs"
TINY = str(CONFIGS / "tiny.yaml")


def fit_tiny(root: Path, *extra: str) -> Path:
    return fit(run, TINY, root, *extra)


@pytest.fixture(scope="module")
def film_ckpt(tmp_path_factory) -> Path:
    """One tiny FILM fit shared by the read-only tests of this file."""
    import sys as _sys

    argv, _sys.argv = _sys.argv, ["film-color"]
    try:
        return fit_tiny(tmp_path_factory.mktemp("film"))
    finally:
        _sys.argv = argv


def test_checkpoint_rebuilds_without_arguments(film_ckpt):
    module = FilmColorModule.load_from_checkpoint(film_ckpt)
    assert module.hparams.network["conditioning"] == "film"
    assert module.network_config.width == 0.125 and module.hparams.network["width"] == 0.125
    assert module.input_size == 32
    # the vocabulary holds the words of the training captions, in the checkpoint
    scenes = CapShapes(length=16, size=32, seed=0)
    words = {w for i in range(16) for w in tokenize(scenes[i]["caption"])}
    assert module.vocabulary == Vocabulary.build(scenes[i]["caption"] for i in range(16))
    assert words <= set(module.vocabulary.tokens)
    assert module.network.caption_encoder.vocab_size == len(module.vocabulary)
    # rebalancing weights estimated at fit start travel in the checkpoint too
    assert bool(module.weights_ready) and module.class_weights.std() > 0
    l = torch.rand(2, 1, 32, 32) * 100
    ab = module.colorize(l, ["a red circle", "a blue square"])
    assert ab.shape == (2, 2, 8, 8) and torch.isfinite(ab).all()
    with pytest.raises(ValueError, match="captions"):
        module.colorize(l, None)


def test_fcnn_needs_no_vocabulary(tmp_path):
    ckpt = fit_tiny(tmp_path, "--model.network.conditioning", "none", "--model.lam", "1.0")
    module = FilmColorModule.load_from_checkpoint(ckpt)
    assert module.vocabulary is None and module.network.caption_encoder is None
    assert torch.equal(module.class_weights, torch.ones(625))
    assert module.colorize(torch.rand(1, 1, 32, 32) * 100).shape == (1, 2, 8, 8)


def test_rebalanced_one_hot_loss():
    module = FilmColorModule(network={"conditioning": "none", "width": 0.125})
    module.class_weights.copy_(torch.rand(625) + 0.5)
    logits = torch.randn(2, 625, 4, 4)
    ab = torch.rand(2, 2, 16, 16) * 120 - 60
    # reference: average the 4x4 cells, nearest of the 25x25 grid centres, weighted CE
    small = ab.unfold(2, 4, 4).unfold(3, 4, 4).mean(dim=(-1, -2))
    ticks = torch.arange(-120.0, 121.0, 10.0)
    a_idx = (small[:, 0, :, :, None] - ticks).abs().argmin(-1)
    b_idx = (small[:, 1, :, :, None] - ticks).abs().argmin(-1)
    target = a_idx * 25 + b_idx
    log_p = torch.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    expected = (-log_p * module.class_weights[target]).mean()
    assert torch.allclose(module.loss(logits, ab), expected, atol=1e-5)


def test_init_from_cic_checkpoint_through_the_cli(tmp_path):
    from tests.cic.test_cli import fit_tiny as fit_cic

    cic_ckpt = fit_cic(tmp_path / "cic", "--model.bins", "grid")
    ckpt = fit_tiny(
        tmp_path / "film",
        "--model.network.conditioning", "concat",
        "--model.init_from", str(cic_ckpt),
        "--model.optimizer.lr", "1e-12",
        "--model.lam", "1.0",
    )  # fmt: skip
    cic_state = torch.load(cic_ckpt, weights_only=True)["state_dict"]
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    # block 1 is not widened: copied (a learning rate of 1e-12 leaves it as it was)
    w = state["network.fcnn.blocks.0.0.weight"]
    assert torch.allclose(w, cic_state["network.blocks.0.0.weight"], atol=1e-6)
    w = state["network.fcnn.blocks.3.0.weight"]
    source = cic_state["network.blocks.3.0.weight"]
    assert torch.allclose(w[:, : source.shape[1]], source, atol=1e-6)
    assert w[:, source.shape[1] :].abs().max() < 1e-6
    # fitting a model loaded from a checkpoint keeps its weights: init_from is not re-applied
    module = FilmColorModule.load_from_checkpoint(ckpt)
    with torch.no_grad():
        module.network.fcnn.blocks[0][0].weight.add_(1.0)
    before = module.network.fcnn.blocks[0][0].weight.clone()
    module.setup("fit")
    assert torch.equal(module.network.fcnn.blocks[0][0].weight, before)


def test_colorize_command_with_caption(film_ckpt, tmp_path):
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    Image.new("RGB", (45, 30), (120, 80, 40)).save(image)
    args = [
        "colorize", str(image.parent), "--model", "film_color", "--ckpt", str(film_ckpt),
        "--quiet",
    ]  # fmt: skip
    assert chromalab_cli.main([*args, "-o", str(tmp_path / "out"), "--caption", "a red heart"]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (45, 30)
    # a language model without a caption is a clear error, not a silent guess
    assert chromalab_cli.main([*args, "-o", str(tmp_path / "none")]) == 1


def test_captions_reach_the_colorizer(film_ckpt):
    from chromalab.models import load_colorizer

    model = load_colorizer("film_color", ckpt=str(film_ckpt), device="cpu")
    assert model.uses_captions and model.input_size == 32
    with torch.no_grad():
        for film in model.module.network.film:  # make the modulation visible
            film.beta.weight.normal_()
    l = torch.rand(1, 1, 32, 32) * 100
    red = model.colorize(l, ["a red heart"])
    blue = model.colorize(l, ["a blue heart"])
    assert red.shape == (1, 2, 8, 8) and not torch.allclose(red, blue)


def test_explain_writes_heatmaps(film_ckpt, tmp_path, capsys):
    image = tmp_path / "in" / "scene.png"
    image.parent.mkdir()
    Image.new("RGB", (40, 40), (90, 140, 200)).save(image)
    out = tmp_path / "maps"
    main(["explain", "--ckpt", str(film_ckpt), str(image), "--caption", "a green leaf",
          "--capshapes", "2", "-o", str(out)])  # fmt: skip
    names = sorted(p.name for p in out.glob("*.png"))
    for stem in ("scene", "capshapes0000", "capshapes0001"):
        for suffix in ("colorized", "block6", "block7", "block8"):
            assert f"{stem}_{suffix}.png" in names
    assert Image.open(out / "scene_block6.png").size == (40, 40)
    with pytest.raises(SystemExit):
        main(["explain", "--ckpt", str(film_ckpt), str(image), "-o", str(out)])  # no caption
    assert "caption" in capsys.readouterr().err


def test_activation_maps_follow_footnote_4(film_ckpt):
    from film_color.explain import activation_maps, heatmap

    module = FilmColorModule.load_from_checkpoint(film_ckpt).eval()
    l = torch.rand(2, 1, 32, 32) * 100
    captions = ["a red heart", "a blue drop"]
    maps = activation_maps(module, l, captions)
    feats = module.features(l, captions)
    for block, m in maps.items():
        mean = feats[block - 1].mean(1)  # FILM: all channels are image channels
        ref = (mean - mean.amin((1, 2), True)) / (mean.amax((1, 2), True) - mean.amin((1, 2), True))
        assert torch.allclose(m, ref, atol=1e-5)
    colors = heatmap(torch.tensor([[[0.0, 1.0]]]))
    assert colors.shape == (1, 3, 1, 2) and colors[0, 2, 0, 0] > colors[0, 0, 0, 0]  # low = blue
    assert colors[0, 0, 0, 1] > colors[0, 2, 0, 1]  # high = red


def _paint(masks: torch.Tensor, color_ids: torch.Tensor) -> torch.Tensor:
    """ab image painting every object with the lexicon centre of its colour id."""
    centers = {c: torch.tensor(COLOR_LEXICON[c].ab) for c in CHROMATIC_COLORS}
    b, k, h, w = masks.shape
    ab = torch.zeros(b, 2, h, w)
    for i in range(b):
        for j, cid in enumerate(color_ids[i].tolist()):
            if cid >= 0:
                ab[i, :, masks[i, j]] = centers[cid][:, None]
    return ab


@pytest.mark.parametrize("conditioning", ["film", "none"])
def test_scene_metrics_score_the_swapped_colours(conditioning):
    """Oracles: painting the captions' colours is perfect on consistency and manipulation;
    ignoring the caption (an FCNN with perfect knowledge of the original colours) scores 0 on
    manipulation, since every judged object's colour word was changed."""
    import random

    from chromalab.metrics import manipulate_batch

    module = FilmColorModule(network={"conditioning": conditioning, "width": 0.125})
    scenes = CapShapes(length=24, size=32, seed=3)
    batch = torch.utils.data.default_collate([scenes[i] for i in range(24)])
    seeds = [module.manipulation_seed(int(i)) for i in batch["index"]]
    expected = manipulate_batch(batch, [random.Random(seed) for seed in seeds])
    by_caption = {c: expected["color_ids"][i] for i, c in enumerate(expected["caption"])}
    calls = []

    def follow_captions(captions):
        calls.append(captions)
        return _paint(batch["masks"], torch.stack([by_caption[c] for c in captions]))

    original = _paint(batch["masks"], batch["color_ids"])
    module.update_scene_metrics(batch, original, follow_captions, "val")
    consistency = module.metrics["val_consistency"].compute()
    manipulation = module.metrics["val_manipulation"].compute()
    assert float(consistency["accuracy"]) == 1.0
    if conditioning == "film":
        assert calls == [expected["caption"]] and float(manipulation["accuracy"]) == 1.0
    else:  # the FCNN's output does not move with the caption
        assert calls == [] and float(manipulation["accuracy"]) == 0.0
    judged = (expected["color_ids"] != batch["color_ids"]).sum()
    assert int(module.metrics["val_manipulation"].total[0]) == int(judged) > 0


def test_caption_variants_change_only_colour_words():
    from chromalab.text import caption_variants, find_color_words

    caption = "a red heart and a blue star on a striped green background"
    variants = caption_variants(caption)
    assert len(variants) == 3 and variants[0] == caption

    def skeleton(text):  # the text between (and around) the colour words, "an" read as "a"
        pieces, last = [], 0
        for start, end, _ in find_color_words(text):
            pieces.append(text[last:start])
            last = end
        return [re.sub(r"\ban\b", "a", piece) for piece in [*pieces, text[last:]]]

    colours = [[cid for *_, cid in find_color_words(v)] for v in variants]
    for variant, ids in zip(variants[1:], colours[1:], strict=True):
        assert skeleton(variant) == skeleton(caption)
        assert len(set(ids)) == 3  # distinct colours stay distinct
        assert all(new != old for new, old in zip(ids, colours[0], strict=True))
    assert colours[1] != colours[2]
    with pytest.raises(ValueError, match="colour word"):
        caption_variants("a heart and a star")


def test_demo_section_shows_the_published_model_then_the_trained_run(film_ckpt, tmp_path):
    from film_color.demo import write_section

    published = {"acc@1": 0.25, "acc@5": 0.5, "caption_consistency": 0.4}
    trained = {"acc@1": 0.125, "manipulation_accuracy": 0.375}
    index = write_section(tmp_path, (film_ckpt, published), (film_ckpt, trained, 12.0), 8)
    section = (tmp_path / "sections" / "020-film_color.html").read_text()
    assets = tmp_path / "assets" / "film_color"
    assert section.index("published.png") < section.index("trained.png")
    assert "0.25" in section and "0.375" in section and "12 s of training" in section
    # the published grid: 3 scenes x (truth, grey, 3 captions) of 32 px scaled by 3
    width, height = Image.open(assets / "published.png").size
    assert width >= 5 * 32 * 3 and height >= 3 * 32 * 3
    assert (assets / "published-maps.png").is_file() and (assets / "trained-maps.png").is_file()
    assert "Learning to Color from Language" in index.read_text()
    # without a published model the section still shows the run
    write_section(tmp_path, None, (film_ckpt, trained, None), 8)
    section = (tmp_path / "sections" / "020-film_color.html").read_text()
    assert "published.png" not in section and "reused checkpoint" in section


def test_init_from_a_checkpoint_of_the_same_conditioning_takes_it_whole(film_ckpt, tmp_path):
    source = FilmColorModule.load_from_checkpoint(film_ckpt)
    ckpt = fit_tiny(
        tmp_path / "again",
        "--model.init_from", str(film_ckpt),
        "--model.optimizer.lr", "1e-12",
        "--data.capshapes_train_options", '{"max_objects": 1}',  # other captions, other words
    )  # fmt: skip
    module = FilmColorModule.load_from_checkpoint(ckpt)
    # the vocabulary is the checkpoint's, not one built from this run's captions
    assert module.vocabulary == source.vocabulary
    # every weight came over: convolutions, readout, caption encoder and FiLM projections
    mine, theirs = dict(module.network.named_parameters()), dict(source.network.named_parameters())
    assert mine.keys() == theirs.keys()
    assert any(k.startswith("caption") or "film" in k for k in mine)
    for key, value in mine.items():
        assert torch.allclose(value, theirs[key], atol=1e-6), key
    # ... with a fresh optimizer: the step counter starts again
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2
    # another conditioning takes only the convolutional layers (the CIC path)
    assert film_network_state(read_weights(film_ckpt), "concat") is None
    assert film_network_state(read_weights(film_ckpt), "none") is None


def test_init_from_continuations_count_the_steps_behind_the_weights(film_ckpt, tmp_path):
    first = torch.load(film_ckpt, weights_only=True)["global_step"]
    assert first > 0 and trained_steps(read_weights(film_ckpt)) == first
    again = fit_tiny(tmp_path / "again", "--model.init_from", str(film_ckpt))
    third = fit_tiny(tmp_path / "third", "--model.init_from", str(again))
    steps = [torch.load(c, weights_only=True)["global_step"] for c in (again, third)]
    assert trained_steps(read_weights(again)) == first + steps[0]
    assert trained_steps(read_weights(third)) == first + steps[0] + steps[1]
    module = FilmColorModule.load_from_checkpoint(third)
    assert module.steps_before == first + steps[0] and module.total_steps == module.steps_before
    # resuming a continuation (not init_from again) keeps the count of the steps before it
    resumed = fit_tiny(
        tmp_path / "third", "--ckpt_path", str(third), "--trainer.max_steps", str(steps[1] + 1)
    )
    assert trained_steps(read_weights(resumed)) == first + steps[0] + steps[1] + 1
    # weights taken layer by layer from another conditioning are not counted
    concat = fit_tiny(
        tmp_path / "concat", "--model.network.conditioning", "concat",
        "--model.init_from", str(film_ckpt),
    )  # fmt: skip
    blob = read_weights(concat)
    assert trained_steps(blob) == blob["global_step"]


def test_slim_checkpoint_keeps_what_the_weights_need(film_ckpt, tmp_path, capsys):
    from film_color.slim import main as slim_main

    slim = tmp_path / "out" / "slim.ckpt"
    slim_main([str(film_ckpt), str(slim)])
    assert "slim.ckpt" in capsys.readouterr().out
    full, blob = read_weights(film_ckpt), read_weights(slim)
    assert all(k in full for k in TRAINING_STATE_KEYS)  # what there is to drop
    assert not any(k in blob for k in TRAINING_STATE_KEYS)
    assert slim.stat().st_size < film_ckpt.stat().st_size
    # the model, its vocabulary and its step count come back unchanged
    source, module = (FilmColorModule.load_from_checkpoint(p) for p in (film_ckpt, slim))
    assert module.vocabulary == source.vocabulary
    mine = module.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(mine[key], value), key
    assert trained_steps(blob) == trained_steps(full)
    assert film_network_state(blob, "film") is not None  # init_from takes it whole
    cli = run(["validate", "--config", TINY, "--ckpt_path", str(slim),
               "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert "val/manipulation_accuracy" in cli.trainer.callback_metrics
    torch.save(full["state_dict"], tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        slim_checkpoint(tmp_path / "bare.pt", tmp_path / "x.ckpt")


def test_relative_maps_train_from_a_model_without_them_and_reload(film_ckpt, tmp_path):
    ckpt = fit_tiny(
        tmp_path / "relative",
        "--model.init_from", str(film_ckpt),
        "--model.network.relative_maps", "1",
    )  # fmt: skip
    module = FilmColorModule.load_from_checkpoint(ckpt).eval()
    assert module.hparams.network["relative_maps"] == 1 and len(module.network.relative) == 8
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    attention = saved["network.relative.3.attention.weight"]
    assert attention.abs().max() > 0  # trained away from its zero start, and kept
    assert torch.equal(module.network.relative[3].attention.weight, attention)


def test_init_from_a_checkpoint_of_another_size_names_the_problem(film_ckpt, tmp_path):
    with pytest.raises(ValueError, match="another size"):
        fit_tiny(
            tmp_path / "wider", "--model.init_from", str(film_ckpt),
            "--model.network.hidden_size", "12",
        )  # fmt: skip


def test_evaluation_draws_the_scenes_at_the_trained_size(film_ckpt, monkeypatch):
    from film_color import evaluate

    assert trained_scene_size(read_weights(film_ckpt)) == 32  # tiny.yaml's capshapes_size
    assert trained_scene_size({"datamodule_hyper_parameters": {"source": "captions"}}) is None
    assert trained_scene_size({}) is None
    sizes = []
    data = evaluate.scene_data

    def recording(scenes, size, *args):
        sizes.append(size)
        return data(scenes, size, *args)

    monkeypatch.setattr(evaluate, "scene_data", recording)
    metrics = evaluate.evaluate(film_ckpt, scenes=8)
    assert 0.0 <= metrics["manipulation_accuracy"] <= 1.0
    test = evaluate.evaluate(film_ckpt, scenes=8, split="test", size=48)
    assert set(test) == set(metrics)  # the same metrics, from the test scenes
    assert 0.0 <= evaluate.grid_ceiling(scenes=8, size=32) <= 1.0
    assert sizes == [32, 48, 32]
    with pytest.raises(ValueError, match="split"):
        evaluate.evaluate(film_ckpt, scenes=8, split="train")


def test_input_normalization_is_checkpointed_and_checked_by_init_from(film_ckpt, tmp_path):
    ckpt = fit_tiny(tmp_path / "image", "--model.network.input_normalization", "image")
    module = FilmColorModule.load_from_checkpoint(ckpt).eval()
    assert module.network.fcnn.input_normalization == "image"
    l = torch.rand(2, 1, 32, 32) * 40 + 30
    captions = ["a red circle", "a blue star on the left and a green star on the right"]
    with torch.no_grad():  # per-image standardized input: brightness and contrast do not matter
        assert torch.allclose(module(l * 0.7 + 20, captions), module(l, captions), atol=1e-4)
    # the same conditioning continues whole; weights trained on other inputs are refused
    again = fit_tiny(
        tmp_path / "again", "--model.network.input_normalization", "image",
        "--model.init_from", str(ckpt),
    )  # fmt: skip
    loaded = FilmColorModule.load_from_checkpoint(again)
    assert loaded.hparams.network["input_normalization"] == "image"
    with pytest.raises(ValueError, match="input_normalization 'paper'"):
        fit_tiny(
            tmp_path / "mixed", "--model.network.input_normalization", "image",
            "--model.init_from", str(film_ckpt),
        )  # fmt: skip


@pytest.mark.parametrize("conditioning", ["none", "concat", "film"])
def test_channels_last_changes_the_layout_not_the_result(conditioning):
    torch.manual_seed(0)
    network = dict(conditioning=conditioning, width=0.125, embedding_dim=8, hidden_size=4)
    kwargs = {"network": network}
    last = FilmColorModule(**kwargs).eval()
    plain = FilmColorModule(**kwargs, channels_last=False).eval()
    captions = ["a red circle and a blue star", "the left heart is green"]
    for module in (last, plain):
        module.set_vocabulary(Vocabulary.build(captions))
    plain.load_state_dict(last.state_dict())
    conv = last.network.fcnn.blocks[3][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.network.fcnn.blocks[3][0].weight.is_contiguous()
    l = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.allclose(last(l, captions), plain(l, captions), atol=1e-4)


def test_the_colorizer_explains_with_the_film_maps(film_ckpt):
    from chromalab.models import load_colorizer
    from chromalab.report import heatmap
    from film_color.explain import activation_maps

    model = load_colorizer("film_color", ckpt=str(film_ckpt), device="cpu")
    l = torch.rand(2, 1, 32, 32) * 100
    captions = ["a red circle", "a blue star"]
    ab, maps = model.explain(l, captions)
    assert torch.equal(ab, model.colorize(l, captions))
    assert [list(m) for m in maps] == [["block 6", "block 7", "block 8"]] * 2
    block8 = heatmap(activation_maps(model.module, l, captions, (8,))[8])
    assert torch.equal(maps[1]["block 8"], block8[1])
