"""A frozen pretrained text encoder is kept out of ``save_pretrained``'s ``model.safetensors``
and loaded from its package by ``from_pretrained``; loading stays strict for the rest."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lcoins.encoders import EMBEDDED_TEXT_ENCODER, TextEncoder, load_text_weights
from lcoins.module import LCoInsModule
from tests.lcoins.components import IMAGE_OPTIONS

NETWORK = {
    "image_encoder": "vit_tiny_patch16_224",
    "image_options": IMAGE_OPTIONS,
    "image_size": 32,
    "text_encoder": EMBEDDED_TEXT_ENCODER,
    "text_pretrained": True,
    "freeze_text_encoder": True,
    "max_caption_length": 16,
    "width": 16,
    "depth": 1,
    "heads": 2,
    "groups": 2,
    "counter_dim": 8,
}
TEXT = "network.text_encoder."


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    module = LCoInsModule(network=NETWORK)
    module.load_initial_weights()  # the pretrained MiniLM, as fit does
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.startswith(TEXT):
                p.add_(torch.randn_like(p) * 0.01)  # "trained"
    folder = tmp_path_factory.mktemp("weights") / "lcoins"
    module.save_pretrained(folder)
    return module, folder


def test_the_folder_holds_only_the_trained_tensors(saved):
    module, folder = saved
    tensors = load_file(folder / "model.safetensors")
    trained = {k for k in module.state_dict() if not k.startswith(TEXT)}
    assert tensors.keys() == trained and not any(k.startswith(TEXT) for k in tensors)
    assert any(k.startswith(TEXT) for k in module.state_dict())  # the text encoder exists


def test_loading_reads_the_text_encoder_from_its_package_and_the_rest_from_the_folder(saved):
    module, folder = saved
    loaded = LCoInsModule.from_pretrained(folder)
    reference = TextEncoder(EMBEDDED_TEXT_ENCODER, 16, frozen=True)
    load_text_weights(reference)
    theirs = loaded.state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(theirs[key], value), key
    for key, value in reference.state_dict().items():
        assert torch.equal(theirs[TEXT + key], value), key
    with torch.no_grad():
        l = torch.rand(2, 1, 32, 32) * 100
        captions = ["a red circle", "a blue square on the left"]
        expected = module.eval().colorize(l, captions)
        torch.testing.assert_close(loaded.colorize(l, captions), expected)


def test_a_folder_missing_a_trained_tensor_or_holding_the_text_encoder_is_an_error(saved, tmp_path):
    module, folder = saved
    tensors = load_file(folder / "model.safetensors")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    missing = "network.group_tokens"
    save_file({k: v for k, v in tensors.items() if k != missing}, broken / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"LCoInsModule: missing \['network\.group_tokens'\]"):
        LCoInsModule.from_pretrained(broken)
    text = {TEXT + k: v for k, v in module.network.text_encoder.state_dict().items()}
    save_file(tensors | text, broken / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"unexpected \['network\.text_encoder\."):
        LCoInsModule.from_pretrained(broken)


def test_a_trained_text_encoder_is_saved_with_the_rest(tmp_path):
    module = LCoInsModule(network=NETWORK | {"freeze_text_encoder": False})
    module.save_pretrained(tmp_path / "w")
    assert any(k.startswith(TEXT) for k in load_file(tmp_path / "w" / "model.safetensors"))
