"""Channel-extended convolutions (L-CAD §3.3, Eq. 5) on a diffusers UNet."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcad.cec import ChannelExtendedConv2d, LuminancePyramid, LuminanceUNet
from tests.lcad.components import tiny_unet


def _inputs(b: int = 2, h: int = 8, w: int = 12):
    torch.manual_seed(5)
    return (
        torch.randn(b, 4, h, w),
        torch.tensor([10, 700][:b]),
        torch.randn(b, 5, 12),
        torch.randn(b, 6, h, w),  # luminance features at the latent's resolution
    )


def test_cec_is_eq_5_one_convolution_over_the_extended_channels():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    cec = ChannelExtendedConv2d(conv, 6)
    nn.init.normal_(cec.extension.weight)
    f, y = torch.randn(2, 8, 10, 14), torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        cec.luminance = LuminancePyramid(y)
        ours = cec(f)
        resized = F.interpolate(y, size=(10, 14), mode="bilinear")
        weight = torch.cat((conv.weight, cec.extension.weight), dim=1)  # [W_fix, W_ext]
        eq5 = F.conv2d(torch.cat((f, resized), dim=1), weight, conv.bias, padding=1)
    torch.testing.assert_close(ours, eq5, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cec", ["all_down", "first"])
def test_the_untrained_model_is_the_pretrained_unet_exactly(cec):
    unet = tiny_unet()
    x, t, text, lum = _inputs()
    with torch.no_grad():
        expected = unet(x, t, text).sample
        model = LuminanceUNet(unet, luminance_channels=6, cec=cec)
        with model.luminance(lum):
            got = model(x, t, text)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("cec", "count"), [("all_down", 2), ("first", 1)])
def test_the_luminance_reaches_the_output_through_every_extension(cec, count):
    model = LuminanceUNet(tiny_unet(), luminance_channels=6, cec=cec)
    convs = list(model.extended())
    assert len(convs) == count
    x, t, text, lum = _inputs()
    for conv in convs:
        nn.init.normal_(conv.extension.weight, std=0.1)
    with model.luminance(lum):
        out = model(x, t, text)
    out.square().mean().backward()
    for conv in convs:
        assert conv.extension.weight.grad.abs().sum() > 0
    with torch.no_grad(), model.luminance(lum * 0):
        assert not torch.allclose(model(x, t, text), out)


def test_without_slr_the_unet_reads_no_luminance():
    unet = tiny_unet()
    x, t, text, lum = _inputs()
    with torch.no_grad():
        expected = unet(x, t, text).sample
        model = LuminanceUNet(unet, luminance_channels=6, cec="none")
        assert not list(model.extended())
        with model.luminance(lum):
            got = model(x, t, text)
        with model.luminance(torch.randn_like(lum)):
            other = model(x, t, text)
    assert torch.equal(got, expected) and torch.equal(other, expected)
    with pytest.raises(ValueError, match="cec must be"):
        LuminanceUNet(tiny_unet(), luminance_channels=6, cec="all")


def test_luminance_is_held_only_inside_its_block_and_follows_cfg_batches():
    model = LuminanceUNet(tiny_unet(), luminance_channels=6)
    x, t, text, lum = _inputs(b=1)
    for conv in model.extended():
        nn.init.normal_(conv.extension.weight, std=0.1)
    with torch.no_grad():
        with model.luminance(lum):
            single = model(x, t, text)
            doubled = model(torch.cat((x, x)), torch.cat((t, t)), torch.cat((text, text)))
        torch.testing.assert_close(doubled, torch.cat((single, single)))
        with pytest.raises(RuntimeError, match="needs luminance features"):
            model(x, t, text)


def test_pyramid_resizes_each_resolution_once():
    y = torch.randn(1, 3, 8, 8)
    pyramid = LuminancePyramid(y)
    a = pyramid.at((4, 4), 1)
    torch.testing.assert_close(a, F.avg_pool2d(y, 2))  # area averaging
    assert pyramid.at((4, 4), 1) is a
    with pytest.raises(ValueError, match="a batch of 3"):
        LuminancePyramid(torch.randn(2, 3, 8, 8)).at((4, 4), 3)


def _convolutions(unet: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in unet.named_modules() if isinstance(m, nn.Conv2d)
            and not n.endswith(".extension")}  # fmt: skip


@pytest.mark.parametrize("cec", ["all_down", "first", "none"])
def test_exactly_the_documented_convolutions_are_extended(cec):
    """Fig. 2b ("all_down"): the first convolution of every ResNet block of every down block,
    nothing else; "first" (the release): only the UNet's input convolution, which then reads the
    4 latent channels plus N_ext; "none": none. Every other convolution is the pretrained one."""
    pretrained = _convolutions(tiny_unet())
    conv1 = {n for n in pretrained if re.fullmatch(r"down_blocks\.\d+\.resnets\.\d+\.conv1", n)}
    assert len(conv1) == 2 and len(pretrained) > 10  # one per down block here, among many
    expected = {"all_down": conv1, "first": {"conv_in"}, "none": set()}[cec]
    model = LuminanceUNet(tiny_unet(), luminance_channels=6, cec=cec)
    convs = _convolutions(model.unet)
    assert convs.keys() == pretrained.keys()
    extended = {n for n, m in convs.items() if isinstance(m, ChannelExtendedConv2d)}
    assert extended == expected
    for name, conv in convs.items():
        assert torch.equal(conv.weight, pretrained[name].weight), name  # W_fix as pretrained
        if name in extended:  # W_ext: N_ext more input channels, the same kernel
            assert conv.extension.weight.shape == (conv.out_channels, 6, *conv.kernel_size)
    if cec == "first":
        assert convs["conv_in"].in_channels + convs["conv_in"].extension.in_channels == 4 + 6


def test_an_extended_convolution_keeps_the_pretrained_ones_geometry_dtype_and_device():
    """Stride, padding (and its mode), dilation, bias or none, dtype and device of the pretrained
    convolution; the extension reads the resized features with the same geometry (Eq. 5)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, bias=False,
                     padding_mode="reflect", dtype=torch.float64)  # fmt: skip
    cec = ChannelExtendedConv2d(conv, 6)
    assert cec.bias is None and cec.padding_mode == "reflect" and cec.weight.dtype == torch.float64
    nn.init.normal_(cec.extension.weight)
    f, y = torch.randn(2, 8, 10, 14, dtype=torch.float64), torch.randn(2, 6, 5, 7)  # float32
    with torch.no_grad():
        cec.luminance = LuminancePyramid(y)
        resized = F.interpolate(y, size=(10, 14), mode="bilinear").double()
        ext = F.conv2d(resized, cec.extension.weight, stride=2, padding=2, dilation=2)
        torch.testing.assert_close(cec(f), conv(f) + ext)
    meta = ChannelExtendedConv2d(nn.Conv2d(8, 16, 3, device="meta"), 6)
    assert meta.weight.device.type == meta.extension.weight.device.type == "meta"
    with pytest.raises(RuntimeError, match=re.escape(
        "a channel-extended convolution needs luminance features: call the UNet inside "
        "LuminanceUNet.luminance(features)"
    )):  # fmt: skip
        ChannelExtendedConv2d(nn.Conv2d(8, 16, 3), 6)(f.float())


def test_the_pyramid_averages_where_both_sides_shrink_and_interpolates_otherwise():
    torch.manual_seed(0)
    square, wide = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4, 16)
    pyramid = LuminancePyramid(square)
    assert pyramid.at((8, 8), 1) is square  # its own size: as given
    for size in ((8, 3), (3, 8)):  # one side kept, the other shrunk: area averaging
        torch.testing.assert_close(pyramid.at(size, 1), F.interpolate(square, size, mode="area"))
    torch.testing.assert_close(
        LuminancePyramid(wide).at((8, 4), 1), F.interpolate(wide, (8, 4), mode="bilinear")
    )
    with pytest.raises(ValueError, match=re.escape("a batch of 3 for luminance features of 2")):
        LuminancePyramid(torch.randn(2, 5, 8, 8)).at((4, 4), 3)
    with pytest.raises(ValueError, match=re.escape("(B, C, h, w), got (3, 8, 8)")):
        LuminancePyramid(torch.randn(3, 8, 8))


def test_the_model_saves_and_loads_with_its_unet_configuration(tmp_path):
    """``save_pretrained``/``from_pretrained``: the UNet's configuration (no private keys), the
    luminance channels and ``cec`` travel in config.json, the weights give the same output; a
    model built from a configuration alone has that UNet."""
    model = LuminanceUNet(tiny_unet(), luminance_channels=6, cec="first")
    assert model.cec == "first"
    for conv in model.extended():
        nn.init.normal_(conv.extension.weight, std=0.1)
    model.save_pretrained(tmp_path)
    loaded = LuminanceUNet.from_pretrained(tmp_path)
    assert (loaded.cec, loaded.config.luminance_channels) == ("first", 6)
    unet_config = loaded.config.unet_config
    assert not any(k.startswith("_") for k in unet_config)
    assert list(unet_config["block_out_channels"]) == list(tiny_unet().config.block_out_channels)
    x, t, text, lum = _inputs()
    with torch.no_grad(), model.luminance(lum), loaded.luminance(lum):
        torch.testing.assert_close(loaded(x, t, text), model(x, t, text))
    rebuilt = LuminanceUNet(dict(tiny_unet().config), luminance_channels=6, cec="first")
    assert sum(p.numel() for p in rebuilt.unet.parameters()) == sum(
        p.numel() for p in model.unet.parameters()
    )


def test_the_unets_own_options_reach_it():
    """Keyword arguments go to the diffusers UNet (here a mask hiding caption tokens)."""
    model = LuminanceUNet(tiny_unet(), luminance_channels=6)
    x, t, text, lum = _inputs()
    hidden = torch.tensor([[1, 1, 0, 0, 0]] * 2)
    with torch.no_grad(), model.luminance(lum):
        plain = model(x, t, text)
        masked = model(x, t, text, encoder_attention_mask=hidden)
    assert not torch.allclose(plain, masked, atol=1e-4)
