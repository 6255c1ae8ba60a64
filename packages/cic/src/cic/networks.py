"""The CIC network: Zhang et al., "Colorful Image Colorization", §3.4 and Fig. 3.

Eight blocks of 2-3 ``conv3x3 + ReLU`` followed by BatchNorm, no pooling:

====== ======== ===================== =============================
block  channels  convs                 spatial
====== ======== ===================== =============================
1      64        2, stride 2 in last   1/2
2      128       2, stride 2 in last   1/4
3      256       3, stride 2 in last   1/8
4      512       3                     1/8
5      512       3, dilation 2         1/8
6      512       3, dilation 2         1/8
7      512       3                     1/8
8      256       up-conv x2 + 2 convs  1/4, then a 1x1 readout to Q
====== ======== ===================== =============================

Block 8 is ``ConvTranspose(k4, s2, p1) + ReLU`` then two ``conv3x3 + ReLU`` (no BatchNorm), and
a 1x1 convolution reads out ``Q`` class scores at 1/4 of the input resolution. With
``deep_supervision`` (§3.4) extra 1x1 readouts on blocks 6, 7 and 8 give auxiliary scores.

Module layout mirrors the authors' released PyTorch model (``model1`` ... ``model8``
``nn.Sequential`` blocks whose indices count the ReLU and BatchNorm layers), so
:func:`cic.weights.load_released` maps its keys one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

from chromalab.color import normalize_l, standardize_l

__all__ = ["INPUT_NORMALIZATIONS", "OUTPUT_STRIDE", "BlockHook", "CICNetwork", "InputNormalization"]

#: How lightness becomes the network input: ``"paper"`` is CIC's ``(L - 50) / 100``
#: (:func:`chromalab.color.normalize_l`, what the released weights expect); ``"image"``
#: standardizes each image (:func:`chromalab.color.standardize_l`).
InputNormalization = Literal["paper", "image"]
INPUT_NORMALIZATIONS: tuple[str, ...] = ("paper", "image")

#: Input pixels per output cell along each side: class scores come out at 1/4 resolution.
OUTPUT_STRIDE = 4

#: ``hook(block_index, output) -> output``: applied to each block's output (0-based index).
BlockHook = Callable[[int, Tensor], Tensor]

# (output channels, number of convs, stride of the last conv, dilation)
_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (64, 2, 2, 1),
    (128, 2, 2, 1),
    (256, 3, 2, 1),
    (512, 3, 1, 1),
    (512, 3, 1, 2),
    (512, 3, 1, 2),
    (512, 3, 1, 1),
)


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


def _conv_block(c_in: int, c_out: int, convs: int, stride: int, dilation: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        last = i == convs - 1
        layers += [
            nn.Conv2d(
                c_in if i == 0 else c_out,
                c_out,
                kernel_size=3,
                stride=stride if last else 1,
                padding=dilation,
                dilation=dilation,
            ),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


class CICNetwork(nn.Module):
    """The 8-block CIC colorization CNN ``G`` (Eq. 2): lightness -> class scores.

    Args:
        num_classes: ``Q``, the number of ab bins (313 in the paper, 261 for
            ``ABBins.gamut()``, 625 for the FiLM grid).
        width: channel multiplier (1.0 = the paper's 64-...-512 widths); small values make
            CPU tests and demos fast.
        deep_supervision: add the 1x1 readouts of §3.4 on blocks 6 and 7 (block 8's readout is
            the main one).
        condition_channels: extra input channels of blocks 2-8 and of the readout, for
            conditioning that concatenates a vector to every block's output (the CONCAT model
            of Manjunatha et al. 2018, Eq. 1). 0 for plain CIC.
        input_normalization: ``"paper"`` (``(L - 50) / 100``, the default and what the
            released weights expect) or ``"image"`` (each image standardized to zero mean and
            unit variance, :func:`chromalab.color.standardize_l`; not in the paper, for data
            whose absolute lightness says nothing about colour).

    Shapes:
        input ``l`` ``(B, 1, H, W)`` with L in ``[0, 100]`` (normalized inside, see
        ``input_normalization``); output scores ``(B, Q, H/4, W/4)``. ``H`` and
        ``W`` must be multiples of 8.
    """

    def __init__(
        self,
        num_classes: int = 313,
        width: float = 1.0,
        deep_supervision: bool = False,
        condition_channels: int = 0,
        input_normalization: InputNormalization = "paper",
    ):
        super().__init__()
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"input_normalization must be one of {INPUT_NORMALIZATIONS}, got "
                f"{input_normalization!r}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.num_classes = num_classes
        self.width = width
        self.deep_supervision = deep_supervision
        self.condition_channels = condition_channels
        self.input_normalization = input_normalization
        extra = condition_channels
        blocks = []
        c_in = 1
        for channels, convs, stride, dilation in _BLOCKS:
            c_out = _scaled(channels, width)
            blocks.append(_conv_block(c_in, c_out, convs, stride, dilation))
            c_in = c_out + extra
        c8 = _scaled(256, width)
        blocks.append(
            nn.Sequential(
                nn.ConvTranspose2d(c_in, c8, kernel_size=4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c8, c8, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c8, c8, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
            )
        )
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Conv2d(c8 + extra, num_classes, kernel_size=1)
        if deep_supervision:
            c7 = _scaled(512, width) + extra
            self.aux_readouts = nn.ModuleDict(
                {
                    "block6": nn.Conv2d(c7, num_classes, kernel_size=1),
                    "block7": nn.Conv2d(c7, num_classes, kernel_size=1),
                }
            )

    @property
    def block_channels(self) -> list[int]:
        """Output channels of blocks 1..8 (where conditioning layers attach)."""
        return [_scaled(c, self.width) for c, *_ in _BLOCKS] + [_scaled(256, self.width)]

    def _check_input(self, l: Tensor) -> None:
        if l.dim() != 4 or l.shape[1] != 1:
            raise ValueError(f"expected lightness of shape (B, 1, H, W), got {tuple(l.shape)}")
        if l.shape[2] % 8 or l.shape[3] % 8:
            raise ValueError(f"H and W must be multiples of 8, got {tuple(l.shape[2:])}")

    def normalized_input(self, l: Tensor) -> Tensor:
        """What block 1 reads: lightness ``l`` ``(B, 1, H, W)`` (L in ``[0, 100]``, ``H`` and
        ``W`` multiples of 8) normalized as ``input_normalization`` says."""
        self._check_input(l)
        return normalize_l(l) if self.input_normalization == "paper" else standardize_l(l)

    def features(self, l: Tensor, hook: BlockHook | None = None) -> list[Tensor]:
        """Outputs of the 8 blocks for lightness ``l`` (L in ``[0, 100]``).

        ``hook(i, x)``, when given, transforms block ``i``'s output (0-based) before it feeds
        the next block: the attachment point of FiLM and CONCAT conditioning.
        """
        x = self.normalized_input(l)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if hook is not None:
                x = hook(i, x)
            outputs.append(x)
        return outputs

    def forward(self, l: Tensor, hook: BlockHook | None = None) -> Tensor:
        """Class scores ``(B, Q, H/4, W/4)`` (unnormalized logits)."""
        return self.readout(self.features(l, hook)[-1])

    def forward_with_aux(
        self, l: Tensor, hook: BlockHook | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Main scores plus the deep-supervision scores of blocks 6 and 7 (1/8 resolution)."""
        feats = self.features(l, hook)
        aux = {}
        if self.deep_supervision:
            aux = {
                "block6": self.aux_readouts["block6"](feats[5]),
                "block7": self.aux_readouts["block7"](feats[6]),
            }
        return self.readout(feats[-1]), aux
