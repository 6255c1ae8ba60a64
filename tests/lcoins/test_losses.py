"""The L-CoIns losses (Eq. 13-16) against direct transcriptions, and the sign of Eq. 16."""

from __future__ import annotations

import math

import pytest
import torch

from lcoins.losses import caption_group_similarity, counter_color_loss, smooth_l1, total_loss


def test_smooth_l1_is_eq_13():
    pred, target = torch.randn(2, 2, 3, 3) * 1.5, torch.randn(2, 2, 3, 3)
    delta = 1.0
    total = 0.0
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
        e = abs(p - t)
        total += 0.5 * e * e if e < delta else delta * (e - 0.5 * delta)
    expected = total / pred.numel()  # 1/N_p over every value
    assert smooth_l1(pred, target, delta).item() == pytest.approx(expected, rel=1e-5)
    assert smooth_l1(pred, target, 0.5).item() != pytest.approx(expected, rel=1e-3)


def test_smooth_l1_errors():
    with pytest.raises(ValueError, match="differ"):
        smooth_l1(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))
    for delta in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"delta must be positive, got {delta}"):
            smooth_l1(torch.zeros(2), torch.ones(2), delta)


def test_smooth_l1_defaults_to_the_papers_delta_of_1():
    """Errors 0.5 and 3: ``½ 0.5²`` inside ``δ = 1``, ``3 - ½`` beyond it (``δ = 2`` would
    give 0.125 and 4)."""
    pred, target = torch.tensor([0.5, 3.0]), torch.zeros(2)
    assert smooth_l1(pred, target).item() == pytest.approx((0.125 + 2.5) / 2)


def _similarity(x, words, y):
    """Eq. 14 for one sample: sigmoid of the mean cosine over real words and all groups."""
    values = []
    for i in range(x.shape[0]):
        if not words[i]:
            continue
        for j in range(y.shape[0]):
            values.append(torch.nn.functional.cosine_similarity(x[i], y[j], dim=0).item())
    return 1 / (1 + math.exp(-sum(values) / len(values)))


def test_similarity_is_eq_14_over_the_real_words():
    x, y = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    words = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = caption_group_similarity(x, words, y)
    for b in range(2):
        assert out[b].item() == pytest.approx(_similarity(x[b], words[b], y[b]), rel=1e-5)


def test_counter_color_loss_is_eq_15():
    r, rc = torch.randn(3, 4, 6), torch.randn(3, 5, 6)
    g, gc = torch.randn(3, 2, 6), torch.randn(3, 2, 6)
    w, wc = torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    out = counter_color_loss(r, w, g, rc, wc, gc)
    for b in range(3):
        s_rg, s_cg = _similarity(r[b], w[b], g[b]), _similarity(rc[b], wc[b], g[b])
        s_cc, s_rc = _similarity(rc[b], wc[b], gc[b]), _similarity(r[b], w[b], gc[b])
        expected = math.log(s_rg * (1 - s_cg)) + math.log(s_cc * (1 - s_rc))
        assert out[b].item() == pytest.approx(expected, rel=1e-5)


def test_the_sign_of_eq_16_rewards_captions_that_match_their_groups():
    """A toy case: each caption's tokens point where its own groups point (matched) or where the
    other caption's groups point (crossed). With beta = -1e-4 the matched case must cost less,
    and a gradient step on the total must raise the matched similarity."""
    e0, e1 = torch.eye(4)[0], torch.eye(4)[1]
    words = torch.ones(1, 3, dtype=torch.bool)

    def loss(r, g, rc, gc):
        counter = counter_color_loss(r, words, g, rc, words, gc).mean()
        return total_loss(torch.tensor(0.2), counter, alpha=1.0, beta=-1e-4)

    tokens = lambda v: v.expand(1, 3, 4).clone()  # noqa: E731
    groups = lambda v: v.expand(1, 2, 4).clone()  # noqa: E731
    matched = loss(tokens(e0), groups(e0), tokens(e1), groups(e1))
    crossed = loss(tokens(e0), groups(e1), tokens(e1), groups(e0))
    assert matched < crossed

    r = tokens(e0 + 0.5 * e1).requires_grad_()
    g = groups(e0)
    before = caption_group_similarity(r, words, g).item()
    loss(r, g, tokens(e1), groups(e1)).backward()
    with torch.no_grad():
        r -= 100.0 * r.grad  # a step against the gradient of the total
    assert caption_group_similarity(r, words, g).item() > before


def test_total_loss_without_a_counter_term():
    assert total_loss(torch.tensor(0.3), None, 1.0, -1e-4).item() == pytest.approx(0.3)
    assert total_loss(torch.tensor(0.3), torch.tensor(-2.0), 2.0, -0.1).item() == pytest.approx(0.8)
    assert total_loss(torch.tensor(0.3), torch.tensor(-2.0), 1.0, 0.0).item() == pytest.approx(0.3)
    # any non-zero beta adds beta times the counter term, beta = 1 too
    assert total_loss(torch.tensor(0.3), torch.tensor(-2.0), 1.0, 1.0).item() == pytest.approx(-1.7)
