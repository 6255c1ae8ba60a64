"""``LCADPipeline`` on tiny components: batches of non-square images, 2 and 4 heads, the
instance-aware edit and its record/apply pattern (Algorithm 1), repeat determinism, per-image
seeds, classifier-free guidance and every scheduler against stub UNets with known predictions,
every input rule, output types, and a ``save_pretrained`` / ``from_pretrained`` round trip."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from chromalab.color import rgb_to_l_ab
from lcad.attention import EditableCrossAttention, EditMode, install_editable_attention
from lcad.colorizer import LCADColorizer
from lcad.pipeline import (
    SCHEDULERS,
    LCADPipeline,
    check_one_mask_source,
    edit_mode,
    phrase_tokens,
)
from lcad.stages import LCADDiffusionModule
from tests.lcad.components import TINY_TEXT, TINY_UNET, TINY_VAE

CAPTIONS = ["a red circle and a blue square", "the left heart is green"]


def _pipeline(heads: int = 2) -> LCADPipeline:
    torch.manual_seed(0)
    module = LCADDiffusionModule(
        vae=TINY_VAE, unet=TINY_UNET | {"attention_head_dim": heads},
        text=TINY_TEXT,
    ).eval()  # fmt: skip
    with torch.no_grad():  # trained-looking luminance paths: non-zero projections and W_ext
        for p in module.autoencoder.luminance_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for p in module.unet.extension_parameters():
            p.normal_(std=0.05)
    return module.pipeline()


def _grey(h: int = 32, w: int = 48) -> torch.Tensor:
    torch.manual_seed(7)
    return rgb_to_l_ab(torch.rand(2, 3, h, w))[0]


def _masks(h: int = 32, w: int = 48) -> list[dict[str, torch.Tensor]]:
    left, right = torch.zeros(h, w), torch.zeros(h, w)
    left[:, : w // 2] = 1
    right[:, w // 2 :] = 1
    return [{"red circle": left, "blue square": right}, {"left heart": left}]


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("heads", [2, 4])
def test_batches_of_non_square_images_with_and_without_the_edit(heads):
    pipe = _pipeline(heads)
    attn = [m for n, m in pipe.unet.named_modules() if n.endswith("attn2")]
    assert attn and all(a.heads == heads for a in attn)
    l = _grey()  # latents 8x12
    run = lambda **kw: pipe(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2), **kw)  # noqa: E731
    plain = run().images
    out = run(masks=_masks(), edit_step_size=20.0, track_mass=True)
    edited = out.images
    # one (before, after) per cross-attention layer and edited step; the edit raises the mass
    assert len(out.mass) == len(attn) * 3
    assert all(after > before for before, after in out.mass)
    assert plain.shape == edited.shape == (2, 3, 32, 48)
    assert torch.isfinite(edited).all() and edited.min() >= 0 and edited.max() <= 1
    assert not torch.allclose(plain, edited, atol=1e-4)  # the edit moves the colours
    # the edit reaches the cross-attention through our processor, on every such layer
    assert all(isinstance(a.processor, EditableCrossAttention) for a in attn)
    # the input lightness is kept
    kept = ((rgb_to_l_ab(edited)[0] - l).abs() < 0.5).float().mean()
    assert kept > 0.9


def test_two_samplings_in_a_row_are_identical():
    pipe = _pipeline()
    l = _grey()
    kw = dict(num_inference_steps=3, masks=_masks(), edit_step_size=20.0)
    first = pipe(l, CAPTIONS, generator=_gens(1, 2), **kw).images
    second = pipe(l, CAPTIONS, generator=_gens(1, 2), **kw).images
    assert torch.equal(first, second)
    # an edited sampling leaves nothing behind for a plain one
    plain = pipe(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2)).images
    fresh = _pipeline()(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2)).images
    assert torch.equal(plain, fresh)
    # editing only the first step is a different sampling from editing every step
    early = pipe(l, CAPTIONS, generator=_gens(1, 2), edit_steps=1, **kw).images
    assert not torch.equal(early, first) and not torch.equal(early, plain)


def test_the_same_seed_gives_the_same_colours_whatever_the_batch():
    pipe = _pipeline()
    l = _grey()
    both = pipe(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2)).images
    alone = pipe(l[1:], CAPTIONS[1:], num_inference_steps=3, generator=_gens(2)).images
    torch.testing.assert_close(alone, both[1:], atol=1e-5, rtol=1e-4)
    other = pipe(l[1:], CAPTIONS[1:], num_inference_steps=3, generator=_gens(3)).images
    assert not torch.allclose(other, both[1:], atol=1e-4)


def _stub_unet(monkeypatch, pipe: LCADPipeline, predict) -> list[tuple[int, float, object]]:
    """Replace the UNet's prediction by ``predict(sample, t, conditional)`` (``conditional``:
    bool per row, the rows whose caption is not the empty one); returns the calls' rows,
    timesteps and edit modes."""
    empty = pipe.encode_prompt([""])[0]
    holder = install_editable_attention(pipe.unet.unet)
    calls = []

    def forward(sample, timestep, encoder_hidden_states, **_):
        mode = holder.edit.mode if holder.edit is not None else None
        calls.append((sample.shape[0], float(timestep), mode))
        unconditional = torch.tensor([torch.allclose(c, empty, atol=1e-5)
                                      for c in encoder_hidden_states])  # fmt: skip
        return predict(sample, timestep, ~unconditional)

    monkeypatch.setattr(pipe.unet, "forward", forward)
    return calls


def _final_latents(monkeypatch, pipe: LCADPipeline) -> list[torch.Tensor]:
    """The latents each sampling ends on (what it decodes)."""
    latents, decode = [], pipe.decode_latents
    monkeypatch.setattr(pipe, "decode_latents", lambda z, *a: latents.append(z) or decode(z, *a))
    return latents


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guidance_mixes_the_conditional_and_unconditional_predictions(monkeypatch, scale):
    """Classifier-free guidance (Ho & Salimans): guidance 1 gives the conditional model's sample,
    0 the unconditional one's, and any scale the sample of ``ε_u + s (ε_c - ε_u)``."""
    pipe, l = _pipeline(), _grey()
    cond = lambda x: 0.3 * x + 0.2  # noqa: E731
    uncond = lambda x: -0.2 * x - 0.1  # noqa: E731
    run = lambda: pipe(l, CAPTIONS, num_inference_steps=3, guidance_scale=scale,  # noqa: E731
                       generator=_gens(1, 2)).images  # fmt: skip
    both = lambda x, t, c: torch.where(c[:, None, None, None], cond(x), uncond(x))  # noqa: E731
    calls = _stub_unet(monkeypatch, pipe, both)
    guided = run()
    assert all(rows == 4 for rows, _, _ in calls)  # both halves in every call
    expected = {0.0: uncond, 1.0: cond}.get(
        scale, lambda x: uncond(x) + scale * (cond(x) - uncond(x))
    )
    _stub_unet(monkeypatch, pipe, lambda x, t, c: expected(x))  # every row: the mixed noise
    torch.testing.assert_close(guided, run(), atol=1e-5, rtol=1e-4)
    _stub_unet(monkeypatch, pipe, lambda x, t, c: cond(x) if scale == 0 else uncond(x))
    assert not torch.allclose(guided, run(), atol=1e-3)  # the two predictions sample apart


#: Solvers whose UNet sees one time twice in a row: Heun's correction evaluates at the next
#: step's time; PNDM's PLMS start evaluates twice at its second time.
REPEATS_A_TIME = {"heun", "pndm"}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_the_unet_sees_decreasing_timesteps_under_every_scheduler(monkeypatch, name):
    """Sampling runs from noise to data: the UNet's timesteps strictly decrease (a time repeated
    only by the solvers that evaluate twice at one time), from the upper half of the schedule
    to its last steps."""
    pipe, l = _pipeline().use_scheduler(name), _grey(32, 32)
    calls = _stub_unet(monkeypatch, pipe, lambda x, t, c: torch.zeros_like(x))
    pipe(l, CAPTIONS, num_inference_steps=4, generator=_gens(1, 2))
    seen = [t for _, t, _ in calls]
    if name in REPEATS_A_TIME:
        assert all(a >= b for a, b in zip(seen, seen[1:], strict=False)), seen
        assert len(set(seen)) < len(seen)
    else:
        assert all(a > b for a, b in zip(seen, seen[1:], strict=False)), seen
    assert len(set(seen)) == 4 and seen[0] >= 750 and seen[-1] <= 1000 / 4, seen


#: Solvers whose last step ends at the noise level of the schedule's first time (PNDM's final
#: ᾱ is ``ᾱ_0``; DEIS's last sigma is ``σ_0``), not at zero noise.
ENDS_AT_THE_FIRST_LEVEL = {"pndm", "deis"}


def test_every_scheduler_lands_on_the_data_when_the_noise_prediction_is_exact(monkeypatch):
    """For data that is one point ``x0``, the exact noise prediction at ``x_t`` is
    ``(x_t - sqrt(ᾱ_t) x0) / sqrt(1 - ᾱ_t)`` (ᾱ: the training schedule); every scheduler, on the
    training noise schedule, then ends on ``x0``: exactly, or, for the multistep solvers on the
    noise prediction whose last step ends at the schedule's first noise level, about there (within
    twice that level's noise, ``sqrt(1 - ᾱ_0)`` times the initial noise: about 0.1 here, against
    about 3 for a sampling that ends at a noisy time)."""
    pipe, l = _pipeline(), _grey(32, 32)
    assert isinstance(pipe.scheduler, DDIMScheduler) and not pipe.scheduler.config.clip_sample
    alphas = pipe.scheduler.alphas_cumprod.clone()  # the training schedule
    torch.manual_seed(3)
    x0 = torch.randn(2, 4, 8, 8) * 0.5

    def exact(x, t, _):
        assert float(t).is_integer()  # the training schedule's own times here
        a = alphas[int(t)]
        return (x - a.sqrt() * x0.repeat(x.shape[0] // 2, 1, 1, 1)) / (1 - a).sqrt()

    _stub_unet(monkeypatch, pipe, exact)
    latents = _final_latents(monkeypatch, pipe)
    noise = torch.stack([torch.randn(4, 8, 8, generator=g) for g in _gens(1, 2)])
    last_level = 2 * (1 - alphas[0]).sqrt() * noise.abs().max()
    for name in SCHEDULERS:
        pipe.use_scheduler(name)
        pipe(l, CAPTIONS, num_inference_steps=4, generator=_gens(1, 2))
        error = (latents[-1] - x0).abs().max()
        assert error <= (last_level if name in ENDS_AT_THE_FIRST_LEVEL else 1e-5), (name, error)
    assert isinstance(pipe.use_scheduler("dpm++").scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # the same noise schedule
    with pytest.raises(ValueError, match="unknown scheduler"):
        pipe.use_scheduler("fast")


def _spy_modes(monkeypatch, pipe: LCADPipeline) -> list[tuple[int, float, EditMode | None]]:
    """The real UNet, its calls' rows, timesteps and edit modes recorded."""
    holder = install_editable_attention(pipe.unet.unet)
    unet, calls = pipe.unet.forward, []

    def forward(sample, timestep, encoder_hidden_states, **kw):
        mode = holder.edit.mode if holder.edit is not None else None
        calls.append((sample.shape[0], float(timestep), mode))
        return unet(sample, timestep, encoder_hidden_states, **kw)

    monkeypatch.setattr(pipe.unet, "forward", forward)
    return calls


def test_algorithm_1_records_then_applies_at_the_edited_steps_only(monkeypatch):
    """At an edited step the UNet runs twice at one time: on the conditional rows, recording the
    edited attention, then on the whole guided batch, applying it; other steps run once, plain
    (attention maps: once, observing)."""
    pipe, l = _pipeline(), _grey()
    calls = _spy_modes(monkeypatch, pipe)
    rec, app, obs = EditMode.RECORD, EditMode.APPLY, EditMode.OBSERVE
    patterns = {
        "plain": ({}, [(4, None)] * 3),
        "every step": ({"masks": _masks()}, [(2, rec), (4, app)] * 3),
        "first 2": ({"masks": _masks(), "edit_steps": 2}, [(2, rec), (4, app)] * 2 + [(4, None)]),
        "no step": ({"masks": _masks(), "edit_steps": 0}, [(4, None)] * 3),
        "attention maps": ({"attention_maps": True}, [(4, obs)] * 3),
    }
    for what, (options, expected) in patterns.items():
        calls.clear()
        pipe(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2), **options)
        assert [(rows, mode) for rows, _, mode in calls] == expected, what
        pairs = zip(calls, calls[1:], strict=False)
        assert all(t == u for (rows, t, _), (_, u, _) in pairs if rows == 2), what


BAD_INPUTS = [
    ({"image": _grey(30, 48)}, r"image sides must be multiples of 4, got \(30, 48\)"),
    ({"prompt": None}, r"prompt: a caption or one per image, got NoneType"),
    ({"prompt": ["a red circle", 3]}, r"captions must be strings, got \['str', 'int'\]"),
    ({"prompt": CAPTIONS[:1]}, r"2 images but 1 captions"),
    ({"num_inference_steps": 0}, r"num_inference_steps must be in \[1, 1000\], got 0"),
    ({"num_inference_steps": 2.5}, r"num_inference_steps .* got 2.5"),
    ({"num_inference_steps": 1001}, r"num_inference_steps .* got 1001"),
    ({"guidance_scale": -1.0}, r"guidance_scale must be a finite number >= 0, got -1.0"),
    ({"guidance_scale": math.nan}, r"guidance_scale .* got nan"),
    ({"edit_step_size": -5.0}, r"edit_step_size must be a finite number >= 0, got -5.0"),
    ({"edit_steps": -1}, r"edit_steps must be None or an integer >= 0, got -1"),
    ({"edit_steps": 1.5}, r"edit_steps .* got 1.5"),
    ({"generator": _gens(1)}, r"1 generators for 2 images"),
    ({"generator": 3}, r"generator: a torch.Generator or one per image, got 3"),
    ({"output_type": "latent"}, r"output_type must be 'pt', 'np' or 'pil', got 'latent'"),
    ({"masks": _masks()[:1]}, r"2 captions but 1 mask sets"),
    ({"masks": _masks()[0]}, r"2 captions but one mapping mask sets"),
    ({"masks": [torch.ones(4, 4), None]}, r"masks: a \{phrase: ...\} mapping or None per image, "
                                          r"got \['Tensor'\]"),
    ({"masks": [{"red circle": torch.ones(2, 3, 4)}, None]},
     r"a mask must be one \(H, W\) plane, got shape \(2, 3, 4\)"),
    ({"masks": [{"yellow star": torch.ones(4, 4)}, None]},
     r"phrase 'yellow star' is not in the caption 'a red circle and a blue square'"),
    ({"masks": [{" ": torch.ones(4, 4)}, None]}, r"phrase ' ' is not in the caption"),
    ({"prompts": [{"red circle": (1, 2)}]}, r"SAM prompts need a segmenter"),
    ({"prompts": [{"red circle": (1, 2)}], "segmenter": print}, r"2 images but 1 prompt sets"),
    ({"auto_masks": True}, r"auto_masks needs a segmenter"),
    ({"masks": _masks(), "auto_masks": True, "segmenter": print},
     r"give one of masks, prompts and auto_masks, got masks and auto_masks"),
    ({"masks": _masks(), "prompts": [None, None], "segmenter": print},
     r"give one of masks, prompts and auto_masks, got masks and prompts"),
    ({"masks": _masks(), "attention_maps": True}, r"attention_maps shows plain sampling"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), BAD_INPUTS)
def test_every_bad_input_is_named_before_any_work(monkeypatch, options, message):
    pipe = _pipeline()
    calls = _stub_unet(monkeypatch, pipe, lambda x, t, c: torch.zeros_like(x))
    kw = {"image": _grey(), "prompt": CAPTIONS, "num_inference_steps": 2} | options
    with pytest.raises(ValueError, match=message):
        pipe(**kw)
    assert not calls  # nothing sampled, nothing segmented (``print`` would have been called)


def test_the_mask_sources_rule_is_the_colorizers_too():
    """One rule, in the pipeline's words and the command line's: one source of masks at most;
    nothing (``None``, ``False``, empty) is no source."""
    check_one_mask_source({"masks": None, "prompts": {}, "auto_masks": False})
    check_one_mask_source({"masks": [None], "prompts": [], "auto_masks": False})
    with pytest.raises(ValueError, match="give one of --masks, --prompt and --auto-masks, "
                                         "got --masks and --auto-masks"):  # fmt: skip
        LCADColorizer(None, 32, masks_dir="masks/", auto_masks=True, segmenter=print)
    with pytest.raises(ValueError, match="got --prompt and --auto-masks"):
        LCADColorizer(None, 32, prompts={"a": (1, 2)}, auto_masks=True, segmenter=print)


def test_save_and_load_the_pipeline(tmp_path):
    pipe = _pipeline(heads=4)
    pipe.save_pretrained(tmp_path / "lcad")
    loaded = LCADPipeline.from_pretrained(tmp_path / "lcad")
    assert loaded.config.caption_length == 16 and loaded.unet.cec == "all_down"
    l = _grey()
    kw = dict(num_inference_steps=3, masks=_masks(), edit_step_size=20.0)
    a = pipe(l, CAPTIONS, generator=_gens(1, 2), **kw).images
    b = loaded(l, CAPTIONS, generator=_gens(1, 2), **kw).images
    assert torch.equal(a, b)


def test_inputs_outputs_and_errors():
    """The output types hold the same colours (np: the tensor's, PIL: rounded to 8 bits); PIL
    images in are their pixels / 255."""
    pipe = _pipeline()
    l = _grey()
    rgb = torch.rand(2, 3, 32, 48)

    def run(image=rgb, **kw):
        return pipe(image, "a red circle", num_inference_steps=2, generator=_gens(1, 2), **kw)

    tensors = run().images
    images = run(output_type="pil").images
    assert len(images) == 2 and images[0].size == (48, 32)
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images]))
    assert torch.equal(pixels, (tensors.permute(0, 2, 3, 1) * 255).round().to(torch.uint8))
    arrays = run(output_type="np").images
    assert arrays.shape == (2, 32, 48, 3)
    assert torch.equal(torch.from_numpy(arrays), tensors.permute(0, 2, 3, 1))
    assert torch.equal(run(return_dict=False)[0], tensors)
    from_pil = run(images).images
    torch.testing.assert_close(from_pil, run(pixels.permute(0, 3, 1, 2) / 255).images)
    with pytest.raises(ValueError, match=r"must share their size, got \[\(16, 16\), \(32, 48\)\]"):
        run([images[0], images[1].resize((16, 16))])
    with pytest.raises(ValueError, match=r"PIL images, got \(2, 2, 32, 48\)"):
        run(rgb[:, :2])
    with pytest.raises(ValueError, match=r"lightness must lie in \[0, 100.0\], got \[.*\]"):
        pipe(l * 2, CAPTIONS)


def test_phrase_tokens_pick_the_colour_words():
    tok = _pipeline().tokenizer
    caption = "a red circle and a blue square"
    picked = phrase_tokens(tok, caption, ["red circle", "square", "Blue Square"], 16)
    words = lambda row: tok.convert_ids_to_tokens(  # noqa: E731
        tok(caption, padding="max_length", max_length=16)["input_ids"]
    )
    ids = words(None)
    assert [ids[t] for t in picked[0].nonzero().flatten()] == ["red"]
    assert [ids[t] for t in picked[1].nonzero().flatten()] == ["square"]  # no colour: all of it
    assert [ids[t] for t in picked[2].nonzero().flatten()] == ["blue"]


def test_which_steps_observe_edit_or_sample_plainly():
    """Algorithm 1 edits the first ``edit_steps`` steps (``None``: all); automatic masks observe
    the first step's attention and edit from the second; attention maps observe every step."""
    rec, obs = EditMode.RECORD, EditMode.OBSERVE
    assert [edit_mode(i, None) for i in range(3)] == [rec, rec, rec]
    assert [edit_mode(i, 2) for i in range(4)] == [rec, rec, None, None]
    assert [edit_mode(i, None, observe_first=True) for i in range(3)] == [obs, rec, rec]
    assert [edit_mode(i, 2, observe_first=True) for i in range(3)] == [obs, rec, None]
    assert [edit_mode(i, 0, observe_all=True) for i in range(3)] == [obs, obs, obs]


def test_one_step_guides_each_images_noise_with_its_own_caption(monkeypatch):
    """``denoise_step`` on 3 images: one UNet call on ``[conditional; unconditional]`` (6 rows),
    then the scheduler's step on ``ε_u + s (ε_c - ε_u)`` of each image."""
    pipe = _pipeline()
    pipe.scheduler.set_timesteps(4)
    t = pipe.scheduler.timesteps[1]
    torch.manual_seed(0)
    latents = torch.randn(3, 4, 8, 8)
    # a context row's value scales the stub's prediction: images 1..3, then the empty caption
    context = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.5, 0.5]).view(6, 1, 1)
    rows = []

    def forward(sample, timestep, encoder_hidden_states, **_):
        rows.append(sample.shape[0])
        return sample * encoder_hidden_states.view(-1, 1, 1, 1)

    monkeypatch.setattr(pipe.unet, "forward", forward)
    x = pipe.scheduler.scale_model_input(latents, t)
    cond, uncond = x * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1), 0.5 * x
    expected = pipe.scheduler.step(uncond + 7.5 * (cond - uncond), t, latents).prev_sample
    torch.testing.assert_close(pipe.denoise_step(latents, t, context, 7.5), expected)
    assert rows == [6]
    with pytest.raises(ValueError, match="EditMode.RECORD needs an edit"):
        pipe.denoise_step(latents, t, context, 7.5, None, EditMode.RECORD)


def test_stochastic_schedulers_draw_their_noise_from_the_generators(monkeypatch):
    """Under a scheduler that adds noise at each step (DDPM, Euler ancestral, SDE-DPM++) the
    same generators give the same colours, whatever the global random state."""
    pipe, l = _pipeline(), _grey(32, 32)
    _stub_unet(monkeypatch, pipe, lambda x, t, c: 0.1 * x)
    takes = lambda n: "generator" in inspect.signature(SCHEDULERS[n][0].step).parameters  # noqa: E731
    stochastic = [n for n in SCHEDULERS if takes(n)]
    assert {"ddpm", "euler-a", "dpm++-sde"} <= set(stochastic)
    for name in stochastic:
        pipe.use_scheduler(name)
        runs = []
        for global_seed in (100, 200):
            torch.manual_seed(global_seed)
            runs.append(pipe(l, CAPTIONS, num_inference_steps=3, generator=_gens(1, 2)).images)
        assert torch.equal(*runs), name


def test_the_initial_latents_are_the_generators_noise_at_the_schedulers_scale():
    """Each image's noise from its generator (or the batch's from one generator, or the global
    random state without one), drawn on the generator's device whatever the default device,
    then moved to the sampling device and dtype and scaled to the scheduler's initial noise."""
    pipe = _pipeline().use_scheduler("euler")
    pipe.scheduler.set_timesteps(4)
    sigma = pipe.scheduler.init_noise_sigma
    assert sigma > 4  # Euler starts at sqrt(σ_max² + 1), not at unit noise
    shape = (2, pipe.vae.config.latent_channels, 32 // 4, 48 // 4)
    assert pipe.vae_scale_factor == 4
    each = torch.stack([torch.randn(shape[1:], generator=g) for g in _gens(1, 2)]) * sigma
    batch = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * sigma
    one = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    f64 = torch.float64
    torch.testing.assert_close(pipe.prepare_latents(2, 32, 48, _gens(1, 2), "cpu", f64),
                               each.double())  # fmt: skip
    torch.testing.assert_close(pipe.prepare_latents(2, 32, 48, one(), "cpu", f64), batch.double())
    torch.manual_seed(9)
    unseeded = torch.randn(shape) * sigma
    torch.manual_seed(9)
    torch.testing.assert_close(pipe.prepare_latents(2, 32, 48, None, "cpu", f64), unseeded.double())
    with torch.device("meta"):  # another default device (as torch.set_default_device("cuda"))
        torch.testing.assert_close(pipe.prepare_latents(2, 32, 48, _gens(1, 2), "cpu", f64),
                                   each.double())  # fmt: skip
        torch.testing.assert_close(pipe.prepare_latents(2, 32, 48, one(), "cpu", f64),
                                   batch.double())  # fmt: skip
    z = pipe.prepare_latents(2, 32, 48, _gens(1, 2), "meta", torch.float16)
    assert z.device.type == "meta" and z.dtype == torch.float16 and z.shape == shape


def test_the_output_holds_masks_mass_and_maps_only_when_asked():
    pipe, l = _pipeline(), _grey()
    run = lambda **kw: pipe(l, CAPTIONS, num_inference_steps=2, generator=_gens(1, 2), **kw)  # noqa: E731
    for options in ({}, {"masks": _masks()}):
        out = run(**options)
        assert (out.masks, out.mass, out.attention) == (None, None, None), options
    assert len(run(masks=_masks(), track_mass=True).mass) > 0
    plain = run(return_dict=False)
    assert isinstance(plain, tuple) and len(plain) == 1


def test_attention_maps_are_each_colour_words_map_of_the_latent():
    """One map per colour word (``(h, w)`` of the latent, scaled to ``[0, 1]``); a caption
    without colour words has none."""
    pipe, l = _pipeline(), _grey()
    out = pipe(l, CAPTIONS, num_inference_steps=2, generator=_gens(1, 2), attention_maps=True)
    assert [list(maps) for maps in out.attention] == [["red", "blue"], ["green"]]
    for maps in out.attention:
        for m in maps.values():
            assert m.shape == (8, 12) and m.min() == 0 and m.max() == 1
    assert not torch.equal(out.attention[0]["red"], out.attention[0]["blue"])
    bare = pipe(l, ["a circle", "two squares"], num_inference_steps=2, attention_maps=True)
    assert bare.attention == [{}, {}]


def test_one_generator_for_the_batch_or_none():
    pipe, l = _pipeline(), _grey()
    run = lambda g: pipe(l, CAPTIONS, num_inference_steps=2, generator=g).images  # noqa: E731
    one = run(torch.Generator().manual_seed(4))
    assert one.shape == (2, 3, 32, 48)
    assert torch.equal(one, run(torch.Generator().manual_seed(4)))
    assert run(None).shape == (2, 3, 32, 48)


def test_the_unet_reads_the_luminance_encoders_last_features(monkeypatch):
    pipe, l = _pipeline(), _grey()
    given, luminance = [], pipe.unet.luminance
    monkeypatch.setattr(pipe.unet, "luminance", lambda f: given.append(f) or luminance(f))
    pipe(l, CAPTIONS, num_inference_steps=1, generator=_gens(1, 2))
    features = pipe.autoencoder.luminance_features(pipe.lightness(l))
    assert len(given) == 1 and torch.equal(given[0], features[-1])
    assert not torch.equal(features[-1], features[-2])  # the check is not vacuous


def test_a_bfloat16_pipeline_samples_the_float32_colours():
    """Latents, context and luminance features follow the pipeline's dtype (a float32 one in a
    bfloat16 UNet is an error); the colours agree to bfloat16's rounding."""
    pipe, l = _pipeline(), _grey()
    run = lambda: pipe(l, CAPTIONS, num_inference_steps=2, generator=_gens(1, 2)).images  # noqa: E731
    full = run()
    pipe.to(dtype=torch.bfloat16)
    half = run()
    assert (half.float() - full).abs().max() < 0.1
