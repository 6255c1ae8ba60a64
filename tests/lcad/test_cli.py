"""The lcad package through its LightningCLI: the three stages chained on tiny configs
(``conftest.stages``; each stage's fit, validate, test and predict: ``test_package.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lcad.cli import run, split_stage
from tests.lcad.components import fit_stages as _fit_stages  # noqa: F401  (tests/e2e's import)
from tests.lcad.components import tiny_config


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


def test_evaluate_scores_each_level_and_the_ablation_switch(stages):
    from lcad.evaluate import evaluate, main

    scores = evaluate(stages["diffusion"], scenes=4, size=32, batch_size=2)
    for key in ("psnr", "ssim", "caption_consistency", "caption_consistency_complete",
                "caption_consistency_partial", "caption_consistency_scarce",
                "unmentioned_canonical_accuracy", "manipulation_accuracy"):  # fmt: skip
        assert key in scores, key
    # W/o LIC: the same checkpoint decoded by the VAE alone (trained projections: other colours)
    plain = evaluate(stages["diffusion"], scenes=4, size=32, batch_size=2,
                     overrides={"sampling.lic": False})  # fmt: skip
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
        "fit", "--stage", "diffusion", "--config", tiny_config("diffusion"),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "3",
        "--data.source", "captions", "--data.caption_format", "name-to-captions",
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
        (["--prompt", "red circle=1"], "PHRASE=x,y"),
    ):
        assert chromalab_cli.main([*base, "-o", str(tmp_path / "err"), *extra]) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the schema's choices: refused before loading anything
        chromalab_cli.main([*base, "-o", str(tmp_path / "err"), "--scheduler", "fast"])
    assert "argument --scheduler: invalid choice: 'fast'" in capsys.readouterr().err


#: lcad's flags, as ``chromalab colorize`` had them before the plug-in declared them.
LCAD_FLAGS = ("--steps", "--scheduler", "--guidance", "--seed", "--masks", "--prompt",
              "--auto-masks", "--sam", "--text-encoder")  # fmt: skip


def test_colorize_help_shows_lcads_options(capsys):
    from chromalab import cli as chromalab_cli

    with pytest.raises(SystemExit) as exit_:
        chromalab_cli.main(["colorize", "--model", "lcad", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "options of model lcad:" in out
    group = " ".join(out.split("options of model lcad:")[1].split())
    for flag in LCAD_FLAGS:
        assert flag in group, flag
    assert "--scheduler {ddim,ddpm,pndm,dpm++," in group
    assert "sampling steps (default: the checkpoint's; 50 for other weights)" in group
    assert "--prompt PHRASE=x,y[,x1,y1]" in group
    with pytest.raises(SystemExit):  # another model: not lcad's options
        chromalab_cli.main(["colorize", "--model", "cic", "--help"])
    assert "--steps" not in capsys.readouterr().out


def test_lcads_flags_reach_its_factory_as_before(monkeypatch, tmp_path, capsys):
    """The values go to lcad's factory under the same keyword names as before, converted to
    their types; options not given are not passed (the checkpoint's own steps and guidance
    then apply)."""
    from chromalab import cli as chromalab_cli
    from chromalab import models

    calls = []

    def record(name, **options):
        calls.append((name, options))
        raise ValueError("recorded")

    monkeypatch.setattr(models, "load_colorizer", record)
    base = ["colorize", str(tmp_path), "-o", str(tmp_path / "out"), "--model", "lcad"]
    given = ["--steps", "2", "--scheduler", "dpm++", "--guidance", "1.5", "--seed", "3",
             "--masks", "m/", "--prompt", "a=1,2", "--prompt", "b=0,0,3,4", "--auto-masks",
             "--sam", "sam.pth", "--text-encoder", "sd15/"]  # fmt: skip
    assert chromalab_cli.main([*base, *given]) == 1
    lcad = {k: v for k, v in calls[-1][1].items() if k not in models.COMMON_OPTIONS}
    assert calls[-1][0] == "lcad" and lcad == {
        "steps": 2, "scheduler": "dpm++", "guidance": 1.5, "seed": 3, "masks": "m/",
        "prompts": ["a=1,2", "b=0,0,3,4"], "auto_masks": True, "sam": "sam.pth",
        "text_encoder": "sd15/",
    }  # fmt: skip
    assert chromalab_cli.main(base) == 1
    assert set(calls[-1][1]) == set(models.COMMON_OPTIONS)


def test_the_app_offers_lcads_sampling_controls_and_load_flags():
    """The page's controls keep the browser test's elem_ids (steps, guidance, seed) and their
    former first values; --scheduler, --sam and --text-encoder stay flags of chromalab app."""
    from chromalab.app import page_controls
    from chromalab.models import model_options

    controls = page_controls("lcad")
    assert [(o.name, o.type, o.default) for o in controls] == [
        ("steps", int, 50), ("guidance", float, 5.0), ("seed", int, 0)
    ]  # fmt: skip
    assert controls[0].minimum == 1  # as the page's former slider
    flags = [o.cli_flag for o in model_options("lcad") if o.app == "flag"]
    assert flags == ["--scheduler", "--sam", "--text-encoder"]


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
