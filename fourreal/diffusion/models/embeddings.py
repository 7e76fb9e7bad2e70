"""Patches, timestep embeddings and 3D rotary positions of the pixel-space video DiT."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


def patchify(frames: Float[Tensor, "S F C H W"], patch: int) -> Float[Tensor, "S F N D"]:
    """Cut frames into ``patch × patch`` tiles: ``N = (H/p)(W/p)`` tokens of ``D = C p²`` values,
    row-major over (y, x)."""
    S, F, C, H, W = frames.shape
    x = frames.reshape(S, F, C, H // patch, patch, W // patch, patch)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)  # S F h w C p p
    return x.reshape(S, F, (H // patch) * (W // patch), C * patch * patch)


def unpatchify(
    tokens: Float[Tensor, "S F N D"], patch: int, height: int, width: int
) -> Float[Tensor, "S F C H W"]:
    """Inverse of :func:`patchify`."""
    S, F, _, D = tokens.shape
    C = D // (patch * patch)
    h, w = height // patch, width // patch
    x = tokens.reshape(S, F, h, w, C, patch, patch).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(S, F, C, height, width)


def sinusoidal(t: Float[Tensor, " B"], dim: int, max_period: float = 10_000.0) -> Tensor:
    """``[B, dim]`` sinusoidal features of scalar times (DiT's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Rectified-flow time ``σ ∈ [0, 1]`` to a ``width`` vector (sinusoidal features of
    ``1000 σ`` through a two-layer MLP)."""

    def __init__(self, width: int, features: int = 256) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, sigma: Float[Tensor, " B"]) -> Float[Tensor, "B C"]:
        emb = sinusoidal(sigma * 1000, self.features).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the (frame, y, x) axes: even sizes, y and x equal."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope_tables(
    frames: int, height: int, width: int, head_dim: int, theta: float = 10_000.0
) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of shape ``[frames·height·width, head_dim / 2]`` for 3D rotary positions
    over (frame, y, x) token indices, frame-major as the tokens are laid out."""
    f_idx, y_idx, x_idx = torch.meshgrid(
        torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"
    )
    angles = []
    for size, idx in zip(rope_split(head_dim), (f_idx, y_idx, x_idx), strict=True):
        freqs = theta ** (-torch.arange(0, size, 2, dtype=torch.float64) / size)
        angles.append(idx.reshape(-1, 1).double() * freqs[None])
    angle = torch.cat(angles, dim=-1)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: Float[Tensor, "S H L D"], cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of queries or keys by the position angles."""
    x_pairs = x.unflatten(-1, (-1, 2))
    a, b = x_pairs[..., 0], x_pairs[..., 1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
