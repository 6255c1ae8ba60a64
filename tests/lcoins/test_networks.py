"""LCoInsNetwork and LCoInsModule: shapes, the ablations, gradient flow, and pretrained weights
loaded from local files (never the network)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from lcoins.encoders import (
    EMBEDDED_TEXT_ENCODER,
    TextEncoder,
    build_vit,
    load_text_weights,
    load_vit_weights,
    resolve_text_source,
)
from lcoins.module import LCoInsModule
from lcoins.networks import LCoInsNetworkConfig
from tests.lcoins.components import IMAGE_OPTIONS, TEXT_OPTIONS, tiny_network

CAPTIONS = ["a red circle on the left and a blue square", "a green triangle"]


def _tiny_module(**options) -> LCoInsModule:
    """A tiny module; ``options`` are network fields or module arguments."""
    network = dict(
        image_encoder="vit_tiny_patch16_224",
        image_options=IMAGE_OPTIONS,
        image_size=32,
        text_encoder=EMBEDDED_TEXT_ENCODER,
        text_pretrained=False,
        text_options=TEXT_OPTIONS,
        max_caption_length=16,
        width=16,
        depth=2,
        heads=2,
        groups=3,
        counter_dim=8,
    )
    fields = {f.name for f in dataclasses.fields(LCoInsNetworkConfig)}
    network |= {k: v for k, v in options.items() if k in fields}
    return LCoInsModule(network=network, **{k: v for k, v in options.items() if k not in fields})


def _batch(size: int = 32) -> dict:
    rgb = torch.rand(2, 3, size, size)
    from chromalab.color import rgb_to_lab

    lab = rgb_to_lab(rgb)
    return {"rgb": rgb, "l": lab[:, :1], "ab": lab[:, 1:], "caption": CAPTIONS}


@pytest.mark.parametrize(
    "options",
    [{}, {"group_tokens": False}, {"grouping_attention": False}, {"group_slots": "joint"}],
    ids=["full", "wo_ge", "wo_ga", "joint_slots"],
)
def test_outputs_have_their_shapes_and_each_image_its_own_colours(options):
    """Every variant: the documented shapes; each image's colours follow its own caption and
    lightness only (the same alone as in a batch, another caption changes them); each image
    token in exactly one group."""
    torch.manual_seed(0)  # the caption's effect on an untrained network is small: fixed draws
    network = tiny_network(**options).eval()
    ids, words = network.text_encoder.tokenize(CAPTIONS, "cpu")
    l = torch.rand(2, 1, 32, 48) * 100  # not square
    with torch.no_grad():
        out = network(l, ids, words)
        alone = network(l[1:], ids[1:], words[1:]).ab
        swapped = network(l, ids.flip(0), words.flip(0)).ab
    assert out.ab.shape == (2, 2, 32, 48) and out.ab.abs().max() <= 1
    torch.testing.assert_close(alone, out.ab[1:], atol=1e-6, rtol=1e-5)
    assert (swapped - out.ab).abs().amax(dim=(1, 2, 3)).min() > 1e-5  # untrained: small
    assert out.image_tokens.shape == (2, 4 * 6, 16) and out.grid == (4, 6)
    assert out.language_tokens.shape[:2] == ids.shape
    if options.get("group_tokens", True):
        assert out.groups.shape == (2, 3, 16) and out.assignment.shape == (2, 3, 24)
        torch.testing.assert_close(out.assignment.sum(1), torch.ones(2, 24))
        assert out.counter_groups.shape == (2, 3, 8)
    else:
        assert out.groups is None and out.assignment is None
        assert out.counter_groups.shape == (2, 24, 8)  # W/o GE: image tokens


def test_input_checks():
    network = tiny_network()
    ids, words = network.text_encoder.tokenize(["a red circle"], "cpu")
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        network(torch.rand(1, 1, 30, 32), ids, words)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        network(torch.rand(1, 3, 32, 32), ids, words)


@pytest.mark.parametrize("frozen", [False, True])
def test_every_trained_parameter_gets_a_gradient_and_frozen_ones_none(frozen):
    module = _tiny_module(freeze_text_encoder=frozen).train()
    batch = _batch()
    terms = module.losses(module.training_input(batch, 0), batch, 0)
    assert "counter" in terms  # both captions have colour words to replace
    terms["loss"].backward()
    text = {id(p) for p in module.network.text_encoder.parameters()}
    missing = []
    for name, p in module.named_parameters():
        if frozen and id(p) in text:
            assert not p.requires_grad and p.grad is None, name
        elif p.grad is None or not p.grad.abs().sum() > 0:
            missing.append(name)
    # the text encoder's pooler is not built; BERT's token-type embeddings beyond 0 are unused
    assert missing == [], missing
    trained = {
        id(p)
        for group in module.configure_optimizers()["optimizer"].param_groups
        for p in group["params"]
    }
    assert (text <= trained) != frozen and not (frozen and text & trained)


def test_without_the_counter_color_loss_there_is_no_second_pass(monkeypatch):
    module = _tiny_module(beta=0.0)
    calls = []
    real = module.network.forward
    monkeypatch.setattr(module.network, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = _batch()
    terms = module.losses(batch["l"], batch, 0)
    assert len(calls) == 1 and "counter" not in terms
    assert terms["loss"] == terms["regression"]


def test_the_shared_image_tokens_give_the_gradients_of_two_full_passes():
    """The counter-colour pass reuses the first pass's ViT tokens and skips the upsampler: the
    loss and every gradient equal those of two independent full forward passes."""
    from chromalab.color import normalize_ab
    from lcoins.losses import counter_color_loss, smooth_l1, total_loss

    torch.manual_seed(0)
    module = _tiny_module(freeze_text_encoder=True).train()
    batch = _batch()
    l = module.training_input(batch, 0)
    captions = list(batch["caption"])
    swapped, _ = module.counter_captions(captions, 0)  # both captions have colour words
    out, other = module(l, captions), module(l, swapped)
    counter = counter_color_loss(
        out.counter_language, out.words, out.counter_groups,
        other.counter_language, other.words, other.counter_groups,
    ).mean()  # fmt: skip
    regression = smooth_l1(out.ab, normalize_ab(batch["ab"]))
    reference = total_loss(regression, counter, 1.0, -1e-4)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    terms = module.losses(l, batch, 0)
    terms["loss"].backward()
    torch.testing.assert_close(terms["loss"], reference, atol=1e-7, rtol=1e-6)
    got = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-7, rtol=1e-5, msg=name)


def test_the_counter_captions_replace_colour_words_reproducibly():
    module = _tiny_module()
    captions = ["a red circle", "a shape", "two blue squares"]
    swapped, changed = module.counter_captions(captions, batch_idx=3)
    assert changed.tolist() == [True, False, True]
    assert "red" not in swapped[0] and swapped[1] == "a shape" and "blue" not in swapped[2]
    assert module.counter_captions(captions, batch_idx=3)[0] == swapped


def test_the_training_input_is_augmented_and_reproducible():
    module = _tiny_module()
    batch = _batch()
    a, b = module.training_input(batch, 0), module.training_input(batch, 0)
    assert torch.equal(a, b) and not torch.allclose(a, batch["l"], atol=1.0)
    assert not torch.equal(a, module.training_input(batch, 1))
    plain = _tiny_module(augmentation=None)
    assert torch.equal(plain.training_input(batch, 0), batch["l"])


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    plain = _tiny_module().train()
    torch.manual_seed(1)
    saving = _tiny_module(activation_checkpointing=True).train()
    saving.load_state_dict(plain.state_dict())
    batch = _batch()
    grads = []
    for module in (plain, saving):
        torch.manual_seed(2)  # the same dropout masks
        module.losses(batch["l"], batch, 0)["loss"].backward()
        grads.append(module.network.group_tokens.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_vit_weights_load_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    source = build_vit("vit_tiny_patch16_224", 32, IMAGE_OPTIONS)
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    target = build_vit("vit_tiny_patch16_224", 32, IMAGE_OPTIONS)
    assert not torch.equal(target.patch_embed.proj.weight, source.patch_embed.proj.weight)
    load_vit_weights(target, "vit_tiny_patch16_224", str(path), IMAGE_OPTIONS)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_missing_weights_are_named(tmp_path):
    vit = build_vit("vit_tiny_patch16_224", 32, IMAGE_OPTIONS)
    missing = tmp_path / "nowhere" / "vit.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere/vit.safetensors"):
        load_vit_weights(vit, "vit_tiny_patch16_224", str(missing), IMAGE_OPTIONS)
    with pytest.raises(FileNotFoundError, match="bert-in-no-cache"):
        TextEncoder("bert-in-no-cache")
    with pytest.raises(ValueError, match="vit_nonexistent"):
        build_vit("vit_nonexistent", 32)


def test_the_embedded_text_encoder_is_the_real_pretrained_minilm(tmp_path):
    encoder = TextEncoder(EMBEDDED_TEXT_ENCODER, frozen=True)
    assert encoder.width == 384 and encoder.model.config.num_hidden_layers == 6
    load_text_weights(encoder)
    ids, words = encoder.tokenize(["a red car", "a crimson automobile", "tax law"], "cpu")
    with torch.no_grad():
        tokens = encoder(ids, words)
    mean = (tokens * words[..., None]).sum(1) / words.sum(1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity
    # a trained encoder puts the paraphrase nearer than an unrelated phrase (random ones do not)
    assert cos(mean[0], mean[1], dim=0) > cos(mean[0], mean[2], dim=0) + 0.1
    # and a local copy of it loads the same weights
    encoder.model.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    copy = TextEncoder(str(tmp_path))
    assert resolve_text_source(str(tmp_path)) == str(tmp_path)
    load_text_weights(copy)
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(copy.model.state_dict()[key], value), key


def test_text_options_need_a_text_encoder_from_scratch():
    with pytest.raises(ValueError, match="text_pretrained false"):
        LCoInsModule(network={"text_encoder": EMBEDDED_TEXT_ENCODER, "text_options": TEXT_OPTIONS})


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_warms_up_then_holds_or_decays_to_zero(schedule):
    module = _tiny_module(lr=1e-3, warmup_steps=4, lr_schedule=schedule)
    module._trainer = SimpleNamespace(estimated_stepping_batches=12)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # linear warm-up from 0: step k of 4 has k/4 of the rate
    assert rates[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    if schedule == "constant":
        assert rates[4:] == pytest.approx([1e-3] * 8)
    else:  # half a cosine over the 8 steps after the warm-up: 1e-3 * (1 + cos(pi k / 8)) / 2
        expected = [1e-3 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(8)]
        assert rates[4:] == pytest.approx(expected)


def test_a_short_run_follows_a_longer_runs_schedule():
    """``schedule_steps`` 12 on a 6-step run: its rates are the first 6 of the 12-step run's."""
    rates = {}
    for total, length in ((12, None), (6, 12)):
        module = _tiny_module(lr=1e-3, warmup_steps=4, lr_schedule="cosine", schedule_steps=length)
        module._trainer = SimpleNamespace(estimated_stepping_batches=total)
        config = module.configure_optimizers()
        optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        rates[total] = []
        for _ in range(total):
            rates[total].append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    assert rates[6] == pytest.approx(rates[12][:6]) and rates[6][5] > rates[12][6] > 0
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        _tiny_module(warmup_steps=4, lr_schedule="cosine", schedule_steps=4)


def test_a_cosine_schedule_needs_steps_after_the_warm_up():
    module = _tiny_module(warmup_steps=10, lr_schedule="cosine")
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    with pytest.raises(ValueError, match="warmup_steps is 10"):
        module.configure_optimizers()


def test_decoding_the_first_rows_and_splitting_keep_each_rows_outputs():
    network = tiny_network().eval()
    ids, words = network.text_encoder.tokenize(CAPTIONS + CAPTIONS[::-1], "cpu")
    l = torch.rand(4, 1, 32, 32) * 100
    whole = network(l, ids, words)
    first, rest = network(l, ids, words, decode=2).split(2)
    assert first.ab.shape[0] == 2 and rest.ab is None
    torch.testing.assert_close(first.ab, whole.ab[:2])
    for name in ("image_tokens", "language_tokens", "words", "groups", "assignment",
                 "counter_language", "counter_groups"):  # fmt: skip
        torch.testing.assert_close(getattr(first, name), getattr(whole, name)[:2], msg=name)
        torch.testing.assert_close(getattr(rest, name), getattr(whole, name)[2:], msg=name)
    halves = whole.split(2)
    torch.testing.assert_close(halves[1].ab, whole.ab[2:])
    with pytest.raises(ValueError, match="ab covers 2 rows"):
        network(l, ids, words, decode=2).split(3)
