"""Synchronization layers between the view stream and the time stream (paper §3.2.4, supp. 7).

Every layer maps the two streams' block outputs ``(y_v, y_t)`` (tokens ``[..., C]``) to the next
block's inputs ``(x_v, x_t)``; hard and averaging layers return the same tensor twice (one
shared stream). ``sigma`` is the rectified-flow time of the unknown frames, ``[B]`` broadcast
to the tokens as ``sigma_emb [B, 1, 1, 1, E]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fourreal.diffusion.models.embeddings import sinusoidal

SyncKind = Literal["soft", "hard", "average", "weighted", "sequential"]
SYNC_KINDS: tuple[SyncKind, ...] = ("soft", "hard", "average", "weighted", "sequential")
TRAINED_SYNCS: tuple[SyncKind, ...] = ("soft", "hard")
"""Sync layers with weights; the others are training-free and work with any block weights."""


class SigmaEmbedding(nn.Module):
    """The diffusion time as the sync layers see it: sinusoidal features and an MLP."""

    def __init__(self, features: int = 256) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(
            nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features), nn.SiLU()
        )

    def forward(self, sigma: Tensor) -> Tensor:
        return self.mlp(sinusoidal(sigma * 1000, self.features).to(self.mlp[0].weight.dtype))


class HardSync(nn.Module):
    """Eq. 8: ``x = W_v y_v + W_t y_t`` with ``W_v = W_t = ½I`` at initialization, each
    modulated per channel by the diffusion time (``(1 + γ(σ)) ⊙ W y``, γ zero-initialized), so
    an untrained layer is the average of Eq. 12."""

    def __init__(self, width: int, sigma_features: int = 256) -> None:
        super().__init__()
        self.w_view = nn.Linear(width, width, bias=False)
        self.w_time = nn.Linear(width, width, bias=False)
        self.gamma = nn.Linear(sigma_features, 2 * width)
        with torch.no_grad():
            for layer in (self.w_view, self.w_time):
                layer.weight.copy_(0.5 * torch.eye(width))
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.gamma.bias)

    def forward(self, y_v: Tensor, y_t: Tensor, sigma_emb: Tensor) -> tuple[Tensor, Tensor]:
        g_v, g_t = self.gamma(sigma_emb).chunk(2, dim=-1)
        x = (1 + g_v) * self.w_view(y_v) + (1 + g_t) * self.w_time(y_t)
        return x, x


class SoftSync(nn.Module):
    """Eq. 9–10: ``(Δy_v, Δy_t) = ModLinear(y_v, y_t; σ)``, ``x_v = y_v + Δy_v``,
    ``x_t = y_t + Δy_t``. ModLinear normalizes both streams, modulates them by the diffusion
    time (shift and scale) and maps the ``2C`` channels to ``2C`` updates with a
    zero-initialized linear layer: an untrained layer leaves the streams independent."""

    def __init__(self, width: int, sigma_features: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(sigma_features, 4 * width)
        self.linear = nn.Linear(2 * width, 2 * width)
        for layer in (self.modulation, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, y_v: Tensor, y_t: Tensor, sigma_emb: Tensor) -> tuple[Tensor, Tensor]:
        shift, scale = self.modulation(sigma_emb).chunk(2, dim=-1)
        h = torch.cat([self.norm(y_v), self.norm(y_t)], dim=-1) * (1 + scale) + shift
        d_v, d_t = self.linear(h).chunk(2, dim=-1)
        return y_v + d_v, y_t + d_t


def average_sync(y_v: Tensor, y_t: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 12 (training-free hard sync): ``x = ½(y_v + y_t)``, one shared stream."""
    x = 0.5 * (y_v + y_t)
    return x, x


def weighted_weight(index: int, num_blocks: int) -> float:
    """``w_l = 0.1 + 0.4·l/L`` of Eq. 13, for block ``index`` (0-based): ``l = index + 1``, so
    the weight grows with depth and the last block averages the streams (``w_L = ½``)."""
    return 0.1 + 0.4 * (index + 1) / num_blocks


def weighted_sync(y_v: Tensor, y_t: Tensor, w: float) -> tuple[Tensor, Tensor]:
    """Eq. 13 (training-free soft sync): each stream moves a fraction ``w`` toward the other."""
    return (1 - w) * y_v + w * y_t, (1 - w) * y_t + w * y_v
