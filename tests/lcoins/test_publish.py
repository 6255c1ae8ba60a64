"""``python -m lcoins.publish``: a checkpoint becomes a save_pretrained folder with a model card
whose sha256 are the files', and the folder scores what the checkpoint scores."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from lcoins.cli import run
from lcoins.evaluate import evaluate
from lcoins.evaluate import main as evaluate_main
from lcoins.explain import explain_main
from lcoins.publish import main as publish_main
from tests.lcoins.components import TINY_CONFIG
from tests.training import fit


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    argv, sys.argv = sys.argv, ["lcoins"]
    try:
        root = tmp_path_factory.mktemp("fit")
        ckpt = fit(run, TINY_CONFIG, root, "--trainer.max_steps", "3")
    finally:
        sys.argv = argv
    scores = root / "scores.json"
    scores.write_text(json.dumps({"manipulation accuracy": 0.5}))
    folder = root / "published"
    publish_main([str(ckpt), str(folder), "--recipe", TINY_CONFIG, "--scores", str(scores)])
    return ckpt, folder


def test_the_card_gives_the_files_sha256_the_recipe_and_the_scoring_command(published):
    _, folder = published
    card = (folder / "README.md").read_text()
    for name in ("config.json", "model.safetensors"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"| {name} | `{digest}` |" in card
    assert f"lcoins fit --config {TINY_CONFIG}" in card
    assert f"python -m lcoins.evaluate {folder} --split test --scenes 2048" in card
    assert f"lcoins explain --ckpt {folder} --capshapes 4 -o groups/" in card
    assert "3 optimizer steps of batch 4" in card and "| manipulation accuracy | 0.5000 |" in card


def test_the_folder_scores_what_the_checkpoint_scores(published, capsys):
    ckpt, folder = published
    ours = evaluate(ckpt, scenes=8, split="test")
    capsys.readouterr()
    evaluate_main([str(folder), "--split", "test", "--scenes", "8"])  # the card's command
    out = capsys.readouterr().out
    theirs = json.loads(out[out.index("{") :])
    for key in ("psnr", "caption_consistency", "manipulation_accuracy"):
        assert theirs[key] == pytest.approx(ours[key], abs=1e-6), key


def test_explain_reads_the_folder(published, tmp_path):
    _, folder = published
    assert explain_main(["--ckpt", str(folder), "--capshapes", "2", "-o", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) >= 2


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        evaluate_main([str(tmp_path / "nothing")])
    with pytest.raises(FileNotFoundError, match="no LCoInsModule checkpoint or weights folder"):
        evaluate(tmp_path / "nothing", scenes=4)


def test_the_demo_section_shows_a_published_folder(published, tmp_path):
    """``python -m lcoins.demo``: shared-noun scenes under three captions that differ in colour
    words only, their group maps, and the held-out scores of both kinds of scenes; without
    weights it writes no section."""
    from lcoins.demo import main as demo

    _, folder = published
    out = tmp_path / "report"
    assert demo(["--out", str(out), "--weights", str(folder), "--scenes", "4"]) is not None
    section = (out / "sections" / "030-lcoins.html").read_text()
    assert "shared-noun scenes" in section and "manipulation_accuracy" in section
    assert "lcoins/shared-noun.png" in section and (out / "index.html").is_file()
    assert str(folder) in section  # outside the checkout: shown as it is
    from PIL import Image

    grid = Image.open(out / "assets" / "lcoins" / "shared-noun.png")
    assert grid.width > grid.height  # rows of eight panels
    assert demo(["--out", str(tmp_path / "none"), "--weights", str(tmp_path / "no")]) is None
