"""``LCADPipeline`` on tiny components: batches of non-square images, 2 and 4 heads, the
instance-aware edit, repeat determinism, per-image seeds, schedulers by name, and a
``save_pretrained`` / ``from_pretrained`` round trip."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from chromalab.color import rgb_to_l_ab
from chromalab.text_models import EMBEDDED_TEXT_ENCODER
from lcad.attention import EditableCrossAttention
from lcad.module import LCADDiffusionModule
from lcad.pipeline import SCHEDULERS, LCADPipeline, phrase_tokens
from tests.lcad.components import TEXT_OPTIONS, TINY_UNET, TINY_VAE

CAPTIONS = ["a red circle and a blue square", "the left heart is green"]


def _pipeline(heads: int = 2) -> LCADPipeline:
    torch.manual_seed(0)
    module = LCADDiffusionModule(
        vae=TINY_VAE, unet=TINY_UNET | {"attention_head_dim": heads},
        text_encoder=EMBEDDED_TEXT_ENCODER, text_pretrained=False, text_options=TEXT_OPTIONS,
        max_caption_length=16,
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


def test_schedulers_by_name():
    pipe = _pipeline()
    l = _grey(32, 32)
    assert isinstance(pipe.scheduler, DDIMScheduler) and not pipe.scheduler.config.clip_sample
    for name in SCHEDULERS:
        pipe.use_scheduler(name)
        out = pipe(l, CAPTIONS, num_inference_steps=4, generator=_gens(1, 2)).images
        assert torch.isfinite(out).all(), name
    assert isinstance(pipe.use_scheduler("dpm++").scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # the same noise schedule
    with pytest.raises(ValueError, match="unknown scheduler"):
        pipe.use_scheduler("fast")


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
    pipe = _pipeline()
    l = _grey()
    rgb = torch.rand(2, 3, 32, 48)
    images = pipe(rgb, "a red circle", num_inference_steps=2, output_type="pil").images
    assert len(images) == 2 and images[0].size == (48, 32)
    again = pipe(images, "a red circle", num_inference_steps=2, output_type="np").images
    assert again.shape == (2, 32, 48, 3)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe(l[..., :30, :], CAPTIONS)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        pipe(l, CAPTIONS[:1])
    with pytest.raises(ValueError, match="not in the caption"):
        pipe(l, CAPTIONS, masks=[{"yellow star": torch.ones(4, 4)}, None])
    with pytest.raises(ValueError, match="lightness must lie"):
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
