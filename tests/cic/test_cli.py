"""The cic package through its real entry points: the LightningCLI and `chromalab colorize`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from chromalab import cli as chromalab_cli
from chromalab.color import rgb_to_lab
from chromalab.data import CapShapes, ColorizationDataModule
from chromalab.io import load_image, recombine
from chromalab.rebalance import empirical_prior, rebalance_weights
from cic.cli import run
from cic.module import CICModule, subsample_targets
from tests.training import fit

CONFIGS = Path(__file__).resolve().parents[2] / "packages" / "cic" / "configs"
TINY = str(CONFIGS / "tiny.yaml")


def fit_tiny(root: Path, *extra: str) -> Path:
    return fit(run, TINY, root, *extra)


def test_checkpoint_rebuilds_without_arguments(tmp_path):
    ckpt = fit_tiny(tmp_path, "--model.lam", "0.25", "--model.sigma", "4")
    module = CICModule.load_from_checkpoint(ckpt)
    assert module.hparams.width == 0.125
    # the rebalancing weights estimated at fit start travel in the checkpoint
    assert bool(module.weights_ready) and module.class_weights.std() > 0
    # ... and are Eq. 6's for the prior of the first prior_batches (2) training batches, on
    # the targets' 1/4 grid
    data = ColorizationDataModule(
        image_size=32, batch_size=4, capshapes_size=32, capshapes_train_length=16
    )
    data.setup("fit")
    batches = itertools.islice(data.train_dataloader(), 2)
    targets = [subsample_targets(rgb_to_lab(b["rgb"])[:, 1:], 4) for b in batches]
    prior = empirical_prior(targets, module.bins)
    expected = rebalance_weights(prior, lam=0.25, bins=module.bins, sigma=4.0)
    assert torch.allclose(module.class_weights, expected.float(), rtol=1e-5)
    l = torch.rand(1, 1, 32, 32) * 100
    ab = module.colorize(l)
    assert ab.shape == (1, 2, 8, 8) and torch.isfinite(ab).all()


def test_the_optimizer_is_one_nested_argument_and_flat_checkpoints_still_load(tmp_path):
    from chromalab.modules import FLAT_OPTIMIZER_HPARAMS
    from cic.module import RELEASE_OPTIMIZER

    ckpt = fit_tiny(tmp_path / "run", "--model.optimizer.gamma", "0.5")
    module = CICModule.load_from_checkpoint(ckpt)
    # tiny.yaml's lr and the command line's gamma; the release's other settings
    assert module.hparams.optimizer == {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 1e-3,
                                        "step_size": 200_000, "gamma": 0.5}  # fmt: skip
    configured = module.configure_optimizers()
    assert configured["optimizer"].defaults["weight_decay"] == RELEASE_OPTIMIZER.weight_decay
    assert configured["lr_scheduler"]["scheduler"].gamma == 0.5
    with pytest.raises(ValueError, match="optimizer.lr must be > 0"):
        CICModule(width=0.125, optimizer={"lr": -1.0})
    # a checkpoint of the version that took lr, ..., lr_gamma flat
    blob = torch.load(ckpt, weights_only=True)
    hparams = blob["hyper_parameters"]
    optimizer = hparams.pop("optimizer")
    hparams.update({key: optimizer[field] for key, (_, field) in FLAT_OPTIMIZER_HPARAMS.items()})
    assert hparams["lr_gamma"] == 0.5 and "lr_step_size" in hparams
    torch.save(blob, tmp_path / "flat.ckpt")
    flat = CICModule.load_from_checkpoint(tmp_path / "flat.ckpt")
    assert flat.hparams.optimizer == module.hparams.optimizer
    resumed = fit_tiny(tmp_path / "resumed", "--ckpt_path", str(tmp_path / "flat.ckpt"),
                       "--trainer.max_steps", "3")  # fmt: skip
    assert CICModule.load_from_checkpoint(resumed).hparams.optimizer["gamma"] == 0.5


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

    # --temperature reaches the annealed mean (Eq. 8): T = 0 decodes the mode, the centre of
    # each pixel's most probable bin; T = 1 the mean of the distribution
    scene = tmp_path / "scene" / "scene.png"
    scene.parent.mkdir()
    rgb = CapShapes(length=1, size=32, seed=3)[0]["rgb"]
    Image.fromarray((rgb * 255).round().byte().permute(1, 2, 0).numpy()).save(scene)
    l = rgb_to_lab(load_image(scene)[None])[:, :1]
    module = CICModule.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        logits = module(l)
    decoded = {
        0.0: module.bins.decode_mode(logits),
        1.0: module.bins.decode_mean(torch.softmax(logits, dim=1)),
    }
    written = {}
    for t, ab in decoded.items():
        out = tmp_path / f"t{t}"
        args = ["colorize", str(scene.parent), "-o", str(out), "--model", "cic", "--ckpt",
                str(ckpt), "--temperature", str(t), "--quiet"]  # fmt: skip
        assert chromalab_cli.main(args) == 0
        written[t] = load_image(out / "scene.png")
        assert torch.allclose(written[t], recombine(l, ab)[0], atol=1.01 / 255), t
    assert (written[0.0] - written[1.0]).abs().max() > 0.1
