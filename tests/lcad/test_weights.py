"""The authors' release checkpoint, converted (``lcad.weights``), on a tiny checkpoint in the
release's ldm key layout (:mod:`tests.lcad.release`)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)

from chromalab.text_models import EMBEDDED_TEXT_ENCODER
from lcad.pipeline import LCADPipeline
from lcad.text import CaptionEncoder
from lcad.weights import (
    IGNORED_BUFFERS,
    SCHEDULE_BUFFERS,
    component_configs,
    convert_released,
    load_released,
    save_pipeline,
)
from tests.lcad.components import TEXT_OPTIONS
from tests.lcad.release import TINY_RELEASE, tiny_release

TEXT = dict(text_pretrained=False, text={"options": TEXT_OPTIONS, "max_length": 16})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    text = CaptionEncoder(EMBEDDED_TEXT_ENCODER, None, 16, False, TEXT_OPTIONS)
    path, sources = tiny_release(tmp_path_factory.mktemp("release"), text)
    module = load_released(path, EMBEDDED_TEXT_ENCODER, config=TINY_RELEASE, **TEXT).eval()
    return path, sources, module


def _load(path, **changes):
    state = torch.load(path, weights_only=True)["state_dict"]
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save({"state_dict": state}, path.with_name("changed.ckpt"))
    return path.with_name("changed.ckpt")


def test_every_key_is_consumed_or_a_listed_buffer(release):
    """The fixture holds every persistent buffer of the release's model classes."""
    path, sources, module = release
    state = sources["state"]
    parts = convert_released(state, TINY_RELEASE)
    assert parts.consumed | parts.ignored == set(state)
    assert parts.ignored == set(IGNORED_BUFFERS) == {"logvar", "model_ema.decay",
                                                     "model_ema.num_updates"}  # fmt: skip
    assert len(SCHEDULE_BUFFERS) == 12 and set(SCHEDULE_BUFFERS) <= parts.consumed
    assert {"scale_factor", "cond_stage_model.transformer.embeddings.position_ids"} <= (
        parts.consumed
    )
    assert parts.scaling_factor == pytest.approx(0.18215)
    assert module.autoencoder.scaling_factor == pytest.approx(0.18215)
    assert any(k.startswith("first_stage_model.g_encoder.down.") for k in parts.consumed)


def test_the_checkpoint_s_buffers_are_checked_or_used(release):
    path, sources, _ = release
    state = sources["state"]
    for name in SCHEDULE_BUFFERS:  # each one against the config's schedule
        with pytest.raises(ValueError, match=f"'{name}' differs"):
            convert_released(state | {name: state[name] * 1.01 + 1e-3}, TINY_RELEASE)
    # the latent scale of a scale_by_std model is its buffer, not the config's
    module = load_released(_load(path, scale_factor=torch.tensor(0.25)), EMBEDDED_TEXT_ENCODER,
                           config=TINY_RELEASE, **TEXT)  # fmt: skip
    assert module.autoencoder.vae.config.scaling_factor == 0.25
    # EMA copies of the weights are not listed: an error that names them
    ema = {"model_ema.diffusion_modelout2bias": state["model.diffusion_model.out.2.bias"]}
    with pytest.raises(ValueError, match="(?s)model_ema.diffusion_modelout2bias.*EMA"):
        convert_released(state | ema, TINY_RELEASE)


def test_the_stable_diffusion_part_converts_as_diffusers_does(release):
    _, sources, module = release
    state = sources["state"]
    vae_config, unet_config, _ = component_configs(TINY_RELEASE)
    channels = sources["extension"].shape[1]
    # diffusers' own conversion of the release UNet, read as a plain UNet of 4 + N_ext inputs
    # (the release's CatUNet: the grey feature concatenated to the latent)
    reference = UNet2DConditionModel(**(unet_config | {"in_channels": 4 + channels})).eval()
    reference.load_state_dict(convert_ldm_unet_checkpoint(state, unet_config))
    torch.manual_seed(3)
    z, t = torch.randn(2, 4, 8, 12), torch.tensor([5, 900])  # non-square latents
    context, lum = torch.randn(2, 16, 12), torch.randn(2, channels, 8, 12)
    with torch.no_grad():
        expected = reference(torch.cat((z, lum), 1), t, context).sample
        with module.unet.luminance(lum):
            got = module.unet(z, t, context)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        # and without luminance, the source UNet exactly
        with module.unet.luminance(lum * 0):
            torch.testing.assert_close(module.unet(z, t, context),
                                       sources["unet"](z, t, context).sample)  # fmt: skip
    vae_state = {k: v for k, v in state.items()
                 if k.startswith("first_stage_model.") and ".g_encoder." not in k}  # fmt: skip
    reference_vae = AutoencoderKL(**vae_config).eval()
    reference_vae.load_state_dict(convert_ldm_vae_checkpoint(vae_state, vae_config))
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        ours, theirs = module.autoencoder.vae, reference_vae
        latent = ours.encode(x).latent_dist.mode()
        assert torch.equal(latent, theirs.encode(x).latent_dist.mode())
        assert torch.equal(ours.decode(latent).sample, theirs.decode(latent).sample)
        assert torch.equal(ours.decode(latent).sample, sources["vae"].decode(latent).sample)


def test_the_release_tensors_land_where_they_belong(release):
    _, sources, module = release
    state = sources["state"]
    first = state["model.diffusion_model.input_blocks.0.0.weight"]
    conv_in = module.unet.unet.conv_in
    assert torch.equal(conv_in.weight, first[:, :4])
    assert torch.equal(conv_in.extension.weight, first[:, 4:])
    assert torch.equal(conv_in.extension.weight, sources["extension"])
    encoder = module.autoencoder.luminance_encoder
    grey = "first_stage_model.g_encoder."
    for i, convs in enumerate(encoder.zero_convs):
        for j, conv in enumerate(convs):
            assert torch.equal(conv.weight, state[f"{grey}down.{i}.zero_conv.{j}.weight"])
            assert torch.equal(conv.bias, state[f"{grey}down.{i}.zero_conv.{j}.bias"])
    for k, conv in enumerate(encoder.mid_zero_convs):
        assert torch.equal(conv.weight, state[f"{grey}zero_conv_mid{k + 1}.weight"])
    assert torch.equal(encoder.conv_in.weight, state[f"{grey}conv_in.weight"])
    assert torch.equal(encoder.mid_block.attentions[0].to_q.weight,
                       state[f"{grey}mid.attn_1.q.weight"][:, :, 0, 0])  # fmt: skip
    # every tensor of the grey encoder, the decoder (whose EhDecoder additions are the
    # guided decoding, no parameters) and the text model: the sources, tensor by tensor
    for ours, source in ((encoder, sources["grey"]), (module.autoencoder.vae, sources["vae"]),
                         (module.text.model, sources["text"])):  # fmt: skip
        theirs = source.state_dict()
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs[key]), key
    assert module.hparams.cec == "first" and module.hparams.release_scale
    with torch.no_grad():  # the guided decoder reads the converted grey features
        l = torch.rand(1, 1, 32, 32) * 100
        features = module.autoencoder.luminance_features(l)
        latent = torch.randn(1, 4, 16, 16)
        guided = module.autoencoder.decode(latent, features)
        plain = module.autoencoder.vae.decode(latent / module.autoencoder.scaling_factor).sample
    assert not torch.allclose(guided, plain, atol=1e-3)


def test_conversion_errors_name_the_keys(release):
    path, sources, _ = release
    load = lambda p: load_released(p, EMBEDDED_TEXT_ENCODER, config=TINY_RELEASE, **TEXT)  # noqa: E731
    with pytest.raises(ValueError, match="no part of L-CAD consumes: control_model.extra.weight"):
        load(_load(path, **{"control_model.extra.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match="consumes: logvars"):  # a near miss of a listed name
        load(_load(path, logvars=torch.zeros(3)))
    with pytest.raises(ValueError, match="(?s)UNet.*Missing key.*conv_out.bias"):
        load(_load(path, **{"model.diffusion_model.out.2.bias": None}))
    bad = torch.zeros(7, 3, 3, 3)
    with pytest.raises(ValueError, match="(?s)VAE.*size mismatch for encoder.conv_in.weight"):
        load(_load(path, **{"first_stage_model.encoder.conv_in.weight": bad}))
    with pytest.raises(ValueError, match="'betas' differs"):
        load(_load(path, betas=sources["state"]["betas"] * 2))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load(path.with_name("absent.ckpt"))


def test_the_converted_model_samples_as_the_release_does(release):
    _, _, module = release
    assert (module.sampling.steps, module.sampling.guidance) == (50, 5.0)
    l = torch.rand(1, 1, 32, 48) * 100
    seeded = lambda: [torch.Generator().manual_seed(0)]  # noqa: E731
    a = module.colorize_rgb(l, ["a red circle"], steps=2, generators=seeded())
    b = module.colorize_rgb(l, ["a red circle"], steps=2, generators=seeded())
    assert a.shape == (1, 3, 32, 48) and torch.equal(a, b)


def test_the_converted_release_saves_as_a_pipeline_folder(release, tmp_path):
    path, _, module = release
    out = save_pipeline(path, tmp_path / "pipe", EMBEDDED_TEXT_ENCODER, config=TINY_RELEASE,
                        **TEXT)  # fmt: skip
    assert (out / "model_index.json").is_file()
    assert list((out / "unet").glob("*.safetensors"))
    pipe = LCADPipeline.from_pretrained(out)
    assert pipe.config.release_scale and pipe.unet.cec == "first"
    l = torch.rand(1, 1, 32, 48) * 100
    seeded = lambda: [torch.Generator().manual_seed(0)]  # noqa: E731
    expected = module.colorize_rgb(l, ["a red circle"], steps=2, generators=seeded())
    got = pipe(l, ["a red circle"], num_inference_steps=2, generator=seeded()).images
    assert torch.equal(got, expected)


def test_the_converted_pipeline_s_ddim_is_the_release_s(release, tmp_path):
    """The release samples with ldm's DDIM on Stable Diffusion v1.5's schedule
    (``make_ddim_timesteps``: 50 uniform steps shifted by one, 981 to 1; the last step's previous
    alpha is ``alphas_cumprod[0]``), diffusers' DDIM with ``steps_offset=1,
    set_alpha_to_one=False``; the saved folder and a round trip through another solver keep it."""
    path, _, module = release
    saved = save_pipeline(path, tmp_path / "pipe", EMBEDDED_TEXT_ENCODER, config=TINY_RELEASE,
                          **TEXT)  # fmt: skip
    folder = LCADPipeline.from_pretrained(saved)
    round_trip = module.pipeline().use_scheduler("dpm++").use_scheduler("ddim")
    for pipe in (module.pipeline(), folder, round_trip):
        scheduler = pipe.scheduler
        assert isinstance(scheduler, DDIMScheduler)
        assert not scheduler.config.clip_sample
        scheduler.set_timesteps(50)
        assert scheduler.timesteps.tolist() == list(range(981, 0, -20))
        bar = scheduler.alphas_cumprod
        torch.manual_seed(0)
        x, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
        x0 = (x - (1 - bar[1]).sqrt() * eps) / bar[1].sqrt()
        expected = bar[0].sqrt() * x0 + (1 - bar[0]).sqrt() * eps  # the step from t = 1 to x_0
        torch.testing.assert_close(scheduler.step(eps, 1, x).prev_sample, expected)
        x0 = (x - (1 - bar[21]).sqrt() * eps) / bar[21].sqrt()
        expected = bar[1].sqrt() * x0 + (1 - bar[1]).sqrt() * eps  # 21 to 1
        torch.testing.assert_close(scheduler.step(eps, 21, x).prev_sample, expected)
