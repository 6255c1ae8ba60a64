"""Tiny diffusers components for the lcad tests (random weights, CPU, milliseconds)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def tiny_vae(seed: int = 0, layers: int = 2) -> AutoencoderKL:
    """A 3-level AutoencoderKL (8, 16, 16 channels, latent /4) with random, non-trivial
    weights: a stand-in for Stable Diffusion's VAE."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.18215,
    )
    with torch.no_grad():  # move the norms and biases away from their trivial initial values
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae.eval()
