"""film_color building blocks: vocabulary, caption encoder, FiLM (Eq. 2-3), CONCAT (Eq. 1),
and initialisation from CIC weights (§3.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chromalab.bins import ABBins
from cic.networks import CICNetwork
from film_color.language import PAD, UNK, CaptionEncoder, Vocabulary, tokenize
from film_color.networks import FiLM, FilmColorNetwork, RelativeMaps, coordinate_maps
from film_color.weights import (
    init_from_cic,
    load_cic_state,
    load_film_network,
    transfer_cic_weights,
)
from tests.film_color.components import tiny_module, tiny_network


# --------------------------------------------------------------------------- vocabulary
class TestVocabulary:
    def test_tokenize(self):
        assert tokenize("A Red-haired man's  CAR, parked.") == [
            "a",
            "red",
            "haired",
            "man's",
            "car",
            "parked",
        ]
        assert tokenize("...") == []
        with pytest.raises(TypeError, match="str"):
            tokenize(None)

    def test_build_counts_and_order(self):
        vocab = Vocabulary.build(["a red car", "A blue car", "a red bus"], min_count=2)
        # counts: a 3, car 2, red 2, blue 1, bus 1 -> kept: a, car, red (ties alphabetical)
        assert vocab.tokens == [PAD, UNK, "a", "car", "red"]
        assert vocab.index("blue") == vocab.unk_id == 1
        assert Vocabulary.build(["b a", "a"], max_size=1).tokens == [PAD, UNK, "a"]

    def test_encode_pads_and_marks_unknown(self):
        vocab = Vocabulary.build(["a red car"])
        tokens, lengths = vocab.encode(["red car", "a green red car", "!!"])
        ids = {w: vocab.index(w) for w in ("a", "red", "car")}
        assert tokens.tolist() == [
            [ids["red"], ids["car"], 0, 0],
            [ids["a"], 1, ids["red"], ids["car"]],
            [1, 0, 0, 0],  # a caption without words is one <unk>
        ]
        assert lengths.tolist() == [2, 4, 1]
        short, short_lengths = vocab.encode(["a green red car"], max_length=2)
        assert short.tolist() == [[ids["a"], 1]] and short_lengths.tolist() == [2]

    def test_round_trip_and_errors(self):
        vocab = Vocabulary.build(["x y z"])
        assert Vocabulary(vocab.to_list()) == vocab
        with pytest.raises(ValueError, match="starts with"):
            Vocabulary(["x", PAD, UNK])
        with pytest.raises(ValueError, match="duplicate"):
            Vocabulary([PAD, UNK, "x", "x"])
        with pytest.raises(TypeError, match="sequence"):
            vocab.encode("x y")


# --------------------------------------------------------------------------- caption encoder
class TestCaptionEncoder:
    def test_padding_invariance(self):
        torch.manual_seed(0)
        encoder = CaptionEncoder(10, embedding_dim=6, hidden_size=5).eval()
        caption = torch.tensor([3, 7, 2])
        alone = encoder(caption[None], torch.tensor([3]))
        padded = torch.zeros(2, 8, dtype=torch.long)
        padded[0, :3] = caption
        padded[1, :8] = torch.arange(1, 9)
        batch = encoder(padded, torch.tensor([3, 8]))
        assert alone.shape == (1, 10)
        assert torch.allclose(batch[0], alone[0], atol=1e-6)

    def test_last_states_of_both_directions(self):
        torch.manual_seed(0)
        encoder = CaptionEncoder(10, embedding_dim=4, hidden_size=3).eval()
        tokens = torch.tensor([[4, 5, 6, 0, 0]])
        h = encoder(tokens, torch.tensor([3]))
        # reference: run the same LSTM weights step by step, forward and backward
        x = encoder.embedding(tokens[0, :3])
        lstm = encoder.lstm

        def run(seq, suffix):
            w_ih, w_hh = (
                getattr(lstm, f"weight_ih_l0{suffix}"),
                getattr(lstm, f"weight_hh_l0{suffix}"),
            )
            b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
            hs, cs = torch.zeros(3), torch.zeros(3)
            for xt in seq:
                i, f, g, o = (w_ih @ xt + w_hh @ hs + b).chunk(4)
                cs = torch.sigmoid(f) * cs + torch.sigmoid(i) * torch.tanh(g)
                hs = torch.sigmoid(o) * torch.tanh(cs)
            return hs

        expected = torch.cat([run(x, ""), run(x.flip(0), "_reverse")])
        assert torch.allclose(h[0], expected, atol=1e-5)

    def test_deferred_vocabulary_and_errors(self):
        encoder = CaptionEncoder(None, embedding_dim=4, hidden_size=3)
        with pytest.raises(RuntimeError, match="vocabulary"):
            encoder(torch.zeros(1, 2, dtype=torch.long), torch.tensor([2]))
        encoder.set_vocab_size(5)
        assert encoder.vocab_size == 5
        with pytest.raises(ValueError, match="token ids"):
            encoder(torch.tensor([[7]]), torch.tensor([1]))
        with pytest.raises(ValueError, match="lengths"):
            encoder(torch.tensor([[1, 2]]), torch.tensor([3]))


# --------------------------------------------------------------------------- FiLM and CONCAT
def test_film_matches_equation_3():
    torch.manual_seed(0)
    film = FiLM(condition_dim=4, channels=3)
    nn.init.normal_(film.gamma.weight)
    nn.init.normal_(film.beta.weight)
    z, h = torch.randn(2, 3, 5, 4), torch.randn(2, 4)
    out = film(z, h)
    w_gamma, w_beta = film.gamma.weight, film.beta.weight  # (C, D)
    expected = torch.empty_like(z)
    for b in range(2):
        gamma, beta = w_gamma @ h[b], w_beta @ h[b]  # Eq. 2
        for i in range(5):
            for j in range(4):
                expected[b, :, i, j] = (1 + gamma) * z[b, :, i, j] + beta  # Eq. 3
    assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(2, 5, 5, 4\)"):
        film(torch.randn(2, 5, 5, 4), h)


def test_film_starts_as_identity_and_conditions_every_block():
    net = tiny_network("film")
    plain = CICNetwork(625, 0.125)
    plain.load_state_dict(net.fcnn.state_dict())
    net.eval(), plain.eval()
    l = torch.rand(2, 1, 32, 32) * 100
    tokens, lengths = torch.tensor([[2, 3], [4, 0]]), torch.tensor([2, 1])
    with torch.no_grad():
        assert torch.allclose(net(l, tokens, lengths), plain(l), atol=1e-6)
        for film in net.film:
            nn.init.normal_(film.beta.weight)
        out = net(l, tokens, lengths)
    assert out.shape == (2, 625, 8, 8)
    assert len(net.film) == 8
    assert [f.gamma.out_features for f in net.film] == net.block_channels


def test_captions_change_the_output():
    torch.manual_seed(0)
    net = tiny_network("film")
    for film in net.film:
        nn.init.normal_(film.gamma.weight, std=0.5)
    net.eval()
    l = (torch.rand(1, 1, 32, 32) * 100).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = net(l, torch.tensor([[2], [5]]), torch.tensor([1, 1]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_concat_shapes_and_equation_1():
    net = tiny_network("concat")
    c = net.block_channels
    first_inputs = [net.fcnn.blocks[i][0].weight for i in range(8)]
    assert first_inputs[0].shape[1] == 1  # block 1 sees L only
    for i in range(1, 7):
        assert first_inputs[i].shape[1] == c[i - 1] + 6  # Conv2d: (out, in, k, k)
    assert first_inputs[7].shape[0] == c[6] + 6  # ConvTranspose2d: (in, out, k, k)
    assert net.fcnn.readout.weight.shape == (625, c[7] + 6, 1, 1)
    l = torch.rand(2, 1, 32, 32) * 100
    tokens, lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    feats = net.features(l, tokens, lengths)
    h = net.encode_caption(tokens, lengths)
    for n, z in enumerate(feats):
        assert z.shape[1] == c[n] + 6
        # Eq. 1: the last dim(h) channels are h at every location
        assert torch.equal(z[:, c[n] :], h[:, :, None, None].expand(-1, -1, *z.shape[2:]))
    assert net(l, tokens, lengths).shape == (2, 625, 8, 8)


def test_parameter_counts():
    count = {
        m: sum(p.numel() for p in tiny_network(m, vocab_size=10).parameters())
        for m in ("none", "concat", "film")
    }
    lstm = 10 * 4 + 2 * 4 * 3 * (4 + 3 + 2)  # embedding + 2 directions of (W_ih, W_hh, 2 biases)
    film_extra = 2 * 6 * sum(CICNetwork(625, 0.125).block_channels)  # W_gamma, W_beta per block
    assert count["none"] == sum(p.numel() for p in CICNetwork(625, 0.125).parameters())
    assert count["film"] == count["none"] + lstm + film_extra
    assert count["concat"] > count["none"] + lstm


def test_coordinate_maps_hold_the_cell_centres():
    maps = coordinate_maps(torch.zeros(3, 5, 2, 4, dtype=torch.float64))
    assert maps.shape == (3, 2, 2, 4) and maps.dtype == torch.float64
    xs = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64)
    assert torch.equal(maps[1, 0], xs.expand(2, 4))  # x grows to the right, same on every row
    assert torch.equal(maps[2, 1], torch.tensor([[-0.5], [0.5]], dtype=torch.float64).expand(2, 4))


def test_relative_maps_measure_from_the_attention_centroid():
    maps = RelativeMaps(channels=3, maps=2)
    z = torch.zeros(2, 3, 4, 6)
    # zero attention is uniform: the centroid is the centre and the maps are plain x and y
    assert torch.allclose(maps(z), coordinate_maps(z).repeat(1, 2, 1, 1), atol=1e-6)
    # map 0 attends to channel 0, map 1 to channel 1 (sharply)
    maps.attention.weight.data[:, :2, 0, 0] = 60.0 * torch.eye(2)
    z[0, 0, 1, 0] = z[0, 0, 1, 4] = 1.0  # two cells on row 1: x = -5/6 and +1/2
    z[1, 1, 3, 5] = 1.0  # one cell: x = 5/6, y = 3/4
    out = maps(z)
    grid = coordinate_maps(z)
    centroids = {(0, 0): (-1 / 6, -1 / 4), (1, 1): (5 / 6, 3 / 4)}
    for (b, k), (cx, cy) in centroids.items():
        assert torch.allclose(out[b, 2 * k], grid[b, 0] - cx, atol=1e-5)
        assert torch.allclose(out[b, 2 * k + 1], grid[b, 1] - cy, atol=1e-5)
    # the left cell of the pair lies left of their centroid, the right one right of it
    assert out[0, 0, 1, 0] < 0 < out[0, 0, 1, 4]
    with pytest.raises(ValueError, match="maps"):
        RelativeMaps(3, 0)


def test_relative_maps_widen_every_block_and_continue_a_model_without_them_exactly():
    torch.manual_seed(0)
    source = _randomized(tiny_network("film")).eval()
    net = tiny_network("film", relative_maps=2)
    c = net.block_channels
    assert net.fcnn.readout.weight.shape == (625, c[7] + 4, 1, 1)
    report = load_film_network(net, source.state_dict(), ABBins.grid(25, 10.0))
    assert len(report.widened) == 8
    assert all(torch.count_nonzero(m.attention.weight) == 0 for m in net.relative)
    net.eval()
    l = torch.rand(2, 1, 32, 32) * 100
    tokens, lengths = torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 2])
    with torch.no_grad():
        assert torch.equal(net(l, tokens, lengths), source(l, tokens, lengths))
        feats = net.features(l, tokens, lengths)
    for n, z in enumerate(feats):  # image channels, then x/y relative to each centroid
        assert z.shape[1] == c[n] + 4
        assert torch.allclose(z[:, -4:], coordinate_maps(z).repeat(1, 2, 1, 1), atol=1e-6)
    # once the readout uses the maps, the attentions that place the centroids learn
    net.fcnn.readout.weight.data[:, -4:].normal_()
    net(l, tokens, lengths).logsumexp(1).mean().backward()
    assert net.relative[7].attention.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="relative_maps"):
        tiny_network("film", relative_maps=-1)


def test_unknown_conditioning():
    with pytest.raises(ValueError, match="conditioning"):
        FilmColorNetwork(conditioning="add")


# --------------------------------------------------------------------------- CIC initialisation
def _randomized(net: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net


def test_init_from_released_state_dict(tmp_path):
    from tests.cic.test_networks_weights import release_like_model

    path = tmp_path / "colorization_release_v2-test.pth"
    release = _randomized(release_like_model(width=0.125))
    torch.save(release.state_dict(), path)
    for mode, extra in (("film", 0), ("concat", 6)):
        net = tiny_network(mode)
        readout_before = net.fcnn.readout.weight.clone()
        report = init_from_cic(net.fcnn, path, ABBins.grid(25, 10.0))
        assert "readout.weight" in report.skipped  # 313 release classes vs 625
        assert torch.equal(net.fcnn.readout.weight, readout_before)
        assert torch.equal(net.fcnn.blocks[0][0].weight, release.model1[0].weight)
        assert torch.equal(net.fcnn.blocks[5][6].running_var, release.model6[6].running_var)
        block3 = net.fcnn.blocks[2][0].weight  # (out, in + extra, 3, 3)
        source = release.model3[0].weight
        assert torch.equal(block3[:, : source.shape[1]], source)
        assert torch.count_nonzero(block3[:, source.shape[1] :]) == 0
        assert block3.shape[1] == source.shape[1] + extra
        up = net.fcnn.blocks[7][0].weight  # ConvTranspose2d: inputs on dim 0
        assert torch.equal(up[: release.model8[0].weight.shape[0]], release.model8[0].weight)
        assert torch.count_nonzero(up[release.model8[0].weight.shape[0] :]) == 0
        assert (len(report.widened) > 0) == (mode == "concat")


def test_concat_init_reproduces_the_source_features(tmp_path):
    source = _randomized(CICNetwork(625, 0.125)).eval()
    state, centers = source.state_dict(), ABBins.grid(25, 10.0).centers
    net = tiny_network("concat")
    report = transfer_cic_weights(net.fcnn, state, centers, ABBins.grid(25, 10.0))
    assert "readout.weight" in report.widened  # same 625-grid: the readout is kept too
    net.eval()
    l = torch.rand(2, 1, 32, 32) * 100
    tokens, lengths = torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 2])
    with torch.no_grad():
        # zero weights on the language channels: the widened net computes the source's scores
        assert torch.allclose(net(l, tokens, lengths), source(l), atol=1e-4)


def test_init_from_cic_checkpoint(tmp_path):
    from tests.cic.test_cli import fit_tiny

    ckpt = fit_tiny(tmp_path / "cic", "--model.bins", "grid")
    state, centers = load_cic_state(ckpt)
    assert torch.allclose(centers, ABBins.grid(25, 10.0).centers)
    net = tiny_network("film")
    report = init_from_cic(net.fcnn, ckpt, ABBins.grid(25, 10.0))
    assert not report.skipped  # same bins: everything copied, the readout included
    full = torch.load(ckpt, weights_only=True)["state_dict"]
    for key, value in net.fcnn.state_dict().items():
        assert torch.equal(value, full[f"network.{key}"]), key


def test_init_errors(tmp_path):
    grid = ABBins.grid(25, 10.0)
    net = FilmColorNetwork(conditioning="none", width=0.25)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        init_from_cic(net.fcnn, tmp_path / "missing.pth", grid)
    state = CICNetwork(625, 0.125).state_dict()
    with pytest.raises(ValueError, match=r"blocks\.0\.0\.weight.*shape"):
        transfer_cic_weights(net.fcnn, state, None, grid)
    del state["blocks.3.0.weight"]
    with pytest.raises(ValueError, match=r"blocks\.3\.0\.weight"):
        transfer_cic_weights(tiny_network("none").fcnn, state, None, grid)
    torch.save({"something": torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="neither"):
        init_from_cic(net.fcnn, tmp_path / "odd.pth", grid)


# --------------------------------------------------------------------------- vocabulary sources
def test_training_captions_from_records_and_items(tmp_path):
    from pathlib import Path

    from chromalab.data import CaptionedImageDataset, CaptionRecord
    from film_color.module import training_captions

    records = [
        CaptionRecord(Path(tmp_path / "a.jpg"), ("a red car", "a car that is red")),
        CaptionRecord(Path(tmp_path / "b.jpg"), ("a blue bus",)),
    ]
    dataset = CaptionedImageDataset(records, image_size=32, train=True)
    # every caption of every image, without opening the (missing) image files
    assert list(training_captions(dataset, limit=1)) == [
        "a red car",
        "a car that is red",
        "a blue bus",
    ]
    items = [None, {"caption": "x y"}, {"caption": "z"}, {"caption": "w"}]
    assert list(training_captions(items, limit=3)) == ["x y", "z"]
    assert list(training_captions([{"rgb": 0}, {"caption": "never read"}], limit=5)) == []


# --------------------------------------------------------------------------- optimizer
def test_relative_lr_scale_gives_the_attentions_their_own_decaying_rate():
    from film_color.module import FilmColorModule

    decay = {"lr": 1e-3, "step_size": 2, "gamma": 0.5}
    relative = tiny_module(network={"relative_maps": 2}, relative_lr_scale=10.0, optimizer=decay)
    config = relative.configure_optimizers()
    rest, attention = config["optimizer"].param_groups
    assert {id(p) for p in attention["params"]} == {
        id(m.attention.weight) for m in relative.network.relative
    }
    assert not {id(p) for p in attention["params"]} & {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(attention["params"]) == len(list(relative.parameters()))
    assert (rest["lr"], attention["lr"]) == pytest.approx((1e-3, 1e-2))
    for _ in range(2):
        config["optimizer"].step()
        config["lr_scheduler"]["scheduler"].step()
    assert (rest["lr"], attention["lr"]) == pytest.approx((5e-4, 5e-3))  # both decay
    # scale 1 (the default), or no relative maps: one group at lr
    for module in (tiny_module(network={"relative_maps": 2}), tiny_module(relative_lr_scale=10.0)):
        (group,) = module.configure_optimizers()["optimizer"].param_groups
        assert group["lr"] == 1e-3 and len(group["params"]) == len(list(module.parameters()))
    with pytest.raises(ValueError, match="relative_lr_scale"):
        FilmColorModule(relative_lr_scale=0.0)
