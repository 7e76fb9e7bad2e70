"""Latent space of a diffusers video VAE (Wan's ``AutoencoderKLWan``) as a codec.

Every grid frame is encoded on its own, as a one-frame video: the VAE compresses time by 4 and a
grid needs one latent per frame along both of its axes. Latents are normalized with the VAE's
``latents_mean`` / ``latents_std``, as Wan's own pipelines do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WanVAECodec:
    """Frames ``[N, 3, H, W]`` in [0, 1] to latents ``[N, z, H/8, W/8]`` and back."""

    def __init__(self, vae: nn.Module, patch: int = 2, batch: int = 8) -> None:
        self.vae = vae
        self.batch = batch
        config = vae.config
        self.scale = 2 ** len(config.temperal_downsample)
        self.size_multiple = self.scale * patch
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(config.latents_std, dtype=torch.float32).reshape(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """Runs on the VAE's device; returns CPU float32 latents."""
        device, dtype = _device_dtype(self.vae)
        out = []
        for chunk in frames.split(self.batch):
            chunk = (chunk[:, :, None] * 2 - 1).to(device, dtype)
            latent = self.vae.encode(chunk).latent_dist.mode()[:, :, 0].float().cpu()
            out.append((latent - self.mean) / self.std)
        return torch.cat(out)

    def project(self, latents: Tensor) -> Tensor:
        """Latents have no fixed range: unchanged."""
        return latents

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Runs on the VAE's device; returns CPU frames in [0, 1]."""
        device, dtype = _device_dtype(self.vae)
        out = []
        for chunk in latents.split(self.batch):
            z = (chunk.float().cpu() * self.std + self.mean)[:, :, None].to(device, dtype)
            out.append(self.vae.decode(z).sample[:, :, 0].float().cpu())
        return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype
