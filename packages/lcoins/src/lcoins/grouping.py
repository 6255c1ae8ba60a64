"""The grouping transformer (§3.4, Eq. 4-9) and the grouping layer (§3.6, Eq. 11-12) of L-CoIns.

Chang, Weng, Zhang, Li, Li, Shi, "L-CoIns: Language-based Colorization with Instance
Awareness", CVPR 2023.

Tokens travel as one sequence ``Z = [Z_img; Z_lag; Z_grp]`` of ``N_I + N_L + N_G`` tokens of
width ``C`` (:class:`TokenLayout` says where each modality lies). A grouping block is a
pre-norm transformer block whose multi-head attention is the grouping attention:

* inner loop (Eq. 6): self-attention within the image tokens and within the language tokens;
* outer loop (Eq. 7-8): the group tokens attend to each modality, and each modality attends to
  the group tokens;
* Eq. 9: per head, a token's inner and outer outputs are concatenated, and the heads'
  concatenation is projected by one ``W_proj`` (``2C -> C``).

The group tokens are therefore the only path between image and language
(``tests/lcoins/test_grouping.py`` checks it). The paper leaves open what fills the group
tokens' two slots of Eq. 9, since Eq. 6 has no inner loop for them while Eq. 7 gives them one
output per modality. ``group_slots="modalities"`` (the default) puts the two outer-loop outputs
there, group-from-image and group-from-language, so every modality's row of Eq. 9 has the same
shape and each output keeps its own part of ``W_proj``. ``group_slots="joint"`` is the
GroupViT-like alternative: the groups' self-attention in the first slot and one attention over
image and language tokens together (one softmax) in the second.

The ablations of Table 1 that change the blocks use :class:`GroupingBlock` with
``attention="full"``: ordinary multi-head self-attention over every token (W/o GA: "the
transformer block in ViT"; W/o GE: the same over image and language tokens only).

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels
where the device has them); padded caption tokens are masked out as keys everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "Attention",
    "GroupSlots",
    "GroupingAttention",
    "GroupingBlock",
    "GroupingLayer",
    "GroupingTransformer",
    "TokenLayout",
]

GroupSlots = Literal["modalities", "joint"]
Attention = Literal["grouping", "full"]


@dataclass(frozen=True)
class TokenLayout:
    """Where the modalities lie in the token sequence: image ``[0, images)``, language
    ``[images, images + words)``, groups after them."""

    images: int
    words: int
    groups: int

    @property
    def total(self) -> int:
        return self.images + self.words + self.groups

    def split(self, x: Tensor, dim: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` cut along ``dim`` into its image, language and group parts."""
        return x.split((self.images, self.words, self.groups), dim=dim)


def _attend(q: Tensor, k: Tensor, v: Tensor, keys: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` per head (Eq. 6-8); ``keys`` ``(B, N_k)`` marks the keys
    that may be attended to (``None``: all)."""
    mask = None if keys is None else keys[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class GroupingAttention(nn.Module):
    """Multi-head grouping attention (Eq. 6-9), or ordinary self-attention (``attention="full"``).

    Args:
        width: token width ``C``.
        heads: attention heads ``N_H`` (``C`` must be divisible by it).
        attention: ``"grouping"`` (the paper) or ``"full"`` (the ablations' ViT attention).
        group_slots: what fills the group tokens' two slots of Eq. 9 (see the module
            documentation).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        attention: Attention = "grouping",
        group_slots: GroupSlots = "modalities",
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if attention not in ("grouping", "full"):
            raise ValueError(f"attention must be 'grouping' or 'full', got {attention!r}")
        if group_slots not in ("modalities", "joint"):
            raise ValueError(f"group_slots must be 'modalities' or 'joint', got {group_slots!r}")
        self.heads, self.attention, self.group_slots = heads, attention, group_slots
        self.qkv = nn.Linear(width, 3 * width)
        # Eq. 9: [in_1 out_1 ... in_H out_H] W_proj; the full attention has one output per head
        self.proj = nn.Linear(2 * width if attention == "grouping" else width, width)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, d)
        return q, k, v

    def forward(self, x: Tensor, layout: TokenLayout, words: Tensor) -> Tensor:
        """Attention output ``(B, N, C)`` of the (normalized) tokens ``x`` ``(B, N, C)``;
        ``words`` ``(B, N_L)`` is True at real (not padded) caption tokens."""
        b, n, c = x.shape
        q, k, v = self._heads(x)
        if self.attention == "full":
            keys = torch.cat(
                (x.new_ones(b, layout.images, dtype=torch.bool), words,
                 x.new_ones(b, layout.groups, dtype=torch.bool)), dim=1,
            )  # fmt: skip
            out = _attend(q, k, v, keys)  # (B, H, N, d)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))
        (qi, ql, qg), (ki, kl, kg), (vi, vl, vg) = (layout.split(t, dim=2) for t in (q, k, v))
        image = (_attend(qi, ki, vi), _attend(qi, kg, vg))  # Eq. 6, Eq. 8
        language = (_attend(ql, kl, vl, words), _attend(ql, kg, vg))  # Eq. 6, Eq. 8
        if self.group_slots == "modalities":
            group = (_attend(qg, ki, vi), _attend(qg, kl, vl, words))  # Eq. 7, both modalities
        else:
            both = torch.cat((words.new_ones(b, layout.images), words), dim=1)
            group = (
                _attend(qg, kg, vg),
                _attend(qg, torch.cat((ki, kl), 2), torch.cat((vi, vl), 2), both),
            )
        # Eq. 9: per modality, per head [in, out]; (B, H, N_*, 2, d) -> (B, N_*, 2C)
        parts = [torch.stack(pair, dim=3) for pair in (image, language, group)]
        out = torch.cat(parts, dim=2).permute(0, 2, 1, 3, 4).reshape(b, n, 2 * c)
        return self.proj(out)


class GroupingBlock(nn.Module):
    """One grouping block (Eq. 4-5): ``Ẑ = GA(LN(Z)) + Z``, ``Z' = MLP(LN(Ẑ)) + Ẑ``."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        attention: Attention = "grouping",
        group_slots: GroupSlots = "modalities",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = GroupingAttention(width, heads, attention, group_slots)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, z: Tensor, layout: TokenLayout, words: Tensor) -> Tensor:
        z = z + self.attn(self.norm1(z), layout, words)
        return z + self.mlp(self.norm2(z))


class GroupingTransformer(nn.Module):
    """``depth`` grouping blocks and a final LayerNorm over the tokens ``(B, N, C)``.

    ``activation_checkpointing`` recomputes each block's activations in the backward pass
    instead of keeping them (less memory for more compute; training only).
    """

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        attention: Attention = "grouping",
        group_slots: GroupSlots = "modalities",
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(
            GroupingBlock(width, heads, mlp_ratio, attention, group_slots) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.activation_checkpointing = activation_checkpointing

    def forward(self, z: Tensor, layout: TokenLayout, words: Tensor) -> Tensor:
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                z = checkpoint(block, z, layout, words, use_reentrant=False)
            else:
                z = block(z, layout, words)
        return self.norm(z)


class GroupingLayer(nn.Module):
    """Hard assignment of image tokens to group tokens and the merge of Eq. 11-12.

    The similarity ``Ā`` ``(B, N_G, N_I)`` is a softmax over the groups, for each image token,
    of ``q(Z_grp) · k(Z_img) / sqrt(C)`` with learned projections ``q``, ``k`` of the
    layer-normed tokens (the paper leaves the similarity open; these are GroupViT's, which the
    paper cites for the hard assignment). Eq. 11 keeps each image token's most similar group,
    ``Â = onehot(argmax_i Ā) + Ā - sg(Ā)`` (straight-through: the forward value is one-hot, the
    gradient that of ``Ā``). Eq. 12 adds to each group the mean of ``W_v Z_img`` over its
    image tokens: ``Z̄_grp,i = Z_grp,i + Σ_j Â_ij W_v Z_img,j / max(Σ_j Â_ij, 1)``. A group
    that no image token chose keeps its own token: its sum is 0 in value, and dividing it by 1
    rather than by a small ``eps`` keeps its straight-through gradient ``W_v Z_img,j`` the size
    of a chosen group's instead of ``1/eps`` times it (GroupViT, which the paper cites, and the
    authors' release divide by ``Σ_j Â_ij + 1``, which also shrinks every non-empty mean;
    ``max(·, 1)`` leaves them exact). The count's own gradient passes for non-empty groups.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm_groups = nn.LayerNorm(width)
        self.norm_images = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width, bias=False)  # W_v

    def similarity(self, images: Tensor, groups: Tensor) -> Tensor:
        """``Ā`` ``(B, N_G, N_I)``: for each image token, a softmax over the groups."""
        q = self.query(self.norm_groups(groups))
        k = self.key(self.norm_images(images))
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=1)

    def forward(self, images: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """Merged groups ``Z̄_grp`` ``(B, N_G, C)`` and the assignment ``Â`` ``(B, N_G, N_I)``
        of image tokens ``(B, N_I, C)`` to group tokens ``(B, N_G, C)``."""
        soft = self.similarity(images, groups)
        hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).transpose(1, 2).to(soft.dtype)
        assignment = hard + soft - soft.detach()  # Eq. 11
        merged = assignment @ self.value(images)
        count = assignment.sum(-1, keepdim=True).clamp(min=1.0)  # 0 for empty groups: 1
        return groups + merged / count, assignment  # Eq. 12
