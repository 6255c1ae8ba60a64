"""``CICModule``'s training loss against a transcription of the paper's equations."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from chromalab.data import CapShapes, add_lab, collate_skip_bad
from chromalab.rebalance import empirical_prior, rebalance_weights
from cic.module import CICModule, subsample_targets
from tests.cic.components import WIDTH

#: soft-encoding settings other than the defaults, so that the test sees whether they are used
K, SIGMA = 5, 4.0


def eq3(logits: Tensor, ab: Tensor, centers: Tensor, class_weights: Tensor) -> Tensor:
    """CIC Eq. 3 with the rebalancing of Eq. 5, written out densely.

    ``Z``: the ``K`` nearest bin centres of each target pixel weighted by a Gaussian of width
    ``SIGMA`` and normalized (§3.1); ``v = w[argmin_q |ab - c_q|]`` (Eq. 5);
    ``L = -mean_{b,h,w} v sum_q Z_q log softmax(logits)_q``.
    """
    b, _, h, w = ab.shape
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2).double()
    d2 = torch.cdist(points, centers.double()).square()  # (N, Q)
    near_d2, near = d2.topk(K, dim=1, largest=False)
    gauss = torch.exp(-near_d2 / (2 * SIGMA**2))
    z = torch.zeros_like(d2).scatter_(1, near, gauss / gauss.sum(1, keepdim=True))
    v = class_weights.double()[d2.argmin(1)]
    log_p = torch.log_softmax(logits.double(), 1).permute(0, 2, 3, 1).reshape(-1, d2.shape[1])
    return -(v * (z * log_p).sum(1)).mean()


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_loss_is_the_rebalanced_soft_cross_entropy(deep_supervision: bool) -> None:
    """On real scenes with the class weights of their own prior (far from uniform), ``_loss``
    is Eq. 3 weighted by Eq. 5 on ab point-sampled at 1/4 (plus, with deep supervision, the
    readouts of blocks 7 and 6 on ab at 1/8, weighted 1/2 and 1/4)."""
    scenes = CapShapes(length=2, size=32, seed=0)
    batch = add_lab(collate_skip_bad([scenes[i] for i in range(2)]))
    module = CICModule(width=WIDTH, k=K, sigma=SIGMA, deep_supervision=deep_supervision).eval()
    centers = module.bins.centers
    targets = subsample_targets(batch["ab"], 4)
    weights = rebalance_weights(empirical_prior([targets], module.bins), 0.5, module.bins, SIGMA)
    assert weights.max() > 2 * weights.min()
    module.class_weights.copy_(weights.float())

    with torch.no_grad():
        loss, logits = module._loss(batch)
        if deep_supervision:
            final, aux = module.network.forward_with_aux(batch["l"])
        else:
            final, aux = module(batch["l"]), {}
    assert torch.allclose(logits, final, atol=1e-5)
    expected = eq3(final, targets, centers, weights)
    if deep_supervision:
        coarse = subsample_targets(batch["ab"], 8)
        expected = expected + 0.5 * eq3(aux["block7"], coarse, centers, weights)
        expected = expected + 0.25 * eq3(aux["block6"], coarse, centers, weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
