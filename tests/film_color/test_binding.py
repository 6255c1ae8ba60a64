"""The auxiliary caption-binding loss: targets read from CapShapes captions, the readout, and
its place in training."""

from __future__ import annotations

import pytest
import torch

from chromalab.data import CapShapes
from chromalab.data.capshapes import SHAPES
from chromalab.text import COLOR_LEXICON
from film_color.binding import BINDING_SLOTS, COLOURS, binding_targets
from film_color.language import Vocabulary
from film_color.module import FilmColorModule

OWN, FIRST, SECOND = range(len(BINDING_SLOTS))


def target(captions, noun, slot):
    return [
        COLOURS[c] if c >= 0 else None
        for c in binding_targets(captions)[:, SHAPES.index(noun), slot]
    ]


def test_targets_follow_both_caption_grammars():
    captions = [
        "the left circle is red and the right circle is blue, and the heart is pink",
        "a green star at the top, an orange star at the bottom and a yellow drop",
        "The Square Is Cyan",
        "two circles and a heart on a striped red background",
        "a red bus parked next to a blue car",
    ]
    assert target(captions, "circle", FIRST) == ["red", None, None, None, None]
    assert target(captions, "circle", SECOND) == ["blue", None, None, None, None]
    assert target(captions, "heart", OWN) == ["pink", None, None, None, None]
    assert target(captions, "star", FIRST) == [None, "green", None, None, None]
    assert target(captions, "star", SECOND) == [None, "orange", None, None, None]
    assert target(captions, "drop", OWN) == [None, "yellow", None, None, None]
    assert target(captions, "square", OWN) == [None, None, "cyan", None, None]
    targets = binding_targets(captions)
    assert targets.shape == (5, len(SHAPES), len(BINDING_SLOTS))
    # the background's colour, colourless captions and other words give nothing
    assert int((targets >= 0).sum()) == 3 + 3 + 1
    assert bool((targets[3:] == -1).all())


def test_targets_name_every_coloured_object_of_generated_scenes():
    scenes = CapShapes(
        length=300,
        size=16,
        seed=5,
        min_objects=2,
        shared_noun_prob=0.5,
        level_probs=(0.5, 0.5, 0.0),
    )
    pairs = 0
    for i in range(len(scenes)):
        item = scenes[i]
        targets = binding_targets([item["caption"]])[0]
        shapes, colours = item["shape_ids"].tolist(), item["color_ids"].tolist()
        named = [k for k, s in enumerate(shapes) if s >= 0 and bool(item["mentioned"][k])]
        assert int((targets >= 0).sum()) == len(named), item["caption"]
        for k in named:
            word = COLOURS.index(COLOR_LEXICON[colours[k]].name)
            if shapes.count(shapes[k]) == 1:
                assert int(targets[shapes[k], OWN]) == word, item["caption"]
            else:
                pairs += 1
                assert word in targets[shapes[k], FIRST:].tolist(), item["caption"]
    assert pairs > 100


KWARGS = dict(width=0.125, embedding_dim=8, hidden_size=8, lr=1e-2, channels_last=False)


def test_binding_loss_trains_the_encoder_through_its_readout():
    captions = [
        "the left circle is red and the right circle is blue",
        "the left circle is blue and the right circle is red",
        "a green star at the top and a pink star at the bottom",
        "a pink star at the top and a green star at the bottom",
    ]
    torch.manual_seed(0)
    module = FilmColorModule(binding_loss_weight=1.0, **KWARGS)
    module.set_vocabulary(Vocabulary.build(captions))
    tokens, lengths = module.encode_captions(captions, len(captions))
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in module.binding_readout.parameters()} <= trained
    assert len(trained) == len(list(module.parameters()))
    # the fresh readout learns at binding_lr_scale (10) times the rate of the rest
    readout = {id(p) for p in module.binding_readout.parameters()}
    rates = [g["lr"] for g in optimizer.param_groups if {id(p) for p in g["params"]} == readout]
    others = [g["lr"] for g in optimizer.param_groups if not readout & {id(p) for p in g["params"]}]
    assert rates == pytest.approx([0.1]) and others == pytest.approx([0.01] * len(others))

    def loss():
        return module.binding_loss(module.network.encode_caption(tokens, lengths), captions)

    first = loss()
    first.backward()
    encoder = module.network.caption_encoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.lstm.parameters())
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    # the pairs differ only in word order: the readout can tell them apart only through an
    # encoding that binds each colour to its position
    with torch.no_grad():
        h = module.network.encode_caption(tokens, lengths)
        guess = module.binding_readout(h).view(len(captions), len(SHAPES), len(BINDING_SLOTS), -1)
    said = binding_targets(captions) >= 0
    assert bool((guess.argmax(-1)[said] == binding_targets(captions)[said]).all())
    assert float(loss().detach()) < 0.1 * float(first.detach())


def test_binding_loss_is_zero_without_targets_and_checked():
    module = FilmColorModule(binding_loss_weight=0.5, **KWARGS)
    module.set_vocabulary(Vocabulary.build(["a red bus"]))
    h = module.network.encode_caption(*module.encode_captions(["a red bus"], 1))
    zero = module.binding_loss(h, ["a red bus"])
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    assert FilmColorModule(**KWARGS).binding_readout is None
    with pytest.raises(RuntimeError, match="binding_loss_weight"):
        FilmColorModule(**KWARGS).binding_loss(h, ["a red bus"])
    with pytest.raises(ValueError, match="caption encoder"):
        FilmColorModule(conditioning="none", binding_loss_weight=1.0, **KWARGS)
    with pytest.raises(ValueError, match="binding_loss_weight"):
        FilmColorModule(binding_loss_weight=-1.0, **KWARGS)
    with pytest.raises(ValueError, match="binding_lr_scale"):
        FilmColorModule(binding_loss_weight=1.0, binding_lr_scale=0.0, **KWARGS)


def test_training_step_adds_the_weighted_binding_loss():
    captions = ["the left circle is red and the right circle is blue", "a yellow heart"]
    torch.manual_seed(0)
    batch = {"l": torch.rand(2, 1, 32, 32) * 100, "ab": torch.randn(2, 2, 32, 32) * 20}
    batch["caption"] = captions
    losses = {}
    for weight in (0.0, 2.0):
        torch.manual_seed(1)
        module = FilmColorModule(binding_loss_weight=weight, **KWARGS)
        module.set_vocabulary(Vocabulary.build(captions))
        module.log = lambda *args, **kwargs: None
        losses[weight] = module.training_step(batch, 0)
        if weight:
            h = module.network.encode_caption(*module.encode_captions(captions, 2))
            binding = module.binding_loss(h, captions)
    # the same seed builds the same network: the colour loss is shared, the readout adds to it
    total, colour, binding = (float(x.detach()) for x in (losses[2.0], losses[0.0], binding))
    assert total == pytest.approx(colour + 2.0 * binding, rel=1e-5)
