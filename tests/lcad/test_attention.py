"""Instance-aware sampling's attention edit (L-CAD Algorithm 1) on tiny diffusers UNets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from lcad.attention import (
    AttentionEdit,
    EditableCrossAttention,
    EditMode,
    attention_edit,
    install_editable_attention,
    mask_mass,
)
from tests.lcad.components import TINY_UNET


def _unet(heads: int) -> UNet2DConditionModel:
    torch.manual_seed(0)
    # attention_head_dim is diffusers' head count for this UNet family
    return UNet2DConditionModel(**(TINY_UNET | {"attention_head_dim": heads,
                                                "block_out_channels": [8, 16]})).eval()  # fmt: skip


def _edit(b: int = 2, h: int = 6, w: int = 10, t: int = 7, step: float = 4.0) -> AttentionEdit:
    masks = torch.zeros(b, 2, h * 4, w * 4)
    masks[:, 0, :, : w * 2] = 1  # phrase 0: left half
    masks[:, 1, : h * 2] = 1  # phrase 1: top half
    tokens = torch.zeros(b, 2, t, dtype=torch.bool)
    tokens[:, 0, 1], tokens[:, 0, 2], tokens[:, 1, 4] = True, True, True
    return AttentionEdit(masks, tokens, (h, w), step)


def _inputs(b: int = 2, h: int = 6, w: int = 10, t: int = 7):
    torch.manual_seed(1)
    z = torch.randn(b, 4, h, w)
    return torch.cat((z, z)), torch.tensor(500), torch.randn(2 * b, t, 12)  # CFG: 2B rows


@pytest.mark.parametrize("heads", [2, 4])
def test_without_an_edit_and_when_recording_the_unet_is_unchanged(heads):
    unet = _unet(heads)
    z, t, context = _inputs()
    with torch.no_grad():
        expected = unet(z, t, context).sample
        install_editable_attention(unet)
        assert any(isinstance(p, EditableCrossAttention) for p in unet.attn_processors.values())
        torch.testing.assert_close(unet(z, t, context).sample, expected, atol=1e-5, rtol=1e-4)
        with attention_edit(unet, _edit()) as edit:
            edit.mode = EditMode.RECORD
            recorded = unet(z, t, context).sample
            edit.step_size = 0.0
            edit.mode = EditMode.RECORD
            unet(z, t, context)
            edit.mode = EditMode.APPLY  # λ = 0: the recorded maps are the layer's own
            applied = unet(z, t, context).sample
    torch.testing.assert_close(recorded, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(applied, expected, atol=1e-5, rtol=1e-4)
    cross = [n for n in unet.attn_processors if ".attn2." in n]
    assert set(edit.edited) == set(cross)  # every cross-attention layer, any head count


def test_the_step_is_the_bce_gradient_on_the_phrase_tokens_only():
    edit = _edit(step=3.0)
    heads, queries = 2, 6 * 10
    torch.manual_seed(2)
    logits = torch.randn(2 * heads, queries, 7, requires_grad=True)
    target, selected = edit.targets(queries)
    x = logits.view(2, heads, queries, 7)
    bce = torch.nn.functional.binary_cross_entropy(
        torch.sigmoid(x), target[:, None].expand_as(x), reduction="none"
    )
    (bce * selected[:, None]).sum().backward()
    stepped = edit.step(logits.detach(), heads)
    torch.testing.assert_close(stepped, logits.detach() - 3.0 * logits.grad)
    untouched = ~selected[0, 0]
    assert torch.equal(stepped[..., untouched], logits.detach()[..., untouched])


@pytest.mark.parametrize("heads", [2, 4])
def test_an_edit_moves_attention_into_the_mask_for_a_non_square_batch(heads):
    unet = _unet(heads)
    z, t, context = _inputs()
    with torch.no_grad(), attention_edit(unet, _edit(step=4.0)) as edit:
        edit.mode = EditMode.RECORD
        plain = unet(z, t, context).sample
        edit.mode = EditMode.APPLY
        edited = unet(z, t, context).sample
    assert edited.shape == plain.shape == (4, 4, 6, 10)
    assert not torch.allclose(edited[:2], plain[:2])  # conditional rows edited
    torch.testing.assert_close(edited[2:], plain[2:])  # unconditional rows untouched
    # on every layer's own logits, one step raises the share of each phrase token's attention
    # that falls inside its mask
    raw = _edit(step=0.0)
    with torch.no_grad(), attention_edit(unet, raw):
        raw.mode = EditMode.RECORD
        unet(z, t, context)
    for name, logits in raw.edited.items():
        before = mask_mass(logits, raw, heads)
        after = mask_mass(edit.step(logits, heads), raw, heads)
        assert (after > before).all(), name


def test_nothing_is_held_after_a_sampling():
    unet = _unet(2)
    z, t, context = _inputs()
    holder = install_editable_attention(unet)
    with torch.no_grad():
        with attention_edit(unet, _edit()) as edit:
            edit.mode = EditMode.RECORD
            unet(z, t, context)
        assert holder.edit is None
        again = unet(z, t, context).sample
        install_editable_attention(unet)  # idempotent
        torch.testing.assert_close(unet(z, t, context).sample, again)
    with (
        pytest.raises(RuntimeError, match="record first"),
        torch.no_grad(),
        attention_edit(unet, _edit()) as edit,
    ):
        edit.mode = EditMode.APPLY
        unet(z, t, context)


def test_observed_maps_peak_where_each_phrase_attends():
    b, heads, (h, w), t = 2, 2, (6, 10), 7
    edit = _edit(b, h, w, t)
    peaks = [((2, 7), (4, 1)), ((5, 0), (0, 9))]  # (y, x) per image and phrase
    for grid, scale in (((h, w), 1), ((3, 5), 2)):  # the latent's layer and one level down
        probs = torch.full((b * heads, grid[0] * grid[1], t), 0.1)
        for i in range(b):
            for p, (y, x) in enumerate(peaks[i]):
                tok = edit.tokens[i, p].nonzero()[0, 0]
                probs[i * heads : (i + 1) * heads, (y // scale) * grid[1] + x // scale, tok] = 5
        edit.observe(probs.softmax(-1), heads)
    assert edit.observed.shape == (b, 2, h, w)
    expected = torch.tensor([[[(x + 0.5) / w, (y + 0.5) / h] for y, x in per] for per in peaks])
    torch.testing.assert_close(edit.peaks(), expected)
    with pytest.raises(RuntimeError, match="no attention observed"):
        _edit().peaks()


def _layer_inputs(attn, b: int = 2, queries: int = 6 * 10, t: int = 7):
    """Hidden states ``(2B, N, C)`` and context ``(2B, T, width)`` of one cross-attention layer."""
    torch.manual_seed(3)
    hidden = torch.randn(2 * b, queries, attn.to_q.in_features)
    return hidden, torch.randn(2 * b, t, attn.to_k.in_features)


def _by_hand(attn, hidden, context):
    """The layer's logits ``(2B, heads, N, T)`` and values ``(2B, heads, T, d)``, transcribed."""
    heads = attn.heads

    def split(x):
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(context)), split(attn.to_v(context))
    return q @ k.transpose(-1, -2) * attn.scale, v


def _out(attn, probs, v):
    """``to_out`` of the heads' ``probs @ v``, joined."""
    y = (probs @ v).transpose(1, 2).flatten(2)
    return attn.to_out[1](attn.to_out[0](y))


@pytest.mark.parametrize("heads", [2, 4])
def test_one_layer_records_applies_and_observes_algorithm_1_by_hand(heads):
    """Algorithm 1 on one cross-attention layer, against a transcription: RECORD attends as usual
    and keeps ``M - λ (sigmoid(M) - M_est)`` on the phrase tokens' columns of the conditional rows;
    APPLY attends with those logits in the conditional rows and with the layer's own in the
    unconditional ones; OBSERVE attends as usual and sums each phrase's head-averaged attention."""
    unet = _unet(heads)
    install_editable_attention(unet)
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2  # the 6x10 latent's grid
    hidden, context = _layer_inputs(attn)
    edit = _edit(step=3.0)
    with torch.no_grad():
        logits, v = _by_hand(attn, hidden, context)
        plain = _out(attn, logits.softmax(-1), v)
        # the target of each token: its phrase's mask averaged over 4x4 cells (24x40 -> 6x10)
        target = torch.zeros(2, 6 * 10, 7)
        for i in range(2):
            for p in range(2):
                small = F.avg_pool2d(edit.masks[i, p][None], 4).flatten()
                target[i][:, edit.tokens[i, p]] = small[:, None]
        columns = edit.tokens.any(1)[:, None, None, :]  # (B, 1, 1, T)
        cond = logits[:2]
        edited = torch.where(columns, cond - 3.0 * (torch.sigmoid(cond) - target[:, None]), cond)
        probs = torch.cat((edited, logits[2:])).softmax(-1)
        expected_applied = _out(attn, probs, v)
        with attention_edit(unet, edit):
            edit.mode = EditMode.RECORD
            recorded = attn(hidden, encoder_hidden_states=context)
            edit.mode = EditMode.APPLY
            applied = attn(hidden, encoder_hidden_states=context)
            edit.mode = EditMode.OBSERVE
            observed = attn(hidden, encoder_hidden_states=context)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(edit.edited[attn.processor.name], edited.flatten(0, 1))
    torch.testing.assert_close(applied, expected_applied, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(applied[:2], plain[:2], atol=1e-3)  # the edit does move them
    torch.testing.assert_close(observed, plain, atol=1e-5, rtol=1e-4)
    per_head = logits[:2].softmax(-1).mean(1)  # (B, N, T)
    maps = torch.stack([torch.stack([per_head[i][:, edit.tokens[i, p]].sum(-1) for p in range(2)])
                        for i in range(2)]).view(2, 2, 6, 10)  # fmt: skip
    torch.testing.assert_close(edit.observed, maps)


def test_an_edit_mode_is_an_edit_mode():
    edit = _edit()
    assert edit.mode is None
    with pytest.raises(TypeError, match="EditMode or None, got 'record'"):
        edit.mode = "record"  # a string would silently attend as usual
    edit.mode = EditMode.APPLY
    assert edit.mode is EditMode.APPLY
