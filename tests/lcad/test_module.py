"""L-CAD's three training stages on tiny components: what trains, the losses' paths, any-level
captions and sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from chromalab.color import rgb_to_l_ab
from lcad.losses import generator_hinge_loss, reconstruction_loss
from lcad.stages import LCADAutoencoderModule, LCADCompressionModule, LCADDiffusionModule
from tests.lcad.components import TEXT_OPTIONS, TINY_TEXT, TINY_UNET, TINY_VAE

CAPTIONS = ["a red circle and a blue square", "a green heart"]


def _batch(h: int = 32, w: int = 48) -> dict:
    torch.manual_seed(7)
    rgb = torch.rand(2, 3, h, w)
    l, ab = rgb_to_l_ab(rgb)
    return {"rgb": rgb, "l": l, "ab": ab, "caption": list(CAPTIONS),
            "level": ["complete", "partial"]}  # fmt: skip


def _diffusion(**options) -> LCADDiffusionModule:
    torch.manual_seed(0)
    settings = dict(
        vae=TINY_VAE, unet=TINY_UNET, text=TINY_TEXT, sampling={"steps": 3},
    )  # fmt: skip
    return LCADDiffusionModule(**(settings | options))


def test_stage_0_trains_the_whole_vae():
    module = LCADAutoencoderModule(TINY_VAE)
    loss = module.training_step(_batch(), 0)
    loss.backward()
    assert all(p.grad is not None for p in module.vae.parameters() if p.requires_grad)
    assert module(_batch()["rgb"]).shape == (2, 3, 32, 48)


def test_stage_1_each_loss_reaches_only_its_own_network():
    module = LCADCompressionModule(TINY_VAE, lr=1e-4)
    module.load_initial_weights()  # copies the VAE encoder into the luminance encoder
    terms = module.losses(_batch())
    assert set(terms) == {"rec", "dis", "d_weight", "pixel", "discriminator", "loss"}  # no LPIPS
    encoder = list(module.autoencoder.luminance_encoder.parameters())
    disc = list(module.discriminator.parameters())
    g = torch.autograd.grad(terms["pixel"], encoder + disc, allow_unused=True)
    assert all(x is not None for x in g[: len(encoder)])
    assert all(x is None for x in g[len(encoder) :])  # L_dis reads D through frozen weights
    d = torch.autograd.grad(terms["discriminator"], encoder + disc, allow_unused=True)
    assert all(x is None for x in d[: len(encoder)]) and all(
        x is not None for x in d[len(encoder) :]
    )
    assert all(not p.requires_grad for p in module.autoencoder.vae.parameters())
    optimizer = module.configure_optimizers()
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(encoder + disc)


def test_stage_1_perceptual_loss_falls_back_to_a_named_feature_network(caplog):
    module = LCADCompressionModule(TINY_VAE, perceptual_network="resnet10t", beta=0.5)
    with caplog.at_level("WARNING", logger="lcad.stages"):
        module.load_initial_weights()
    assert "not LPIPS" in caplog.text and "resnet10t" in caplog.text and "RANDOM" in caplog.text
    terms = module.losses(_batch())
    assert terms["per"] > 0
    expected = terms["rec"] + terms["d_weight"] * terms["dis"] + 0.5 * terms["per"]
    torch.testing.assert_close(terms["pixel"], expected)
    g = torch.autograd.grad(terms["per"], list(module.autoencoder.luminance_encoder.parameters()),
                            allow_unused=True)  # fmt: skip
    assert any(x is not None and x.abs().sum() > 0 for x in g)
    assert all(not p.requires_grad for p in module.perceptual.parameters())  # frozen


def test_stage_1_discriminator_waits_for_its_start():
    module = LCADCompressionModule(TINY_VAE, discriminator={"start": 10})
    terms = module.losses(_batch())
    assert "dis" not in terms and "discriminator" not in terms
    assert terms["loss"] is terms["pixel"]
    assert terms["d_weight"] == 0 and torch.equal(terms["pixel"], terms["rec"])


def test_stage_1_weights_l_dis_by_the_gradient_norm_ratio_at_the_decoder_s_last_layer():
    """The release's adaptive weight (ldm/modules/losses/contperceptual.py of
    changzheng123/L-CAD), recomputed here with the decoder's last weight made trainable."""
    module = LCADCompressionModule(TINY_VAE, discriminator={"weight": 0.5})
    module.load_initial_weights()
    batch = _batch()
    terms = module.losses(batch)
    last = module.autoencoder.vae.decoder.conv_out.weight
    assert not last.requires_grad  # the VAE stays frozen
    last.requires_grad_(True)
    x = batch["rgb"] * 2 - 1
    rec = module.autoencoder(x, batch["l"])
    (g_rec,) = torch.autograd.grad(reconstruction_loss(x, rec, 7), last, retain_graph=True)
    (g_dis,) = torch.autograd.grad(generator_hinge_loss(module.discriminator(rec)), last)
    ratio = g_rec.norm() / (g_dis.norm() + 1e-4)
    assert 1e-6 < ratio < 1e4  # inside the clamp: the ratio itself
    torch.testing.assert_close(terms["d_weight"], 0.5 * ratio)
    assert not terms["d_weight"].requires_grad  # a weight, not a path for gradients
    torch.testing.assert_close(terms["pixel"], terms["rec"] + 0.5 * ratio * terms["dis"])
    # L_dis reaches the luminance encoder scaled by the weight
    encoder = list(module.autoencoder.luminance_encoder.parameters())
    grads = torch.autograd.grad(terms["pixel"], encoder, retain_graph=True, allow_unused=True)
    parts = [torch.autograd.grad(terms[k], encoder, retain_graph=True, allow_unused=True)
             for k in ("rec", "dis")]  # fmt: skip
    for got, r, d in zip(grads, *parts, strict=True):
        if got is not None:
            torch.testing.assert_close(got, r + 0.5 * ratio * d)
    with torch.no_grad():  # evaluation: no gradients, weight 0 (as the release)
        assert module.losses(batch)["d_weight"] == 0


@pytest.mark.parametrize("trainable", ["paper", "release", "all"])
def test_stage_2_trains_the_extended_channels_or_the_release_set(trainable):
    module = _diffusion(trainable=trainable).train()
    module.training_step(_batch(), 0).backward()
    trained = {n for n, p in module.named_parameters() if p.grad is not None}
    extension = {n for n, _ in module.named_parameters() if n.endswith("extension.weight")}
    assert extension and extension <= trained
    unet = {n for n, _ in module.named_parameters() if n.startswith("unet.")}
    if trainable == "paper":
        assert trained == extension
    elif trainable == "all":
        assert trained == unet
    else:
        assert any(".up_blocks." in n for n in trained) and any("conv_out" in n for n in trained)
        assert not any(".down_blocks." in n and "extension" not in n for n in trained)
    assert not any(n.startswith(("autoencoder.", "text.")) for n in trained)


def test_stage_2_any_level_captions():
    batch = _batch()
    always = _diffusion(scarce_prob=1.0, uncond_prob=0.0)
    assert always.training_captions(batch, 0) == ["a circle and a square", "a heart"]
    never = _diffusion(scarce_prob=0.0, uncond_prob=1.0)
    assert never.training_captions(batch, 0) == ["", ""]
    module = _diffusion()
    draws = [module.training_captions(batch | {"caption": ["a red circle"] * 2}, i)
             for i in range(400)]  # fmt: skip
    flat = [c for pair in draws for c in pair]
    scarce = sum(c == "a circle" for c in flat) / len(flat)
    empty = sum(c == "" for c in flat) / len(flat)
    assert 0.22 < scarce < 0.32 and 0.06 < empty < 0.14  # 0.3 * 0.9 and 0.1
    assert module.training_captions(batch, 5) == module.training_captions(batch, 5)


def test_stage_2_sampling_is_per_image_reproducible_and_keeps_the_input_l():
    module = _diffusion().eval()
    batch = _batch(h=32, w=48)  # latents 8x12: not square
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    a = module.colorize_rgb(batch["l"], CAPTIONS, generators=gens())
    b = module.colorize_rgb(batch["l"], CAPTIONS, generators=gens())
    assert a.shape == (2, 3, 32, 48) and torch.equal(a, b)
    single = module.colorize_rgb(batch["l"][1:], CAPTIONS[1:], generators=gens()[1:])
    torch.testing.assert_close(single, a[1:], atol=1e-5, rtol=1e-4)
    l, _ = rgb_to_l_ab(a)
    kept = ((l - batch["l"]).abs() < 0.5).float().mean()
    assert kept > 0.9  # the input L, except where sRGB clipping of random colours moves it
    with pytest.raises(ValueError, match="multiples of 4"):
        module.colorize_rgb(batch["l"][..., :30, :], CAPTIONS)


def test_stage_2_without_lic_decodes_with_the_vae_alone():
    module = _diffusion().eval()
    l = _batch()["l"]
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    sample = lambda: module.colorize_rgb(l, CAPTIONS, generators=gens())  # noqa: E731
    guided = sample()
    module.sampling = dataclasses.replace(module.sampling, lic=False)
    plain = sample()
    torch.testing.assert_close(plain, guided)  # zero-initialised projections: the same decoder
    for conv in module.autoencoder.luminance_encoder.mid_zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.5)
    assert torch.equal(sample(), plain)  # W/o LIC ignores the luminance encoder's projections
    module.sampling = dataclasses.replace(module.sampling, lic=True)
    assert not torch.allclose(sample(), plain, atol=1e-3)


def test_stage_2_rejects_a_text_encoder_of_another_width():
    with pytest.raises(ValueError, match="cross_attention_dim 12 differs"):
        _diffusion(text=TINY_TEXT | {"options": TEXT_OPTIONS | {"hidden_size": 16}})
