"""The temporal deformation field ``Δp_t = MLP(γ(p), γ(t))`` (paper supplement 6, Eq. 11).

Positions are normalized by the scene's center and extent before the positional encoding, and
the output is scaled back, so the same settings work at any scene scale. The last layer starts
at zero: an untrained field moves nothing. Times are normalized to [0, 1] over the grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DeformConfig:
    pos_freqs: int = 6
    """Octaves of the positional encoding of positions."""
    time_freqs: int = 4
    """Octaves of the positional encoding of time."""
    width: int = 96
    depth: int = 3
    """Hidden layers."""

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def encode(x: Tensor, freqs: int) -> Tensor:
    """``[x, sin(2^k π x), cos(2^k π x)]`` for k < freqs, along the last axis."""
    scales = (2.0 ** torch.arange(freqs, dtype=x.dtype, device=x.device)) * math.pi
    angles = x[..., None] * scales  # [..., D, F]
    return torch.cat([x, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)


class DeformField(nn.Module):
    """Maps canonical positions ``[N, 3]`` and times ``[B]`` to offsets ``[B, N, 3]``."""

    def __init__(self, config: DeformConfig, center: Tensor, extent: float) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("center", center.detach().float().reshape(3))
        self.register_buffer("extent", torch.tensor(float(extent)))
        d_pos = 3 * (1 + 2 * config.pos_freqs)
        d_time = 1 + 2 * config.time_freqs
        # the first layer is split so positions and times are encoded once, not per pair
        self.first_pos = nn.Linear(d_pos, config.width)
        self.first_time = nn.Linear(d_time, config.width, bias=False)
        self.hidden = nn.ModuleList(
            nn.Linear(config.width, config.width) for _ in range(config.depth - 1)
        )
        self.last = nn.Linear(config.width, 3)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, points: Tensor, times: Tensor) -> Tensor:
        p = (points - self.center) / self.extent
        h = self.first_pos(encode(p, self.config.pos_freqs))  # [N, W]
        t = self.first_time(encode(times.reshape(-1, 1).to(p.dtype), self.config.time_freqs))
        h = torch.relu(h[None] + t[:, None])  # [B, N, W]
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.last(h) * self.extent
