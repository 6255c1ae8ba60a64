"""The lcad package through its LightningCLI: the three stages chained on tiny configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lcad.cli import CONFIGS, run, split_stage
from lcad.module import LCADDiffusionModule
from tests.training import fit


def _config(stage: str) -> str:
    return str(CONFIGS / f"tiny-{stage}.yaml")


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    """Stage 0, 1 and 2 fitted in turn (2 steps each), each from the one before."""
    root = tmp_path_factory.mktemp("lcad")
    argv, sys.argv = sys.argv, ["lcad"]  # the module-scoped fixture runs before conftest's
    try:
        return _fit_stages(root)
    finally:
        sys.argv = argv


def _fit_stages(root: Path) -> dict[str, Path]:
    ckpts: dict[str, Path] = {}
    ckpts["autoencoder"] = fit(run, _config("autoencoder"), root / "s0", "--stage", "autoencoder")
    ckpts["compression"] = fit(
        run, _config("compression"), root / "s1", "--stage", "compression",
        "--model.vae_from", str(ckpts["autoencoder"]),
    )  # fmt: skip
    ckpts["diffusion"] = fit(
        run, _config("diffusion"), root / "s2", "--stage=diffusion",
        "--model.compression_from", str(ckpts["compression"]),
    )  # fmt: skip
    return ckpts


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_each_stage_starts_from_the_one_before(stages):
    vae = {k: v for k, v in _state(stages["autoencoder"]).items() if k.startswith("vae.")}
    stage1 = _state(stages["compression"])
    for key, value in vae.items():  # frozen in stage 1: carried over unchanged
        assert torch.equal(stage1[f"autoencoder.{key}"], value), key
    stage2 = _state(stages["diffusion"])
    for key, value in stage1.items():
        if key.startswith("autoencoder."):
            assert torch.equal(stage2[key], value), key
    encoder = [k for k in stage1 if "luminance_encoder.zero_convs" in k and k.endswith("weight")]
    assert any(stage1[k].abs().sum() > 0 for k in encoder)  # stage 1 trained its projections


def test_validate_and_predict_the_diffusion_stage(stages, tmp_path):
    common = ["--stage", "diffusion", "--config", _config("diffusion"), "--ckpt_path",
              str(stages["diffusion"]), "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    metrics = run(["validate", *common]).trainer.callback_metrics
    for key in ("psnr", "ssim", "loss", "caption_consistency", "manipulation_accuracy"):
        assert f"val/{key}" in metrics, key
    predictions = run(["predict", *common]).trainer.predict_loop.predictions
    rgb = predictions[0]["rgb"]
    assert rgb.shape == (2, 3, 32, 32) and rgb.min() >= 0 and rgb.max() <= 1
    module = LCADDiffusionModule.load_from_checkpoint(stages["diffusion"])  # no weight file needed
    assert torch.equal(
        module.unet.unet.conv_in.weight, _state(stages["diffusion"])["unet.unet.conv_in.weight"]
    )


def test_validate_and_predict_the_compression_stage(stages, tmp_path):
    args = ["validate", "--stage", "compression", "--config", _config("compression"),
            "--ckpt_path", str(stages["compression"]), "--trainer.default_root_dir",
            str(tmp_path)]  # fmt: skip
    metrics = run(args).trainer.callback_metrics
    assert 0 < float(metrics["val/psnr"]) < 100
    args[0] = "predict"
    rgb = run(args).trainer.predict_loop.predictions[0]["rgb"]
    assert rgb.shape == (2, 3, 32, 32) and rgb.min() >= 0 and rgb.max() <= 1


def test_evaluate_scores_each_level_and_the_ablation_switch(stages):
    from lcad.evaluate import evaluate, main

    scores = evaluate(stages["diffusion"], scenes=4, size=32, batch_size=2)
    for key in ("psnr", "ssim", "caption_consistency", "caption_consistency_complete",
                "caption_consistency_partial", "caption_consistency_scarce",
                "unmentioned_canonical_accuracy", "manipulation_accuracy"):  # fmt: skip
        assert key in scores, key
    # W/o LIC: the same checkpoint decoded by the VAE alone (trained projections: other colours)
    plain = evaluate(stages["diffusion"], scenes=4, size=32, batch_size=2,
                     overrides={"lic": False})  # fmt: skip
    assert plain["psnr"] != scores["psnr"]
    recon = evaluate(stages["compression"], "compression", scenes=4, size=32, batch_size=2)
    assert 0 < recon["psnr"] < 100 and "caption_consistency" not in recon
    with pytest.raises(SystemExit):
        main([str(stages["diffusion"]), "--set", "lic"])


def test_stage_option():
    assert split_stage(["fit", "--stage", "compression", "-c", "x"]) == (
        "compression",
        ["fit", "-c", "x"],
    )
    assert split_stage(["fit"])[0] == "diffusion"
    with pytest.raises(SystemExit, match="must be one of"):
        split_stage(["fit", "--stage", "vae"])


def test_fit_on_the_release_caption_format_skips_and_counts_a_bad_image(tmp_path):
    """The release's {"file.jpg": [captions]} file, one image unreadable: training runs on the
    others and the data module counts the bad one."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    captions = {}
    for i in range(6):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        captions[f"{i}.png"] = [f"a red shape number {i}", "a colourful picture"]
    (tmp_path / "3.png").write_bytes(b"not an image")
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    cli = run([
        "fit", "--stage", "diffusion", "--config", _config("diffusion"),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "3",
        "--data.source", "captions", "--data.caption_format", "lcad",
        "--data.train_path", str(tmp_path / "captions.json"), "--data.batch_size", "2",
    ])  # fmt: skip
    assert cli.trainer.global_step == 3
    assert cli.trainer.datamodule.skipped_samples == 1


def _sam_checkpoint(path: Path, monkeypatch) -> Path:
    """A SAM checkpoint of a 768-wide, one-block image encoder (read as ``vit_b``), with the
    registry's ``vit_b`` builder swapped for that architecture (the real one is 91M
    parameters)."""
    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT

    from tests.lcad.components import tiny_sam

    def build(checkpoint=None):
        sam = tiny_sam()
        sam.image_encoder = ImageEncoderViT(
            img_size=64, patch_size=16, embed_dim=768, depth=1, num_heads=2, out_chans=16
        )
        return sam

    monkeypatch.setitem(sam_model_registry, "vit_b", build)
    torch.save(build().state_dict(), path)
    return path


def test_chromalab_colorize_with_lcad(stages, tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    from chromalab import cli as chromalab_cli

    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"photo": (45, 30), "square": (32, 32)}
    for stem, size in sizes.items():
        Image.effect_noise(size, 60).convert("RGB").save(folder / f"{stem}.png")
    caption = "a red circle and a blue square"
    base = ["colorize", str(folder), "--model", "lcad", "--ckpt", str(stages["diffusion"]),
            "--caption", caption, "--steps", "2", "--seed", "3", "-q"]  # fmt: skip

    def colorize(out: str, *extra: str) -> dict[str, torch.Tensor]:
        assert chromalab_cli.main([*base, "-o", str(tmp_path / out), *extra]) == 0
        images = {}
        for stem, size in sizes.items():
            image = Image.open(tmp_path / out / f"{stem}.png")
            assert image.size == size
            images[stem] = torch.from_numpy(np.asarray(image).copy())
        return images

    plain = colorize("plain")
    assert all(torch.equal(plain[k], v) for k, v in colorize("again").items())  # same seed
    assert not torch.equal(colorize("dpm", "--scheduler", "dpm++")["photo"], plain["photo"])
    # masks for one image only: the other is colorized as without them
    masks = tmp_path / "masks" / "photo"
    masks.mkdir(parents=True)
    mask = Image.new("L", (45, 30), 0)
    mask.paste(255, (0, 0, 20, 30))
    mask.save(masks / "red_circle.png")
    masked = colorize("masked", "--masks", str(tmp_path / "masks"))
    assert torch.equal(masked["square"], plain["square"])
    assert not torch.equal(masked["photo"], plain["photo"])
    sam = str(_sam_checkpoint(tmp_path / "sam.pth", monkeypatch))
    auto = colorize("auto", "--auto-masks", "--sam", sam)
    assert not torch.equal(auto["photo"], plain["photo"])
    colorize("prompted", "--sam", sam, "--prompt", "red circle=10,20", "--prompt",
             "blue square=20,5,44,29")  # fmt: skip
    # errors name what is missing
    for extra, message in (
        (["--auto-masks"], "--sam"),
        (["--scheduler", "fast"], "unknown scheduler"),
        (["--prompt", "red circle=1"], "PHRASE=x,y"),
    ):
        assert chromalab_cli.main([*base, "-o", str(tmp_path / "err"), *extra]) == 1
        assert message in capsys.readouterr().err


def test_the_colorizer_explains_with_each_colour_words_attention(stages):
    from chromalab.models import load_colorizer

    model = load_colorizer("lcad", ckpt=str(stages["diffusion"]), device="cpu", steps=2, seed=1)
    l = torch.rand(2, 1, 32, 32) * 100
    captions = ["a red circle beside a red square", "a plain scene"]
    ab, maps = model.explain(l, captions)
    # the same sampling as colorize (attention computed without SDPA: rounding only)
    assert torch.allclose(ab, model.colorize(l, captions), atol=1e-3)
    assert list(maps[0]) == ["red (1)", "red (2)"] and maps[1] == {}
    heat = maps[0]["red (1)"]
    side = 32 // model.pipeline.vae_scale_factor  # the latent grid
    assert heat.shape == (3, side, side) and heat.min() >= 0 and heat.max() <= 1
    assert heat.std() > 0  # a map, not a flat colour
