"""The grouping transformer (Eq. 4-9) and the grouping layer (Eq. 11-12), each against a direct
transcription of the paper's equations, and the group tokens as the only image-language path."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import lcoins.grouping
from lcoins.grouping import (
    GroupingAttention,
    GroupingBlock,
    GroupingLayer,
    GroupingTransformer,
    TokenLayout,
)
from tests.lcoins.components import tiny_network

LAYOUT = TokenLayout(images=5, words=4, groups=3)


def _softmax_attention(q, k, v, keys=None):
    logits = q @ k.T / math.sqrt(q.shape[-1])
    if keys is not None:
        logits = logits.masked_fill(~keys[None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def _transcription(attn: GroupingAttention, x: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Eq. 6-9 for one sample, head by head, with the 'modalities' group slots."""
    n, c = x.shape
    heads = attn.heads
    d = c // heads
    q, k, v = attn.qkv(x).split(c, dim=-1)
    image, language, group = slice(0, 5), slice(5, 9), slice(9, 12)
    rows = []
    for token in range(n):
        pieces = []
        for h in range(heads):
            s = slice(h * d, (h + 1) * d)
            qh, kh, vh = q[:, s], k[:, s], v[:, s]
            qt = qh[token : token + 1]
            if token < 5:  # image: Eq. 6 within the image, Eq. 8 from the groups
                inner = _softmax_attention(qt, kh[image], vh[image])
                outer = _softmax_attention(qt, kh[group], vh[group])
            elif token < 9:  # language
                inner = _softmax_attention(qt, kh[language], vh[language], words)
                outer = _softmax_attention(qt, kh[group], vh[group])
            else:  # group: Eq. 7 from the image, Eq. 7 from the language
                inner = _softmax_attention(qt, kh[image], vh[image])
                outer = _softmax_attention(qt, kh[language], vh[language], words)
            pieces += [inner, outer]
        rows.append(torch.cat(pieces, dim=-1))  # Eq. 9: [in_1 out_1 ... in_H out_H]
    return attn.proj(torch.cat(rows))


def test_grouping_attention_matches_a_transcription_of_eq_6_to_9():
    attn = GroupingAttention(width=8, heads=2)
    x = torch.randn(2, LAYOUT.total, 8)
    words = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = attn(x, LAYOUT, words)
    for b in range(2):
        expected = _transcription(attn, x[b], words[b])
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("attention", "group_slots"),
    [("grouping", "modalities"), ("grouping", "joint"), ("full", "modalities")],
)
def test_padded_caption_tokens_change_no_image_or_group_token(attention, group_slots):
    """Whatever the attention: a padded caption token is no key of any other token."""
    attn = GroupingAttention(width=8, heads=2, attention=attention, group_slots=group_slots)
    x = torch.randn(1, LAYOUT.total, 8)
    words = torch.tensor([[True, True, False, False]])
    other = x.clone()
    other[:, 7:9] = torch.randn(1, 2, 8)  # the two padded caption tokens
    a, b = attn(x, LAYOUT, words), attn(other, LAYOUT, words)
    keep = list(range(0, 7)) + list(range(9, 12))
    torch.testing.assert_close(a[:, keep], b[:, keep])


def test_joint_group_slots_attend_to_both_modalities_in_one_softmax():
    attn = GroupingAttention(width=8, heads=1, group_slots="joint")
    x = torch.randn(1, LAYOUT.total, 8)
    words = torch.ones(1, 4, dtype=torch.bool)
    out = attn(x, LAYOUT, words)[0, 9:]
    q, k, v = attn.qkv(x[0]).split(8, dim=-1)
    inner = _softmax_attention(q[9:], k[9:], v[9:])
    outer = _softmax_attention(q[9:], k[:9], v[:9])
    torch.testing.assert_close(out, attn.proj(torch.cat((inner, outer), -1)), atol=1e-5, rtol=1e-5)


def test_full_attention_is_vits_multi_head_self_attention_over_every_real_token():
    attn = GroupingAttention(width=8, heads=2, attention="full")
    x = torch.randn(2, LAYOUT.total, 8)
    words = torch.tensor([[True, True, True, False], [True, True, False, False]])
    out = attn(x, LAYOUT, words)
    for b in range(2):
        keys = torch.cat(
            (torch.ones(5, dtype=torch.bool), words[b], torch.ones(3, dtype=torch.bool))
        )
        q, k, v = attn.qkv(x[b]).split(8, dim=-1)
        heads = [
            _softmax_attention(q[:, s], k[:, s], v[:, s], keys) for s in (slice(0, 4), slice(4, 8))
        ]
        torch.testing.assert_close(out[b], attn.proj(torch.cat(heads, -1)), atol=1e-5, rtol=1e-5)


def test_a_grouping_block_is_eq_4_and_5():
    """``Ẑ = GA(LN(Z)) + Z``, ``Z' = MLP(LN(Ẑ)) + Ẑ``, the MLP ViT's: 4x wide, GELU."""
    block = GroupingBlock(8, 2)
    z = torch.randn(2, LAYOUT.total, 8)
    words = torch.tensor([[True, True, True, False], [True, True, True, True]])
    hidden = z + block.attn(block.norm1(z), LAYOUT, words)
    first, last = block.mlp[0], block.mlp[-1]
    assert first.out_features == 32
    expected = hidden + last(F.gelu(first(block.norm2(hidden))))
    torch.testing.assert_close(block(z, LAYOUT, words), expected, atol=1e-5, rtol=1e-5)
    assert (block.attn.attention, block.attn.group_slots) == ("grouping", "modalities")
    joint = GroupingBlock(8, 2, attention="full", group_slots="joint").attn
    assert (joint.attention, joint.group_slots) == ("full", "joint")


def test_the_grouping_transformer_is_its_blocks_then_a_layer_norm():
    transformer = GroupingTransformer(8, depth=2, heads=2)
    z = torch.randn(2, LAYOUT.total, 8)
    words = torch.ones(2, 4, dtype=torch.bool)
    a, b = transformer.blocks
    expected = transformer.norm(b(a(z, LAYOUT, words), LAYOUT, words))
    torch.testing.assert_close(transformer(z, LAYOUT, words), expected)
    assert a.mlp[0].out_features == 32 and a.attn.group_slots == "modalities"
    one = GroupingTransformer(8, depth=1, heads=2, attention="full", group_slots="joint")
    assert len(one.blocks) == 1
    assert (one.blocks[0].attn.attention, one.blocks[0].attn.group_slots) == ("full", "joint")
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        GroupingTransformer(8, depth=0, heads=2)


def test_activation_checkpointing_is_only_for_training_and_changes_no_gradient(monkeypatch):
    """Checkpointed blocks (training, gradients on) give the plain blocks' outputs and
    gradients, also when the input tokens need no gradient; evaluation and ``no_grad`` runs,
    and transformers without the option, never checkpoint."""
    calls = []
    real = lcoins.grouping.checkpoint
    monkeypatch.setattr(
        lcoins.grouping, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    plain = GroupingTransformer(8, depth=2, heads=2)
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing = True
    z, words = (
        torch.randn(2, LAYOUT.total, 8),
        torch.tensor([[True] * 4, [True, True, False, False]]),
    )
    weight = torch.randn(2, LAYOUT.total, 8)
    grads = []
    for model in (plain, checkpointed):
        (model(z, LAYOUT, words) * weight).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    assert len(calls) == 2  # the checkpointed transformer's two blocks, the plain one's none
    for a, b in zip(*grads, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b)
    checkpointed.eval()
    checkpointed(z, LAYOUT, words)
    checkpointed.train()
    with torch.no_grad():
        checkpointed(z, LAYOUT, words)
    assert len(calls) == 2
    assert GroupingTransformer(8, depth=1, heads=2).activation_checkpointing is False
    on = GroupingTransformer(8, depth=1, heads=2, activation_checkpointing=True)
    on(z, LAYOUT, words)
    assert len(calls) == 3


def test_the_group_tokens_are_the_only_path_between_image_and_language():
    torch.manual_seed(0)
    network = tiny_network().eval()
    l = torch.rand(1, 1, 32, 32) * 100
    encoder = network.text_encoder
    captions = (["a red circle on the left"], ["a blue square at the bottom"])
    tokens = [encoder.tokenize(c, "cpu") for c in captions]

    def image_tokens(zero_groups: bool) -> list[torch.Tensor]:
        hooks = []
        if zero_groups:  # the groups' state at the input of every block: zero

            def zero(block, args):
                z, layout, words = args
                z = z.clone()
                z[:, layout.images + layout.words :] = 0
                return z, layout, words

            hooks = [b.register_forward_pre_hook(zero) for b in network.transformer.blocks]
        with torch.no_grad():
            out = [network(l, *t).image_tokens for t in tokens]
        for hook in hooks:
            hook.remove()
        return out

    a, b = image_tokens(zero_groups=False)
    assert (a - b).abs().max() > 1e-4  # the caption reaches the image through the groups
    a, b = image_tokens(zero_groups=True)
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # and through nothing else


def test_without_grouping_attention_the_caption_reaches_the_image_directly():
    network = tiny_network(grouping_attention=False).eval()
    assert network.transformer.blocks[0].attn.attention == "full"
    l = torch.rand(1, 1, 32, 32) * 100
    enc = network.text_encoder
    with torch.no_grad():
        a = network(l, *enc.tokenize(["a red circle"], "cpu")).image_tokens
        b = network(l, *enc.tokenize(["a blue square"], "cpu")).image_tokens
    assert (a - b).abs().max() > 1e-4


class TestGroupingLayer:
    def test_matches_eq_11_and_12(self):
        layer = GroupingLayer(width=6)
        images, groups = torch.randn(2, 7, 6), torch.randn(2, 3, 6)
        merged, assignment = layer(images, groups)
        similarity = layer.similarity(images, groups)
        for b in range(2):
            for i in range(3):
                chosen = [j for j in range(7) if similarity[b, :, j].argmax() == i]
                expected = groups[b, i].clone()
                if chosen:
                    expected += layer.value(images[b, chosen]).mean(0)
                torch.testing.assert_close(merged[b, i], expected, atol=1e-5, rtol=1e-5)
        # one-hot over the groups in value, every image token in exactly one group
        value = assignment.detach()
        assert ((value - value.round()).abs() < 1e-6).all()  # 0 or 1 up to rounding
        torch.testing.assert_close(value.sum(1), torch.ones(2, 7))

    def test_straight_through_gradient_reaches_the_similarity(self):
        layer = GroupingLayer(width=6)
        images = torch.randn(1, 7, 6, requires_grad=True)
        groups = torch.randn(1, 3, 6, requires_grad=True)
        merged, _ = layer(images, groups)
        (merged * torch.randn_like(merged)).sum().backward()
        for p in (layer.query.weight, layer.key.weight, layer.value.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0

    def test_an_empty_group_has_a_bounded_gradient_and_chosen_groups_exact_means(self):
        torch.manual_seed(0)
        layer = GroupingLayer(width=6)
        images = torch.randn(1, 7, 6, requires_grad=True)
        groups = torch.randn(1, 4, 6)
        with torch.no_grad():  # group 3 far from every image token: nobody chooses it
            layer.query.weight.copy_(torch.eye(6))
            layer.key.weight.copy_(torch.eye(6))
            groups[0, 3] = -10 * images[0].mean(0)
        groups.requires_grad_(True)
        merged, assignment = layer(images, groups)
        counts = assignment.detach().sum(-1)[0]
        assert counts[3] == 0 and counts.sum() == 7
        # the empty group keeps its token; a chosen group adds the exact mean of its values
        torch.testing.assert_close(merged[0, 3], groups[0, 3])
        for i in range(3):
            chosen = assignment.detach()[0, i] > 0.5
            if chosen.any():
                expected = groups[0, i] + layer.value(images[0, chosen]).mean(0)
                torch.testing.assert_close(merged[0, i], expected, atol=1e-6, rtol=1e-5)
        # the empty group's straight-through gradient is of the size of the values, not 1/eps
        merged[0, 3].sum().backward()
        values = layer.value(images[0]).detach()
        bound = 10 * values.abs().sum() * (1 + images.detach().abs().max()) ** 2
        for grad in (images.grad, layer.query.weight.grad, layer.key.weight.grad):
            assert grad is not None and grad.abs().max() < bound

    def test_similarity_is_a_softmax_over_the_groups(self):
        layer = GroupingLayer(width=6)
        images, groups = torch.randn(2, 7, 6), torch.randn(2, 3, 6)
        s = layer.similarity(images, groups)
        torch.testing.assert_close(s.sum(1), torch.ones(2, 7))
        # per image token j: softmax over the groups i of q(Z_grp,i) . k(Z_img,j) / sqrt(C), C = 6
        q = layer.query(layer.norm_groups(groups))
        k = layer.key(layer.norm_images(images))
        for b in range(2):
            for j in range(7):
                logits = torch.stack([q[b, i] @ k[b, j] for i in range(3)]) / math.sqrt(6)
                torch.testing.assert_close(s[b, :, j], torch.softmax(logits, 0))


def test_bad_settings():
    with pytest.raises(ValueError, match="divisible"):
        GroupingAttention(width=10, heads=3)
    with pytest.raises(ValueError, match="group_slots"):
        GroupingAttention(width=8, heads=2, group_slots="mean")
    with pytest.raises(ValueError, match="attention must be 'grouping' or 'full', got 'mixed'"):
        GroupingAttention(width=8, heads=2, attention="mixed")
