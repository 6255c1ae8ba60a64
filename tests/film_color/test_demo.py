"""The demo's film_color section at its own size (``python -m film_color.demo``): the published
model's accuracy, then the bounded FCNN + FILM run of the paper's recipe."""

from __future__ import annotations

import pytest

from film_color import demo

#: manipulation accuracy of the demo's 1000 + 1000-step FILM on 512 validation scenes (measured:
#: see the closing figure of make test-slow); chance is 0.125, a 1500 + 1500-step run scored 0.43
TRAINED_MANIPULATION_FLOOR = 0.2


@pytest.mark.slow
def test_the_demo_shows_the_published_model_then_trains_one(tmp_path, capsys):
    index = demo.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "manipulation accuracy 0.9053" in printed  # the published model, 512 scenes
    section = (tmp_path / "sections" / "020-film_color.html").read_text()
    assert "published.png" in section and "trained.png" in section
    metrics = demo.evaluate(tmp_path / "film_color" / "film" / "checkpoints" / "last.ckpt", 512)
    with capsys.disabled():  # the figure the floor was set from, in make test-slow's output
        print(f"\ndemo FILM manipulation accuracy: {metrics['manipulation_accuracy']:.4f}")
    assert metrics["manipulation_accuracy"] > TRAINED_MANIPULATION_FLOOR
    assert index.is_file()
