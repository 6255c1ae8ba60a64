"""The losses of L-CoIns (§3.7, Eq. 13-16).

* Eq. 13, ``L_δ``: the smooth-ℓ1 (Huber) loss with ``δ = 1`` between the predicted and the
  ground-truth chrominance, averaged over the ``N_p`` pixel values. Both are taken in the scale
  of the network's ``tanh`` head, ``ab / 110`` (the paper leaves the unit open; in raw ab units
  ``δ = 1`` would make it an ℓ1 loss, and ``β = -1e-4`` of Eq. 16 would leave the counter-colour
  loss a negligible share of the total).
* Eq. 14: ``F_sim(x, y) = σ(mean_{i, j} cos(x_i, y_j))`` over the caption's real tokens ``i``
  and the group tokens ``j``.
* Eq. 15: ``L_ctr = log(F_sim(R, G) (1 - F_sim(R', G))) + log(F_sim(R', G') (1 - F_sim(R, G')))``
  where ``R``/``G`` come from the caption and ``R'``/``G'`` from the same image with the
  caption's colour words replaced (a second forward pass).
* Eq. 16: ``L_total = α L_δ + β L_ctr`` with ``α = 1``, ``β = -1e-4``: minimising it
  *maximises* ``L_ctr``, i.e. it pulls each caption towards the groups it produced and away
  from the groups of the other caption.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["caption_group_similarity", "counter_color_loss", "smooth_l1", "total_loss"]


def smooth_l1(pred: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Eq. 13: mean over all values of ``½ e²`` where ``|e| < δ`` and ``δ (|e| - ½ δ)``
    elsewhere, ``e = pred - target`` (any equal shapes)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    return F.huber_loss(pred.float(), target.float(), delta=delta)


def caption_group_similarity(language: Tensor, words: Tensor, groups: Tensor) -> Tensor:
    """Eq. 14 per sample ``(B,)``: the sigmoid of the mean cosine similarity between every real
    caption token of ``language`` ``(B, N_L, D)`` (``words`` ``(B, N_L)`` True at real tokens)
    and every token of ``groups`` ``(B, N_G, D)``."""
    cos = F.normalize(language.float(), dim=-1) @ F.normalize(groups.float(), dim=-1).mT
    weights = words.to(cos.dtype)[:, :, None]  # (B, N_L, 1)
    mean = (cos * weights).sum((1, 2)) / (weights.sum((1, 2)) * groups.shape[1])
    return torch.sigmoid(mean)


def counter_color_loss(
    language: Tensor,
    words: Tensor,
    groups: Tensor,
    counter_language: Tensor,
    counter_words: Tensor,
    counter_groups: Tensor,
) -> Tensor:
    """Eq. 15 per sample ``(B,)``: ``language``/``groups`` are ``R_lag``/``R_grp`` of the
    caption, ``counter_*`` the same of the caption with its colour words replaced."""
    s_rg = caption_group_similarity(language, words, groups)
    s_cg = caption_group_similarity(counter_language, counter_words, groups)
    s_cc = caption_group_similarity(counter_language, counter_words, counter_groups)
    s_rc = caption_group_similarity(language, words, counter_groups)
    return torch.log(s_rg * (1 - s_cg)) + torch.log(s_cc * (1 - s_rc))


def total_loss(regression: Tensor, counter: Tensor | None, alpha: float, beta: float) -> Tensor:
    """Eq. 16: ``α L_δ + β L_ctr`` (``counter`` ``None``: no sample had a colour word to
    replace, the term is 0)."""
    if counter is None or beta == 0:
        return alpha * regression
    return alpha * regression + beta * counter
