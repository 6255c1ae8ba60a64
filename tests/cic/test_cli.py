"""The cic package through its real entry points: the LightningCLI and `chromalab colorize`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from chromalab import cli as chromalab_cli
from cic.cli import run
from cic.module import CICModule, subsample_targets
from tests.training import fit, kill_and_resume, read_metrics, run_ddp

CONFIGS = Path(__file__).resolve().parents[2] / "packages" / "cic" / "configs"
TINY = str(CONFIGS / "tiny.yaml")


def fit_tiny(root: Path, *extra: str) -> Path:
    return fit(run, TINY, root, *extra)


def test_fast_dev_run():
    run(["fit", "--config", TINY, "--trainer.fast_dev_run", "true"])


def test_fit_validate_test_predict(tmp_path):
    ckpt = fit_tiny(tmp_path)
    for sub in ("validate", "test"):
        run(
            [
                sub,
                "--config",
                TINY,
                "--ckpt_path",
                str(ckpt),
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    cli = run(
        [
            "predict",
            "--config",
            TINY,
            "--ckpt_path",
            str(ckpt),
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    predictions = cli.trainer.predict_loop.predictions
    assert predictions and predictions[0]["rgb"].shape == (4, 3, 32, 32)
    assert predictions[0]["ab"].shape == (4, 2, 8, 8)  # the network's 1/4 resolution
    assert predictions[0]["rgb"].min() >= 0 and predictions[0]["rgb"].max() <= 1


def test_checkpoint_rebuilds_without_arguments(tmp_path):
    ckpt = fit_tiny(tmp_path, "--model.lam", "0.5")
    module = CICModule.load_from_checkpoint(ckpt)
    assert module.hparams.width == 0.125
    # the rebalancing weights estimated at fit start travel in the checkpoint
    assert bool(module.weights_ready) and module.class_weights.std() > 0
    l = torch.rand(1, 1, 32, 32) * 100
    ab = module.colorize(l)
    assert ab.shape == (1, 2, 8, 8) and torch.isfinite(ab).all()


def test_no_rebalancing_uses_unit_weights(tmp_path):
    ckpt = fit_tiny(tmp_path, "--model.lam", "1.0")
    module = CICModule.load_from_checkpoint(ckpt)
    assert torch.equal(module.class_weights, torch.ones_like(module.class_weights))


def test_deep_supervision_and_prior_file(tmp_path):
    prior = tmp_path / "prior.pt"
    assert (
        chromalab_cli.main(
            [
                "prior",
                "--data",
                "capshapes",
                "--limit",
                "8",
                "--image-size",
                "32",
                "-o",
                str(prior),
                "--quiet",
            ]
        )
        == 0
    )
    fit_tiny(tmp_path, "--model.deep_supervision", "true", "--model.prior", str(prior))


def test_subsample_targets_takes_cell_centres():
    ab = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    out = subsample_targets(ab, 4)
    assert out.shape == (1, 2, 2, 2)
    assert torch.equal(out[0, 0], ab[0, 0, 2::4, 2::4])


def test_init_from_released_weights(tmp_path):
    from tests.cic.test_networks_weights import release_like_model

    path = tmp_path / "release.pth"
    torch.save(release_like_model(width=0.125).state_dict(), path)
    ckpt = fit_tiny(tmp_path, "--model.bins", "released", "--model.init_from", str(path))
    module = CICModule.load_from_checkpoint(ckpt)
    expected = release_like_model().model_out.weight[:, :, 0, 0].T * 110
    assert torch.allclose(module.bins.centers, expected, atol=1e-4)


def test_released_bins_without_weights_fail_clearly(tmp_path):
    with pytest.raises(RuntimeError, match="init_from"):
        fit_tiny(tmp_path, "--model.bins", "released")


def test_colorize_command_with_checkpoint(tmp_path, capsys):
    ckpt = fit_tiny(tmp_path)
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    Image.new("RGB", (45, 30), (120, 80, 40)).save(image)
    code = chromalab_cli.main(
        [
            "colorize",
            str(image.parent),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "cic",
            "--ckpt",
            str(ckpt),
            "--size",
            "32",
            "--quiet",
        ]
    )
    assert code == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (45, 30)


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cic.cli", *args]


def test_ddp_two_processes_train_and_sync_metrics(tmp_path):
    # training in 2 processes: the prior is estimated from both ranks' batches (all_gather)
    root = f"--trainer.default_root_dir={tmp_path / 'train'}"
    run_ddp(_cli_command, "fit", "--config", TINY, root, cwd=tmp_path)
    ckpt = sorted((tmp_path / "train" / "checkpoints").glob("*.ckpt"))[-1]
    assert bool(CICModule.load_from_checkpoint(ckpt).weights_ready)
    common = ["validate", "--config", TINY, "--ckpt_path", str(ckpt),
              "--trainer.logger=lightning.pytorch.loggers.CSVLogger"]  # fmt: skip
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([*common, f"--trainer.logger.save_dir={single}", f"--trainer.default_root_dir={single}"])
    run_ddp(_cli_command, *common, f"--trainer.logger.save_dir={ddp}",
            f"--trainer.default_root_dir={ddp}", cwd=tmp_path)  # fmt: skip
    one, two = read_metrics(single), read_metrics(ddp)
    # the two ranks saw disjoint halves of the validation set; synced metrics equal the total
    for key in ("val/auc_cmf", "val/auc_cmf_rebalanced", "val/colorfulness"):
        assert two[key] == pytest.approx(one[key], abs=1e-5), key


def test_resume_after_kill(tmp_path):
    kill_and_resume(_cli_command, TINY, tmp_path)
