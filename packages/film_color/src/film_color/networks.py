"""FCNN, CONCAT and FILM: Manjunatha, Iyyer, Boyd-Graber, Davis, "Learning to Color from
Language", NAACL 2018 (arXiv:1804.06026), §2.

* **FCNN** (§2.2): the 8-block colorization network of Zhang et al. (2016),
  :class:`cic.networks.CICNetwork`, predicting ``Q = 625`` classes (the 25x25 ab grid,
  :meth:`chromalab.bins.ABBins.grid`) at 1/4 of the input resolution. No language.
* **CONCAT** (Eq. 1): ``Z'_n[i, j] = [Z_n[i, j]; h]``: the caption vector ``h`` is tiled over
  every spatial location and concatenated to the output of each block ``n = 1..8``; the inputs
  of blocks 2-8 and of the readout are widened by ``dim(h)`` channels
  (``CICNetwork(condition_channels=dim(h))``).
* **FILM** (Eq. 2-3): ``gamma_n = W_gamma_n h``, ``beta_n = W_beta_n h`` and
  ``Z'_n = (1 + gamma_n) * Z_n + beta_n`` (per channel, broadcast over ``i, j``) on the output
  of every block. The projections have no bias, as written in Eq. 2. They start at zero, so an
  FCNN initialisation (§3.1) is reproduced exactly before fine-tuning moves them.

:meth:`FilmColorNetwork.conditioned_features` is the forward pass: block ``n`` computes ``Z_n``
from ``Z'_{n-1}`` and :meth:`FilmColorNetwork.condition` turns it into ``Z'_n``.

Beyond the paper, used by the published CapShapes model: **relative maps**
(``relative_maps=K``). FiLM's ``gamma`` and ``beta`` are the same at every location, so "the
left circle is red and the right circle is blue" cannot be bound to one of two circles by FiLM
alone. After every block, ``K`` learned attention maps over the block's conditioned output give
``K`` centroids, and ``2K`` channels holding each cell's ``x`` and ``y`` minus each centroid are
appended (:class:`RelativeMaps`). The attentions start at zero (uniform: the maps start as the
plain coordinates), and a model without the maps is continued exactly (the new input channels of
the next block start at zero, :func:`film_color.weights.load_film_network`).

``h`` is the caption encoding of :class:`film_color.language.CaptionEncoder` (§2.3). The image
network is CIC's own module, so its weights keep CIC's names (``fcnn.blocks.*``).

:class:`FilmNetworkConfig` is what builds a network (the ``network`` argument of
:class:`film_color.module.FilmColorModule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from cic.networks import INPUT_NORMALIZATIONS, CICNetwork, InputNormalization
from film_color.language import CaptionEncoder

__all__ = [
    "CONDITIONINGS",
    "GRID_SIZE",
    "GRID_STEP",
    "NUM_CLASSES",
    "Conditioning",
    "FiLM",
    "FilmColorNetwork",
    "FilmNetworkConfig",
    "RelativeMaps",
    "coordinate_maps",
    "tile",
]

Conditioning = Literal["none", "concat", "film"]
CONDITIONINGS: tuple[str, ...] = ("none", "concat", "film")
#: The quantized ab grid of §2.2: 25 x 25 bins of side 10 (:meth:`chromalab.bins.ABBins.grid`).
GRID_SIZE, GRID_STEP = 25, 10.0
NUM_CLASSES = GRID_SIZE**2


def coordinate_maps(z: Tensor) -> Tensor:
    """``(B, 2, H, W)`` maps of the cell centres' ``x`` and ``y`` in ``[-1, 1]`` for ``z``
    ``(B, C, H, W)``, in its dtype and on its device."""
    b, _, h, w = z.shape
    ys = (torch.arange(h, device=z.device, dtype=z.dtype) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=z.device, dtype=z.dtype) + 0.5) * (2.0 / w) - 1.0
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
    return grid.unsqueeze(0).expand(b, -1, -1, -1)


def tile(h: Tensor, z: Tensor) -> Tensor:
    """``h`` ``(B, D)`` repeated over the cells of ``z`` ``(B, C, H, W)``: ``(B, D, H, W)`` in
    ``z``'s dtype (the ``h`` of Eq. 1 at every ``[i, j]``)."""
    return h[:, :, None, None].expand(-1, -1, z.shape[2], z.shape[3]).to(z.dtype)


class RelativeMaps(nn.Module):
    """Coordinates relative to learned centroids of one block's output (not in the paper).

    ``K`` softmax attention maps over the cells, ``softmax_ij(W_k z)`` with a 1x1 convolution
    ``W_k``, give ``K`` centroids ``(x_k, y_k)``; the output holds ``x - x_k`` and ``y - y_k``
    at every cell, ``2K`` channels. When FiLM has made ``z`` respond to the objects a caption
    names, the centroid of two circles lies between them, and the sign of ``x - x_k`` tells the
    left circle from the right one, a relation that FiLM's location-free ``gamma``/``beta`` and
    absolute coordinates cannot express. ``W_k`` starts at zero: uniform attention, centroid at
    the centre, so the maps start as :func:`coordinate_maps`.

    Shapes: ``forward(z)``: ``(B, C, H, W)`` -> ``(B, 2K, H, W)``.
    """

    def __init__(self, channels: int, maps: int):
        super().__init__()
        if maps < 1:
            raise ValueError(f"maps must be >= 1, got {maps}")
        self.attention = nn.Conv2d(channels, maps, 1, bias=False)
        nn.init.zeros_(self.attention.weight)

    def forward(self, z: Tensor) -> Tensor:
        b, _, h, w = z.shape
        logits = self.attention(z).float().flatten(2)  # (B, K, HW)
        weights = logits.softmax(-1)
        grid = coordinate_maps(z[:1, :1].float()).flatten(2)[0]  # (2, HW)
        centroids = torch.einsum("bkn,cn->bkc", weights, grid)  # (B, K, 2)
        relative = grid.view(1, 1, 2, h * w) - centroids.unsqueeze(-1)
        return relative.view(b, -1, h, w).to(z.dtype)


class FiLM(nn.Module):
    """Feature-wise linear modulation of one block (Eq. 2-3).

    Args:
        condition_dim: size of ``h``.
        channels: channels ``C`` of the modulated feature map.

    Shapes:
        ``forward(z, h)``: ``z`` ``(B, C, H, W)``, ``h`` ``(B, condition_dim)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, condition_dim: int, channels: int):
        super().__init__()
        self.gamma = nn.Linear(condition_dim, channels, bias=False)
        self.beta = nn.Linear(condition_dim, channels, bias=False)
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def coefficients(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(gamma, beta)``, each ``(B, C)`` (Eq. 2)."""
        return self.gamma(h), self.beta(h)

    def forward(self, z: Tensor, h: Tensor) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.gamma.out_features or h.shape[0] != z.shape[0]:
            raise ValueError(
                f"FiLM expects z (B, {self.gamma.out_features}, H, W) and h (B, "
                f"{self.gamma.in_features}); got {tuple(z.shape)} and {tuple(h.shape)}"
            )
        gamma, beta = self.coefficients(h)
        return torch.addcmul(beta[:, :, None, None], 1.0 + gamma[:, :, None, None], z)


class FilmColorNetwork(nn.Module):
    """Language-conditioned colorization network: FCNN, CONCAT or FILM.

    Args (keyword only; :class:`FilmNetworkConfig` holds them but the last two):
        conditioning: ``"none"`` (FCNN), ``"concat"`` (Eq. 1) or ``"film"`` (Eq. 2-3).
        width: channel multiplier of the FCNN (1.0 = the paper's 64-...-512 widths).
        embedding_dim: word-vector size.
        hidden_size: LSTM state size per direction (``dim(h) = 2 * hidden_size``).
        relative_maps: ``K`` > 0 appends ``2K`` :class:`RelativeMaps` channels after every
            block (beyond the paper; see the module documentation).
        input_normalization: ``"paper"`` (CIC's ``(L - 50) / 100``) or ``"image"`` (each
            image standardized; beyond the paper), see :class:`cic.networks.CICNetwork`.
        vocab_size: number of token ids of the caption vocabulary, or ``None`` to defer the
            word embedding until it is known (:meth:`set_vocab_size`); unused for ``"none"``.
        num_classes: ab classes (625 in the paper).

    Shapes:
        ``forward(l, tokens, lengths)``: ``l`` ``(B, 1, H, W)`` with L in ``[0, 100]`` (``H``,
        ``W`` multiples of 8), ``tokens`` long ``(B, T)``, ``lengths`` long ``(B,)`` -> class
        scores ``(B, Q, H/4, W/4)``. For ``"none"`` the caption arguments may be ``None``.
    """

    def __init__(
        self,
        *,
        conditioning: Conditioning = "film",
        width: float = 1.0,
        embedding_dim: int = 300,
        hidden_size: int = 256,
        relative_maps: int = 0,
        input_normalization: InputNormalization = "paper",
        vocab_size: int | None = None,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if relative_maps < 0:
            raise ValueError(f"relative_maps must be >= 0, got {relative_maps}")
        self.conditioning = conditioning
        self.relative_maps = int(relative_maps)
        self.caption_encoder = (
            CaptionEncoder(vocab_size, embedding_dim, hidden_size)
            if conditioning != "none"
            else None
        )
        condition_dim = self.caption_encoder.output_dim if self.caption_encoder else 0
        self.fcnn = CICNetwork(
            num_classes,
            width,
            condition_channels=(condition_dim if conditioning == "concat" else 0)
            + 2 * self.relative_maps,
            input_normalization=input_normalization,
        )
        self.film = (
            nn.ModuleList(FiLM(condition_dim, c) for c in self.fcnn.block_channels)
            if conditioning == "film"
            else None
        )
        self.relative = (
            nn.ModuleList(RelativeMaps(c, self.relative_maps) for c in self.fcnn.block_channels)
            if self.relative_maps
            else None
        )

    @property
    def uses_captions(self) -> bool:
        return self.caption_encoder is not None

    @property
    def block_channels(self) -> list[int]:
        """Image channels of blocks 1..8 (before any CONCAT or relative-map channels)."""
        return self.fcnn.block_channels

    def set_vocab_size(self, vocab_size: int) -> None:
        """Create the word embedding for ``vocab_size`` ids (no-op without language)."""
        if self.caption_encoder is not None:
            self.caption_encoder.set_vocab_size(vocab_size)

    def encode_caption(self, tokens: Tensor | None, lengths: Tensor | None) -> Tensor | None:
        """``h`` ``(B, caption_encoder.output_dim)``, or ``None`` for the FCNN."""
        if self.caption_encoder is None:
            return None
        if tokens is None or lengths is None:
            raise ValueError(f"conditioning {self.conditioning!r} needs caption tokens and lengths")
        return self.caption_encoder(tokens.to(self.fcnn.readout.weight.device), lengths)

    def condition(self, n: int, z: Tensor, h: Tensor | None) -> Tensor:
        """``Z'_n`` from block ``n``'s output ``Z_n`` (0-based ``n``) under the caption ``h``.

        FILM: Eq. 3, ``(1 + gamma_n) * Z_n + beta_n``; CONCAT: Eq. 1, ``[Z_n; h]``; FCNN:
        ``Z_n``. With relative maps, their ``2K`` channels (computed from the image channels)
        follow.
        """
        if self.film is not None:
            z = self.film[n](z, h)
        elif self.conditioning == "concat":
            z = torch.cat([z, tile(h, z)], dim=1)
        if self.relative is not None:
            image = z[:, : self.fcnn.block_channels[n]]  # not CONCAT's h channels
            z = torch.cat([z, self.relative[n](image)], dim=1)
        return z

    def conditioned_features(self, l: Tensor, h: Tensor | None) -> list[Tensor]:
        """The 8 conditioned block outputs ``Z'_1 .. Z'_8`` for lightness ``l`` under the
        caption encoding ``h`` (``None`` for the FCNN): image channels first, then CONCAT's
        ``h``, then the relative maps."""
        if h is None and self.uses_captions:
            raise ValueError(f"conditioning {self.conditioning!r} needs a caption encoding h")
        if h is not None and h.shape[0] != l.shape[0]:
            raise ValueError(f"{l.shape[0]} images but {h.shape[0]} caption encodings")
        z = self.fcnn.normalized_input(l)
        outputs = []
        for n, block in enumerate(self.fcnn.blocks):
            z = self.condition(n, block(z), h)
            outputs.append(z)
        return outputs

    def features(
        self, l: Tensor, tokens: Tensor | None = None, lengths: Tensor | None = None
    ) -> list[Tensor]:
        """:meth:`conditioned_features` for caption tokens (encoded first)."""
        if tokens is not None and tokens.shape[0] != l.shape[0]:
            raise ValueError(f"{l.shape[0]} images but {tokens.shape[0]} captions")
        return self.conditioned_features(l, self.encode_caption(tokens, lengths))

    def decode(self, l: Tensor, h: Tensor | None) -> Tensor:
        """Class scores ``(B, Q, H/4, W/4)`` for lightness ``l`` under the caption encoding
        ``h``: the 1x1 readout of ``Z'_8``."""
        return self.fcnn.readout(self.conditioned_features(l, h)[-1])

    def forward(
        self, l: Tensor, tokens: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        return self.decode(l, self.encode_caption(tokens, lengths))


@dataclass(frozen=True)
class FilmNetworkConfig:
    """What builds a :class:`FilmColorNetwork` (the ``network`` argument of
    :class:`film_color.module.FilmColorModule`; in a config file ``network: {conditioning: film,
    width: 0.25}``, on the command line ``--model.network.width 0.25``). Defaults are the
    paper's.

    Args:
        conditioning: ``"none"`` (FCNN), ``"concat"`` (Eq. 1) or ``"film"`` (Eq. 2-3).
        width: channel multiplier of the FCNN (1.0 = the paper's 64-...-512 widths; > 0).
        embedding_dim: word-vector size of the caption encoder.
        hidden_size: LSTM state size per direction (``dim(h) = 2 * hidden_size``).
        relative_maps: ``K`` > 0 appends, after every block, each cell's ``x``/``y`` relative
            to ``K`` learned attention centroids of the block's output (:class:`RelativeMaps`;
            beyond the paper, 0 by default).
        input_normalization: ``"paper"`` (CIC's ``(L - 50) / 100``, the default) or ``"image"``
            (each image standardized to zero mean and unit variance,
            :func:`chromalab.color.standardize_l`; beyond the paper). On CapShapes, whose
            lightness is drawn independently of colour, ``"image"`` lets the network find the
            shapes sooner (``benchmarks/results/film_input_normalization.md``).
    """

    conditioning: Conditioning = "film"
    width: float = 1.0
    embedding_dim: int = 300
    hidden_size: int = 256
    relative_maps: int = 0
    input_normalization: InputNormalization = "paper"

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"network.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}"
            )
        if not self.width > 0:
            raise ValueError(f"network.width must be > 0, got {self.width}")
        if self.embedding_dim < 1 or self.hidden_size < 1:
            raise ValueError(
                f"network.embedding_dim and hidden_size must be >= 1, got {self.embedding_dim}, "
                f"{self.hidden_size}"
            )
        if self.relative_maps < 0:
            raise ValueError(f"network.relative_maps must be >= 0, got {self.relative_maps}")
        if self.input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"network.input_normalization must be one of {INPUT_NORMALIZATIONS}, got "
                f"{self.input_normalization!r}"
            )

    @property
    def uses_captions(self) -> bool:
        """Whether the network reads captions (CONCAT and FILM)."""
        return self.conditioning != "none"

    def build(
        self, num_classes: int = NUM_CLASSES, vocab_size: int | None = None
    ) -> FilmColorNetwork:
        """The network, with fresh weights; ``vocab_size``: see :class:`FilmColorNetwork`
        (``None`` defers the word embedding until the vocabulary is known)."""
        return FilmColorNetwork(
            conditioning=self.conditioning,
            width=self.width,
            embedding_dim=self.embedding_dim,
            hidden_size=self.hidden_size,
            relative_maps=self.relative_maps,
            input_normalization=self.input_normalization,
            vocab_size=vocab_size,
            num_classes=num_classes,
        )
