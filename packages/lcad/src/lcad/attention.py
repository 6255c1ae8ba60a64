"""Instance-aware sampling (L-CAD §3.4, Algorithm 1) through diffusers attention processors.

Chang, Weng, Zhang, Li, Li, Shi, "L-CAD: Language-based Colorization with Any-level
Descriptions using Diffusion Priors", NeurIPS 2023 (arXiv:2305.15217).

At a sampling step, Algorithm 1 runs the UNet once and reads, at every cross-attention layer
``l``, the pre-softmax attention logits ``M_l^att`` of each coloured phrase's tokens; it takes one
gradient step ``M̂_l^att = M_l^att - λ ∇ L_BCE(sigmoid(M_l^att), M̂_l^est)`` towards the phrase's
mask ``M^est`` downsampled to the layer's grid, then runs the UNet again with the edited maps in
place of the layer's own, and takes the DDIM step with that second prediction.

Here:

* :class:`EditableCrossAttention` is a diffusers attention processor for the cross-attention
  layers (``attn2``). Without an active edit it computes attention as diffusers' default
  processor does (``scaled_dot_product_attention``). With one, it works on the logits of the
  conditional rows of the batch (classifier-free guidance puts them first; the unconditional
  rows, the empty caption, are left alone) for any head count, batch and latent shape.
* :class:`AttentionEdit` is one sampling's edit: the phrases' masks and tokens, ``λ``, and the
  edited logits of the current step, keyed by layer. Its :class:`EditMode` says what the next
  UNet pass does: :attr:`~EditMode.RECORD` the edited logits, :attr:`~EditMode.APPLY` them, or
  :attr:`~EditMode.OBSERVE`: sum each phrase's attention maps over the layers, whose peaks prompt
  SAM for masks (automatic masks, beyond the paper). It lives for one sampling call
  (:func:`attention_edit`), so nothing carries over from one call to the next.
* The gradient is the analytic one: for ``sum``-reduced BCE on ``sigmoid(x)``,
  ``∂L/∂x = sigmoid(x) - y`` (tested against autograd), applied to the phrase tokens' columns only,
  so no graph is built through the UNet.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionEdit",
    "EditMode",
    "EditableCrossAttention",
    "attention_edit",
    "install_editable_attention",
    "mask_mass",
]


class EditMode(Enum):
    """What the cross-attention layers do in the next UNet pass of an edited step (no mode:
    plain attention).

    ``RECORD``: Algorithm 1's first pass: attend as usual, and keep each layer's conditional logits
    moved one BCE gradient step toward the masks (``M̂_l^att``); ``APPLY``: its second pass, the
    conditional rows attend with the recorded logits (``M_*^att ← M̂_*^att``); ``OBSERVE``: attend
    as usual, and add each phrase's attention maps to :attr:`AttentionEdit.observed`.
    """

    OBSERVE = "observe"
    RECORD = "record"
    APPLY = "apply"


def _grid(latent: tuple[int, int], queries: int) -> tuple[int, int]:
    """The ``(h, w)`` grid of a layer with ``queries`` positions in a UNet whose input latent is
    ``latent``: each level halves the sides, rounding up (stride-2 convolutions, padding 1)."""
    h, w = latent
    while h * w > queries:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != queries:
        raise ValueError(f"{queries} attention queries fit no level of a {latent} latent")
    return h, w


class AttentionEdit:
    """The edit of one sampling (Algorithm 1).

    Args:
        masks: ``(B, P, H, W)`` estimated contours in ``[0, 1]`` of ``P`` phrases per image (any
            resolution with the latent's aspect; an absent phrase has no tokens).
        tokens: bool ``(B, P, T)``, the context tokens of each phrase.
        latent: ``(h, w)`` of the UNet's input latent.
        step_size: ``λ``.
    """

    def __init__(self, masks: Tensor, tokens: Tensor, latent: tuple[int, int], step_size: float):
        if masks.dim() != 4 or tokens.dim() != 3 or masks.shape[:2] != tokens.shape[:2]:
            raise ValueError(
                f"masks (B, P, H, W) and tokens (B, P, T) must agree, got {tuple(masks.shape)} "
                f"and {tuple(tokens.shape)}"
            )
        self.masks = masks.float()
        self.tokens = tokens.bool()
        self.latent = (int(latent[0]), int(latent[1]))
        self.step_size = float(step_size)
        self.mode = None
        self.edited: dict[str, Tensor] = {}
        self.observed: Tensor | None = None
        #: with ``track_mass``: per recorded layer, the mean :func:`mask_mass` before and after
        #: the edit step
        self.track_mass = False
        self.mass: list[tuple[float, float]] = []
        self._targets: dict[int, Tensor] = {}

    @property
    def mode(self) -> EditMode | None:
        """What the next UNet pass does (:class:`EditMode`; ``None``: plain attention)."""
        return self._mode

    @mode.setter
    def mode(self, mode: EditMode | None) -> None:
        if mode is not None and not isinstance(mode, EditMode):
            raise TypeError(f"an edit's mode is an EditMode or None, got {mode!r}")
        self._mode = mode

    def set_masks(self, masks: Tensor) -> None:
        """Replace the masks ``(B, P, H, W)`` (e.g. once they are estimated)."""
        if masks.shape[:2] != self.masks.shape[:2]:
            raise ValueError(f"masks {tuple(masks.shape)} for {tuple(self.masks.shape[:2])}")
        self.masks = masks.float().to(self.masks.device)
        self._targets = {}

    def observe(self, probs: Tensor, heads: int) -> None:
        """Add each phrase's attention map at this layer (the softmax probabilities of its
        tokens ``(B * heads, N, T)`` of the conditional rows, summed over its tokens, averaged
        over heads, resized to the latent) to :attr:`observed` ``(B, P, h, w)``."""
        b = self.rows
        grid = _grid(self.latent, probs.shape[1])
        per_head = probs.float().view(b, heads, *probs.shape[1:]).mean(1)  # (B, N, T)
        maps = torch.einsum("bnt,bpt->bpn", per_head, self.tokens.to(per_head))
        maps = maps.reshape(b, -1, *grid)
        if grid != self.latent:
            maps = F.interpolate(maps, size=self.latent, mode="bilinear", align_corners=False)
        self.observed = maps if self.observed is None else self.observed + maps

    def peaks(self) -> Tensor:
        """``(B, P, 2)``: each phrase's observed attention peak as ``(x, y)`` in ``[0, 1]``
        (the centre of the peak's latent cell)."""
        if self.observed is None:
            raise RuntimeError("no attention observed: run a UNet pass in EditMode.OBSERVE")
        h, w = self.latent
        flat = self.observed.flatten(2).argmax(-1)
        y, x = flat // w, flat % w
        return torch.stack(((x.float() + 0.5) / w, (y.float() + 0.5) / h), dim=-1)

    @property
    def rows(self) -> int:
        """The conditional rows of the UNet's batch (the first ``B``)."""
        return self.masks.shape[0]

    def targets(self, queries: int) -> tuple[Tensor, Tensor]:
        """Per-token targets ``(B, N, T)`` at the layer of ``queries`` positions (each phrase's
        mask, area-downsampled, on its tokens' columns) and the edited columns ``(B, 1, T)``."""
        if queries not in self._targets:
            h, w = _grid(self.latent, queries)
            small = F.interpolate(self.masks, size=(h, w), mode="area").flatten(2)  # (B, P, N)
            per_token = torch.einsum("bpn,bpt->bnt", small, self.tokens.to(small.dtype))
            self._targets[queries] = per_token.clamp(max=1)
        selected = self.tokens.any(dim=1)[:, None, :]
        return self._targets[queries], selected

    def step(self, logits: Tensor, heads: int) -> Tensor:
        """One gradient step of ``λ · BCE(sigmoid(logits), target)`` on the phrase tokens'
        columns of the conditional rows' logits ``(B * heads, N, T)``."""
        b = self.rows
        target, selected = self.targets(logits.shape[1])
        x = logits.float().view(b, heads, *logits.shape[1:])
        grad = (torch.sigmoid(x) - target[:, None].to(x.device)) * selected[:, None].to(x.device)
        return (x - self.step_size * grad).view_as(logits).to(logits.dtype)


def mask_mass(logits: Tensor, edit: AttentionEdit, heads: int) -> Tensor:
    """The share of each phrase token's attention that falls inside its mask, averaged over
    heads and phrase tokens, per image ``(B,)``: ``Σ_n A[n,t] y[n,t] / Σ_n A[n,t]`` with ``A``
    the softmax over tokens of the conditional rows' ``logits`` ``(B * heads, N, T)``."""
    b = edit.rows
    target, selected = edit.targets(logits.shape[1])
    probs = logits.float().softmax(dim=-1).view(b, heads, *logits.shape[1:])
    inside = (probs * target[:, None]).sum(2) / probs.sum(2).clamp_min(1e-12)  # (B, heads, T)
    weight = selected.expand(b, 1, -1).float()
    return (inside * weight).sum((1, 2)) / (weight.sum((1, 2)) * heads).clamp_min(1)


class _Holder:
    """The active edit of one UNet, shared by its cross-attention processors."""

    edit: AttentionEdit | None = None


class EditableCrossAttention:
    """A diffusers attention processor for cross-attention with Algorithm 1's edit.

    In :attr:`EditMode.RECORD`: attention as usual, and the layer's edited logits kept in the
    edit; :attr:`EditMode.APPLY`: the conditional rows attend with the recorded edited logits;
    :attr:`EditMode.OBSERVE`: attention as usual, the phrases' maps added to the edit's.
    """

    def __init__(self, name: str, holder: _Holder) -> None:
        self.name, self.holder = name, holder

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        edit = self.holder.edit
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.dim() == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, length = context.shape[0], context.shape[1]
        mask = attn.prepare_attention_mask(attention_mask, length, batch)
        if edit is None or edit.mode is None:
            out = self._plain(attn, query, key, value, mask)
        else:
            out = self._edited(attn, edit, query, key, value, mask)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    @staticmethod
    def _plain(attn, query, key, value, mask) -> Tensor:
        b, heads = query.shape[0], attn.heads
        q, k, v = (x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)
                   for x in (query, key, value))  # fmt: skip
        if mask is not None:
            mask = mask.view(b, heads, -1, mask.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        return out.transpose(1, 2).reshape(b, -1, heads * q.shape[-1]).to(query.dtype)

    def _edited(self, attn, edit: AttentionEdit, query, key, value, mask) -> Tensor:
        heads = attn.heads
        q, k, v = (attn.head_to_batch_dim(x) for x in (query, key, value))
        logits = torch.baddbmm(
            mask if mask is not None else q.new_zeros(1, 1, 1), q, k.transpose(-1, -2),
            beta=1 if mask is not None else 0, alpha=attn.scale,
        )  # fmt: skip
        rows = edit.rows * heads
        if rows > logits.shape[0]:
            raise ValueError(f"the edit has {edit.rows} images, the UNet batch is smaller")
        if edit.mode is EditMode.OBSERVE:
            probs = logits.float().softmax(dim=-1)
            edit.observe(probs[:rows], heads)
            return attn.batch_to_head_dim(torch.bmm(probs.to(v.dtype), v))
        if edit.mode is EditMode.RECORD:
            edit.edited[self.name] = edit.step(logits[:rows], heads)
            if edit.track_mass:
                before = mask_mass(logits[:rows], edit, heads).mean()
                after = mask_mass(edit.edited[self.name], edit, heads).mean()
                edit.mass.append((float(before), float(after)))
        elif edit.mode is EditMode.APPLY:
            if self.name not in edit.edited:
                raise RuntimeError(f"no recorded attention for {self.name}: record first")
            logits = torch.cat((edit.edited[self.name], logits[rows:]))
        probs = logits.float().softmax(dim=-1).to(v.dtype)
        return attn.batch_to_head_dim(torch.bmm(probs, v))


def install_editable_attention(unet: nn.Module) -> _Holder:
    """Put :class:`EditableCrossAttention` on every cross-attention layer of a diffusers UNet
    (idempotent) and return the holder of its active edit."""
    holder = getattr(unet, "_attention_edit_holder", None)
    if holder is not None:
        return holder
    holder = _Holder()
    processors = {
        name: EditableCrossAttention(name, holder) if ".attn2." in name else processor
        for name, processor in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
    unet._attention_edit_holder = holder
    return holder


@contextmanager
def attention_edit(unet: nn.Module, edit: AttentionEdit | None) -> Iterator[AttentionEdit | None]:
    """Within the block, ``unet``'s cross-attention layers follow ``edit`` (set its
    :class:`EditMode`); afterwards none is held."""
    holder = install_editable_attention(unet)
    holder.edit = edit
    try:
        yield edit
    finally:
        holder.edit = None
