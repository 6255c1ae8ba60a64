import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from chromalab.runs import train_or_reuse, trained_steps
from cic import demo
from cic.cli import CONFIGS, run
from cic.evaluate import evaluate, gray_predictor, model_predictor, random_predictor
from cic.module import CICModule

TINY = CONFIGS / "tiny.yaml"
#: rebalanced AuC CMF points by which the demo's 600-step model beats Gray (measured: 68.35 vs
#: 66.66 on these scenes, benchmarks/results/cic_table1.md)
CIC_REBALANCED_MARGIN = 0.8


def _batch(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, size, size, generator=g)
    l, ab = rgb_to_l_ab(rgb)
    return {"rgb": rgb, "l": l, "ab": ab}


def test_gray_and_random_baselines():
    batch = _batch()
    assert torch.equal(gray_predictor(batch), torch.zeros_like(batch["ab"]))
    pool = _batch(seed=1)["ab"]
    out = random_predictor(pool, seed=0)(batch)
    # every prediction is one of the pool's ab maps
    assert all(any(torch.equal(o, p) for p in pool) for o in out)
    gray = evaluate(gray_predictor, [batch])
    assert gray["colorfulness"] < 0.05 and gray["images"] == 4  # 0-255 scale
    perfect = evaluate(lambda b: b["ab"], [batch])
    assert perfect["auc_cmf"] == 100.0 and perfect["auc_cmf"] > gray["auc_cmf"]


def test_train_or_reuse_reuses_and_resumes(tmp_path):
    ckpt, seconds = train_or_reuse(run, tmp_path / "run", TINY, 2, progress=False)
    assert ckpt == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert trained_steps(ckpt) == 2 and seconds > 0
    stamp = os.stat(ckpt).st_mtime_ns
    assert train_or_reuse(run, tmp_path / "run", TINY, 2, progress=False) == (ckpt, seconds)
    assert os.stat(ckpt).st_mtime_ns == stamp  # reused, not retrained
    _, total = train_or_reuse(run, tmp_path / "run", TINY, 3, progress=False)
    assert trained_steps(ckpt) == 3  # resumed to the new budget
    assert total > seconds  # the time of both runs
    train_or_reuse(run, tmp_path / "run", TINY, 1, progress=False, retrain=True)
    assert trained_steps(ckpt) == 1  # started over


def test_train_or_reuse_keeps_the_last_steps_of_a_run_ending_mid_epoch(tmp_path):
    # 64 scenes of batch 4: 16 steps an epoch; checkpoints every 2 steps; 3 steps end between
    # two checkpoints, mid-epoch, where Lightning saves nothing by itself
    longer = ["--data.capshapes_train_length", "64"]
    ckpt, _ = train_or_reuse(run, tmp_path / "run", TINY, 3, longer, progress=False,
                             checkpoint_every=2)  # fmt: skip
    assert trained_steps(ckpt) == 3
    _, _ = train_or_reuse(run, tmp_path / "run", TINY, 5, longer, progress=False,
                          checkpoint_every=2)  # fmt: skip
    assert trained_steps(ckpt) == 5  # resumed from step 3, not from 2


def test_demo_writes_the_report(tmp_path):
    index = demo.main(
        [
            "--out",
            str(tmp_path / "demo"),
            "--steps",
            "2",
            "--config",
            str(TINY),
            "--photo-size",
            "64",
            "--scenes",
            "16",
        ]
    )
    html = Path(index).read_text()
    assert "cic — Colorful Image Colorization" in html and "Gray" in html
    assert (tmp_path / "demo" / "assets" / "cic" / "capshapes.png").is_file()
    assert (tmp_path / "demo" / "assets" / "cic" / "photos.png").is_file()


@pytest.mark.slow
def test_the_demo_sized_run_colours_better_than_grey(tmp_path):
    """``python -m cic.demo`` at its own size (600 steps of capshapes.yaml) writes its report,
    and its model beats the Gray baseline on the rebalanced AuC CMF and on colourfulness."""
    index = demo.main(["--out", str(tmp_path / "demo")])
    assert "Gray" in Path(index).read_text()
    ckpt = tmp_path / "demo" / "cic" / "checkpoints" / "last.ckpt"
    assert trained_steps(ckpt) == 600
    module = CICModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    batches = list(DataLoader(CapShapes(length=256, size=64, seed=1), batch_size=64))
    ours = evaluate(model_predictor(module), batches)
    gray = evaluate(gray_predictor, batches)
    assert ours["auc_cmf_rebalanced"] > gray["auc_cmf_rebalanced"] + CIC_REBALANCED_MARGIN
    assert ours["colorfulness"] > 7.0 > gray["colorfulness"]  # measured: 14.0 and 0
