import pytest
import torch
from torch import nn

from chromalab.bins import ABBins
from chromalab.color import normalize_l
from cic.networks import CICNetwork
from cic.weights import load_released
from tests.cic.components import tiny_network


def test_shapes_and_resolution():
    net = tiny_network(261)
    out = net(torch.rand(2, 1, 64, 48) * 100)
    assert out.shape == (2, 261, 16, 12)  # 1/4 of the input


def test_paper_widths():
    net = CICNetwork(num_classes=313, width=1.0)
    assert net.block_channels == [64, 128, 256, 512, 512, 512, 512, 256]
    # block 5 and 6 convolutions are dilated by 2, block 7 is not
    assert all(m.dilation == (2, 2) for m in net.blocks[4] if isinstance(m, nn.Conv2d))
    assert all(m.dilation == (1, 1) for m in net.blocks[6] if isinstance(m, nn.Conv2d))
    assert isinstance(net.blocks[7][0], nn.ConvTranspose2d)


def test_deep_supervision_outputs():
    net = tiny_network(25, deep_supervision=True)
    main, aux = net.forward_with_aux(torch.rand(1, 1, 32, 32) * 100)
    assert main.shape == (1, 25, 8, 8)
    assert aux["block6"].shape == aux["block7"].shape == (1, 25, 4, 4)


def test_bad_input():
    net = tiny_network(25)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\)"):
        net(torch.rand(1, 3, 32, 32))


# --------------------------------------------------------------------------- released weights
def release_like_model(width: float = 0.125, classes: int = 313) -> nn.Module:
    """An independent build of the release's module layout, from the facts in cic.weights."""

    def c(n):
        return max(8, int(round(n * width)))

    def block(c_in, c_out, n, stride=1, dil=1):
        layers = []
        for i in range(n):
            s = stride if i == n - 1 else 1
            layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, s, dil, dil), nn.ReLU(True)]
        return nn.Sequential(*layers, nn.BatchNorm2d(c_out))

    class Release(nn.Module):
        def __init__(self):
            super().__init__()
            self.model1 = block(1, c(64), 2, 2)
            self.model2 = block(c(64), c(128), 2, 2)
            self.model3 = block(c(128), c(256), 3, 2)
            self.model4 = block(c(256), c(512), 3)
            self.model5 = block(c(512), c(512), 3, 1, 2)
            self.model6 = block(c(512), c(512), 3, 1, 2)
            self.model7 = block(c(512), c(512), 3)
            self.model8 = nn.Sequential(
                nn.ConvTranspose2d(c(512), c(256), 4, 2, 1), nn.ReLU(True),
                nn.Conv2d(c(256), c(256), 3, 1, 1), nn.ReLU(True),
                nn.Conv2d(c(256), c(256), 3, 1, 1), nn.ReLU(True),
                nn.Conv2d(c(256), classes, 1),
            )  # fmt: skip
            self.model_out = nn.Conv2d(classes, 2, 1, bias=False)

        def forward(self, l):
            x = (l - 50) / 100
            for i in range(1, 9):
                x = getattr(self, f"model{i}")(x)
            return x

    model = Release()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        centers = ABBins.gamut().centers
        pts = torch.cat([centers, centers[: classes - len(centers)] + 5])[:classes]
        model.model_out.weight.copy_((pts.T / 110)[:, :, None, None])
    return model.eval()


def test_load_released_matches_the_release_forward(tmp_path):
    release = release_like_model()
    path = tmp_path / "colorization_release_v2-test.pth"
    torch.save(release.state_dict(), path)
    net, bins = load_released(path)
    assert bins.num_bins == 313
    expected_centers = release.model_out.weight[:, :, 0, 0].T * 110
    assert torch.allclose(bins.centers, expected_centers, atol=1e-4)  # class order kept
    l = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.allclose(net(l), release(l), atol=1e-5)
    assert torch.allclose(normalize_l(torch.tensor(50.0)), torch.tensor(0.0))


def test_load_released_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_released(tmp_path / "missing.pth")
    state = release_like_model().state_dict()
    del state["model3.4.weight"]
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(ValueError, match="model3.4.weight"):
        load_released(tmp_path / "a.pth")
    state = release_like_model().state_dict()
    state["model8.6.weight"] = torch.zeros(313, 7, 1, 1)
    torch.save(state, tmp_path / "b.pth")
    with pytest.raises(ValueError, match="model8.6.weight.*shape"):
        load_released(tmp_path / "b.pth")
    state = release_like_model().state_dict()
    state["model_out.weight"] = torch.zeros(313, 2)
    torch.save(state, tmp_path / "c.pth")
    with pytest.raises(ValueError, match="model_out.weight"):
        load_released(tmp_path / "c.pth")


def test_hook_and_condition_channels():
    net = tiny_network(25, condition_channels=3)
    seen = []

    def concat(i, x):
        seen.append(i)
        return torch.cat([x, torch.ones(x.shape[0], 3, *x.shape[2:])], 1)

    assert net(torch.rand(2, 1, 32, 32) * 100, concat).shape == (2, 25, 8, 8)
    assert seen == list(range(8))
    plain = tiny_network(25)
    calls = []
    out = plain(torch.rand(1, 1, 32, 32) * 100, lambda i, x: calls.append(i) or x)
    assert out.shape == (1, 25, 8, 8) and calls == list(range(8))


def test_input_normalization():
    torch.manual_seed(0)
    # training mode: BatchNorm uses the batch's statistics (an untrained network's running
    # statistics would flatten every output)
    paper = tiny_network(25)
    image = tiny_network(25, input_normalization="image")
    image.load_state_dict(paper.state_dict())
    l = torch.rand(2, 1, 32, 32) * 40 + 30
    brighter = l * 0.8 + 15
    with torch.no_grad():
        # per-image standardization: a uniformly brighter, flatter image gives the same scores
        assert torch.allclose(image(brighter), image(l), atol=1e-4)
        # CIC's (L - 50) / 100 sees the difference
        assert not torch.allclose(paper(brighter), paper(l), atol=1e-2)
        # "image" is "paper" fed with standardized lightness mapped back to L units
        standardized = 50 + 100 * (l - l.mean((2, 3), keepdim=True)) / l.std((2, 3), keepdim=True)
        assert torch.allclose(image(l), paper(standardized), atol=1e-4)
    with pytest.raises(ValueError, match="input_normalization"):
        tiny_network(25, input_normalization="batch")


def test_the_colorizer_runs_channels_last_with_the_same_colours():
    from cic.colorizer import CICColorizer

    torch.manual_seed(0)
    bins = ABBins.gamut()
    network = CICNetwork(width=0.125, num_classes=bins.num_bins)
    l = torch.rand(2, 1, 32, 32) * 100
    plain = CICColorizer(network, bins, 0.38, channels_last=False).colorize(l)
    fast = CICColorizer(network, bins, 0.38)
    assert next(fast.network.parameters()).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.colorize(l), plain, atol=1e-4, rtol=1e-4)
