"""Luminance-guided compression (L-CAD §3.2): feature layout, the zero-initialised equivalence
with the pretrained decoder, and what trains."""

from __future__ import annotations

import pytest
import torch

from lcad.compression import (
    LuminanceEncoder,
    LuminanceGuidedAutoencoder,
    guided_decode,
    luminance_input,
)
from tests.lcad.components import tiny_vae


def _images(b: int = 2, h: int = 32, w: int = 48):
    torch.manual_seed(3)
    rgb = torch.rand(b, 3, h, w) * 2 - 1
    l = torch.rand(b, 1, h, w) * 100
    return rgb, l


def test_features_are_taken_per_resnet_block_at_each_scale():
    vae = tiny_vae()
    encoder = LuminanceEncoder.from_vae(vae)
    features = encoder(torch.rand(2, 3, 32, 48))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [
        (8, 32, 48), (8, 32, 48),  # level 0: full resolution
        (16, 16, 24), (16, 16, 24),  # level 1
        (16, 8, 12), (16, 8, 12),  # level 2: the latent's resolution
        (16, 8, 12), (16, 8, 12),  # the middle block's two ResNet blocks
    ]  # fmt: skip
    assert all((f == 0).all() for f in features)  # zero-initialised projections


def test_the_untrained_model_decodes_exactly_as_the_pretrained_decoder():
    vae = tiny_vae()
    model = LuminanceGuidedAutoencoder(vae)
    rgb, l = _images()
    with torch.no_grad():
        latent = model.encode(rgb)
        ours = model.decode(latent, model.luminance_features(l))
        theirs = vae.decode(latent / vae.config.scaling_factor).sample
    assert torch.equal(ours, theirs)


def test_trained_projections_guide_every_scale_of_the_decoder():
    vae = tiny_vae()
    model = LuminanceGuidedAutoencoder(vae)
    rgb, l = _images()
    with torch.no_grad():
        latent = model.encode(rgb)
        zeros = model.luminance_features(l)
        base = model.decode(latent, zeros)
        for i, feature in enumerate(zeros):
            features = list(zeros)
            features[i] = torch.randn_like(feature)  # one scale at a time
            assert not torch.allclose(model.decode(latent, features), base), i
        with pytest.raises(ValueError, match="expected 8 luminance features, got 7"):
            guided_decode(vae.decoder, latent, features[:7])


def test_only_the_luminance_encoder_trains():
    vae = tiny_vae()
    model = LuminanceGuidedAutoencoder(vae).train()
    assert not vae.training  # frozen VAE stays in eval mode
    rgb, l = _images()
    with torch.no_grad():  # let the features reach the decoder
        for p in model.luminance_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model(rgb, l).square().mean().backward()
    assert all(p.grad is None for p in vae.parameters())
    missing = [n for n, p in model.luminance_encoder.named_parameters() if p.grad is None]
    assert missing == []
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("luminance_encoder.") for n in trainable)


def test_the_luminance_encoder_starts_from_the_vae_encoder():
    vae = tiny_vae()
    encoder = LuminanceEncoder.from_vae(vae)
    source = vae.encoder.state_dict()
    own = encoder.state_dict()
    shared = [k for k in own if "zero_convs" not in k]
    assert shared and all(torch.equal(own[k], source[k]) for k in shared)
    fresh = LuminanceEncoder.from_vae(vae, copy_weights=False)
    assert not torch.equal(fresh.conv_in.weight, vae.encoder.conv_in.weight)


def test_luminance_input_scales():
    l = torch.tensor([0.0, 50.0, 100.0]).view(1, 1, 1, 3)
    assert luminance_input(l).shape == (1, 3, 1, 3)
    assert luminance_input(l)[0, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    release = luminance_input(l, release_scale=True)[0, 0, 0]
    torch.testing.assert_close(release, torch.tensor([-1.0, 50 / 127.5 - 1, 100 / 127.5 - 1]))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        luminance_input(torch.rand(1, 3, 4, 4))
