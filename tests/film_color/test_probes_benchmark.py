"""``benchmarks/film_table1_probes.py`` on a tiny FILM checkpoint: the probe and the rows."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from chromalab.data.capshapes import SHAPES
from film_color.module import FilmColorModule
from film_color.weights import read_weights, trained_scene_size
from tests.training import benchmark_module, fit

TINY = str(Path(__file__).resolve().parents[2] / "packages/film_color/configs/tiny.yaml")


@pytest.fixture(scope="module")
def probes():
    with benchmark_module("film_table1_probes") as module:
        yield module


def test_linear_probe_reads_what_is_linearly_there(probes):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=generator)
    separable = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    assert probes.linear_probe(x, separable, 400, 4) > 0.9
    noise = torch.randint(0, 4, (600,), generator=generator)
    assert probes.linear_probe(x, noise, 400, 4) < 0.4  # chance is 0.25


def test_rows_of_a_tiny_film_model(probes, tmp_path, monkeypatch):
    from film_color.cli import run

    monkeypatch.setattr(sys, "argv", ["film-color"])
    ckpt = fit(run, TINY, tmp_path)
    module = FilmColorModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    size = trained_scene_size(read_weights(ckpt))
    assert size is not None
    outcomes = probes.manipulation_outcomes(module, scenes=16, size=size)
    shares = [outcomes[f"{o} (%)"] for o in probes.OUTCOMES]
    assert sum(shares) == pytest.approx(100.0)
    per_count = [v for k, v in outcomes.items() if k.startswith("acc, ") and "object" in k]
    assert per_count and all(0 <= v <= 100 for v in per_count)
    # the shared / own noun split partitions the scored objects
    shared = outcomes["objects with a shared noun (%)"] / 100
    assert 0 < shared < 1
    split = shared * outcomes["acc, shared noun (%)"] + (1 - shared) * outcomes["acc, own noun (%)"]
    assert split == pytest.approx(outcomes["new colour (%)"])
    caption = probes.caption_probe(module, captions=240)
    assert list(caption) == [f"caption probe: {s} (%)" for s in SHAPES]
    assert all(0 <= v <= 100 for v in caption.values())
    pair = probes.pair_probe(module, captions=600)
    assert list(pair) == [
        "pair probe: own noun (%)",
        "pair probe: left/top of a shared noun (%)",
        "pair probe: captions per shape",
    ]
    assert all(0 <= v <= 100 for v in list(pair.values())[:2])
    shape = probes.shape_probe(module, size, scenes=40)
    assert list(shape) == [f"shape probe: block {b} (%)" for b in range(1, 9)]
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in shape.values())


def test_pair_probe_reads_the_colour_of_the_left_or_top_one(probes):
    def first(caption):
        return [
            m.group("colour", "noun") for p in probes._FIRST_OF_A_PAIR for m in p.finditer(caption)
        ]

    assert first("a red circle on the left and a blue circle on the right") == [("red", "circle")]
    assert first("an image of a green square at the bottom, a blue square at the top") == [
        ("blue", "square")
    ]
    assert first("the right star is yellow, the top leaf is green and the left star is pink") == [
        ("green", "leaf"),
        ("pink", "star"),
    ]


def test_table1_takes_labelled_checkpoints(tmp_path):
    with benchmark_module("film_table1") as table:
        ckpt = tmp_path / "epoch=0-step=4000.ckpt"  # Lightning's names hold "=" too
        ckpt.write_bytes(b"")
        assert table.parse_labelled(f"FILM, longer={ckpt}") == ("FILM, longer", ckpt)
        for bad in (str(ckpt), f"={ckpt}", "FILM=", f"FILM={tmp_path / 'missing.ckpt'}"):
            with pytest.raises(SystemExit):
                table.parse_labelled(bad)


def test_direct_binding_learns_the_colours_from_the_captions(probes):
    out = probes.direct_binding(
        steps=300, train_captions=1500, test_captions=500, embedding_dim=16, hidden_size=32
    )
    assert out["steps"] == 300 and 0 < out["training captions"] <= 1500
    own = out["trained directly: own noun (%)"]
    pair = out["trained directly: left/top of a shared noun (%)"]
    assert 0 <= pair <= 100
    assert own > 40  # chance is about 1/8; the encoder must have read the colour words


def test_binding_targets_put_each_answer_in_its_slot(probes):
    own = [[(0, 3)], [], [(1, 5)]] + [[] for _ in SHAPES[3:]]
    pairs = [[(1, 2)]] + [[] for _ in SHAPES[1:]]
    targets = probes._binding_targets(2, own, pairs)
    assert targets.shape == (2, len(SHAPES), 2)
    assert (targets >= 0).sum() == 3
    assert targets[0, 0, 0] == 3 and targets[1, 2, 0] == 5 and targets[1, 0, 1] == 2
