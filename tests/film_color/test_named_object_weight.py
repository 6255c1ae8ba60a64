"""``named_object_weight``: the cells of the objects a caption names weigh more in training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from film_color.language import Vocabulary
from film_color.module import FilmColorModule

NETWORK = {"width": 0.125, "embedding_dim": 8, "hidden_size": 8}
KWARGS = dict(network=NETWORK, channels_last=False)


def _masks() -> dict[str, torch.Tensor]:
    """Two scenes of 16x16 pixels, three object slots each (the last one padding)."""
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, 0:4, 0:4] = True  # named: fills output cell (0, 0) of the 4x4 grid
    masks[0, 0, 0:2, 4] = True  # and 2 of the 16 pixels of cell (0, 1)
    masks[0, 1, 8:12, 8:12] = True  # not named: cell (2, 2) keeps its weight
    masks[1, 0, 12:16, 0:4] = True  # both named and overlapping: cell (3, 0) counted once
    masks[1, 1, 12:16, 0:2] = True
    mentioned = torch.tensor([[True, False, False], [True, True, False]])
    return {"masks": masks, "mentioned": mentioned}


def test_scale_is_one_plus_the_weight_times_the_named_coverage_of_each_cell():
    module = FilmColorModule(named_object_weight=3.0, **KWARGS)
    scale = module.named_object_scale(_masks(), (4, 4))
    expected = torch.ones(2, 4, 4)
    expected[0, 0, 0] = 1 + 3.0
    expected[0, 0, 1] = 1 + 3.0 * 2 / 16
    expected[1, 3, 0] = 1 + 3.0
    assert torch.allclose(scale, expected)


def test_off_or_without_object_masks_the_loss_is_the_papers():
    assert FilmColorModule(**KWARGS).named_object_scale(_masks(), (4, 4)) is None
    weighted = FilmColorModule(named_object_weight=2.0, **KWARGS)
    assert weighted.named_object_scale({"l": torch.zeros(2, 1, 16, 16)}, (4, 4)) is None
    with pytest.raises(ValueError, match="named_object_weight"):
        FilmColorModule(named_object_weight=-1.0, **KWARGS)


def test_scale_multiplies_the_rebalanced_weights():
    module = FilmColorModule(**KWARGS | {"network": NETWORK | {"conditioning": "none"}})
    module.class_weights.copy_(torch.rand(625) + 0.5)
    logits, ab = torch.randn(2, 625, 4, 4), torch.rand(2, 2, 16, 16) * 120 - 60
    scale = torch.rand(2, 4, 4) + 1
    target = module.bins.encode_hard(F.interpolate(ab, size=(4, 4), mode="area"))
    ce = F.cross_entropy(logits, target, reduction="none")
    expected = (ce * module.class_weights[target] * scale).mean()
    assert torch.allclose(module.loss(logits, ab, scale), expected, atol=1e-5)
    assert torch.allclose(module.loss(logits, ab, torch.ones(2, 4, 4)), module.loss(logits, ab))


def test_training_step_weighs_the_named_objects_of_a_capshapes_batch():
    scenes = CapShapes(length=4, size=32, seed=0)
    items = [scenes[i] for i in range(4)]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("rgb", "masks", "mentioned")}
    batch["l"], batch["ab"] = rgb_to_l_ab(batch.pop("rgb"))
    batch["caption"] = [item["caption"] for item in items]
    assert batch["mentioned"].any()
    losses = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        module = FilmColorModule(named_object_weight=weight, **KWARGS)
        module.set_vocabulary(Vocabulary.build(batch["caption"]))
        module.log = lambda *args, **kwargs: None
        losses[weight] = module.training_step(batch, 0).detach()
    with torch.no_grad():
        h = module.caption_encoding(batch["caption"], 4)
        logits = module.network.decode(batch["l"], h)
        scale = module.named_object_scale(batch, logits.shape[2:])
        assert scale.max() > 1
        assert torch.allclose(losses[5.0], module.loss(logits, batch["ab"], scale), rtol=1e-5)
        assert torch.allclose(losses[0.0], module.loss(logits, batch["ab"]), rtol=1e-5)
    assert losses[5.0] > losses[0.0]
