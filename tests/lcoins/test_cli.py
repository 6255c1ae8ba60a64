"""The lcoins package through its real entry points: the LightningCLI, ``lcoins explain`` and
``chromalab colorize --model lcoins``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from chromalab import cli as chromalab_cli
from chromalab.models import load_colorizer
from lcoins.cli import main, run
from lcoins.module import LCoInsModule
from tests.lcoins.components import TINY_CONFIG
from tests.training import fit


def fit_tiny(root: Path, *extra: str) -> Path:
    return fit(run, TINY_CONFIG, root, *extra)


@pytest.fixture(scope="module")
def lcoins_ckpt(tmp_path_factory) -> Path:
    """One tiny fit (3 steps) shared by the read-only tests of this file."""
    argv, sys.argv = sys.argv, ["lcoins"]
    try:
        return fit_tiny(tmp_path_factory.mktemp("lcoins"), "--trainer.max_steps", "3")
    finally:
        sys.argv = argv


def test_checkpoint_rebuilds_without_weight_files(lcoins_ckpt):
    module = LCoInsModule.load_from_checkpoint(lcoins_ckpt)
    assert module.network_config.width == 32 and module.network.num_groups == 4
    state = torch.load(lcoins_ckpt, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key
    ab = module.colorize(torch.rand(2, 1, 32, 32) * 100, ["a red circle", "a blue square"])
    assert ab.shape == (2, 2, 32, 32) and ab.abs().max() <= 110
    # fitting a restored model does not reload pretrained weights over its own
    with torch.no_grad():
        module.network.group_tokens.add_(1.0)
    before = module.network.group_tokens.clone()
    module.setup("fit")
    assert torch.equal(module.network.group_tokens, before)
    with pytest.raises(ValueError, match="caption"):
        module.colorize(torch.rand(1, 1, 32, 32) * 100, None)


def test_colorize_command_follows_the_caption(lcoins_ckpt, tmp_path):
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    Image.new("RGB", (45, 30), (120, 80, 40)).save(image)
    args = ["colorize", str(image.parent), "--model", "lcoins", "--ckpt", str(lcoins_ckpt)]
    args.append("--quiet")
    assert chromalab_cli.main([*args, "-o", str(tmp_path / "out"), "--caption", "a red heart"]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (45, 30)
    assert chromalab_cli.main([*args, "-o", str(tmp_path / "none")]) == 1  # no caption

    model = load_colorizer("lcoins", ckpt=str(lcoins_ckpt), device="cpu")
    assert model.uses_captions and model.input_size == 32
    l = torch.rand(1, 1, 32, 32) * 100
    red, blue = model.colorize(l, ["a red heart"]), model.colorize(l, ["a blue heart"])
    assert red.shape == (1, 2, 32, 32) and not torch.allclose(red, blue)


def test_explain_paints_the_group_assignment(lcoins_ckpt, tmp_path, capsys):
    from lcoins.explain import group_colors, group_maps

    image = tmp_path / "in" / "scene.png"
    image.parent.mkdir()
    Image.new("RGB", (40, 40), (90, 140, 200)).save(image)
    out = tmp_path / "groups"
    main(["explain", "--ckpt", str(lcoins_ckpt), str(image), "--caption", "a green leaf",
          "--capshapes", "2", "-o", str(out)])  # fmt: skip
    names = sorted(p.name for p in out.glob("*.png"))
    for stem in ("scene", "capshapes0000", "capshapes0001"):
        assert f"{stem}_colorized.png" in names and f"{stem}_groups.png" in names
    assert Image.open(out / "scene_groups.png").size == (40, 40)
    with pytest.raises(SystemExit):
        main(["explain", "--ckpt", str(lcoins_ckpt), str(image), "-o", str(out)])  # no caption
    assert "caption" in capsys.readouterr().err
    # each token's colour in the picture is its group's
    module = LCoInsModule.load_from_checkpoint(lcoins_ckpt).eval()
    l = torch.rand(1, 1, 32, 32) * 100
    groups = group_maps(module, l, ["a red circle"])
    out = module(l, ["a red circle"])
    assert torch.equal(groups.flatten(), out.assignment.argmax(1).flatten())
    assert group_colors(4).shape == (4, 3) and len(set(map(tuple, group_colors(4).tolist()))) == 4


def test_evaluate_scores_scenes_of_a_chosen_kind(lcoins_ckpt, tmp_path):
    from lcoins.evaluate import evaluate, evaluate_captions

    plain = evaluate(lcoins_ckpt, scenes=8, batch_size=4)
    for key in ("psnr", "ssim", "caption_consistency", "manipulation_accuracy"):
        assert key in plain, key
    twins = evaluate(
        lcoins_ckpt, scenes=8, split="test", options={"min_objects": 2, "shared_noun_prob": 1.0}
    )
    assert twins["psnr"] != plain["psnr"]  # other scenes
    # a user's caption file in the release's format: [[file, caption], ...]
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for i, colour in enumerate(((200, 40, 40), (40, 60, 200))):
        Image.new("RGB", (40, 32), colour).save(folder / f"{i}.png")
        records.append([f"{i}.png", "a red square" if i == 0 else "a blue square"])
    captions = tmp_path / "val.json"
    captions.write_text(json.dumps(records))
    scores = evaluate_captions(lcoins_ckpt, captions, folder, batch_size=2)
    assert 0 < scores["psnr"] < 60 and "manipulation_accuracy" not in scores


def test_unseen_pair_consistency_counts_the_held_out_objects(lcoins_ckpt):
    from lcoins.evaluate import unseen_pair_consistency

    scores = unseen_pair_consistency(lcoins_ckpt, {"circle": ["green"], "heart": ["blue"]}, 16, 8)
    assert scores["held_out_objects"] > 0 and scores["seen_objects"] > 0
    for key in ("held_out_consistency", "seen_consistency"):
        assert 0 <= scores[key] <= 1


def test_lpips_is_computed_with_local_weights_and_kept_out_of_checkpoints(lcoins_ckpt, tmp_path):
    import torchvision

    from lcoins.evaluate import evaluate

    weights = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    scores = evaluate(lcoins_ckpt, scenes=4, batch_size=4, lpips_weights=str(weights))
    assert scores["lpips"] >= 0 and "psnr" in scores
    module = LCoInsModule.load_from_checkpoint(lcoins_ckpt, lpips_weights=str(weights))
    checkpoint = {"state_dict": module.state_dict()}
    assert any("_lpips." in k for k in checkpoint["state_dict"])
    module.on_save_checkpoint(checkpoint)
    assert not any("_lpips." in k for k in checkpoint["state_dict"])
    plain = LCoInsModule.load_from_checkpoint(lcoins_ckpt)  # no LPIPS: loads strictly
    plain.load_state_dict(checkpoint["state_dict"])
    assert "lpips_weights" not in plain.hparams


def test_the_colorizer_explains_with_the_group_assignment(lcoins_ckpt):
    from lcoins.explain import group_colors, group_maps

    model = load_colorizer("lcoins", ckpt=str(lcoins_ckpt), device="cpu")
    l = torch.rand(2, 1, 32, 32) * 100
    captions = ["a red heart", "a blue star"]
    ab, maps = model.explain(l, captions)
    assert torch.equal(ab, model.colorize(l, captions))
    assert [list(m) for m in maps] == [["groups"], ["groups"]]
    groups = group_maps(model.module, l, captions)
    count = model.module.network.num_groups
    for i in range(2):
        expected = group_colors(count)[groups[i]].permute(2, 0, 1)
        assert torch.equal(maps[i]["groups"], expected)
