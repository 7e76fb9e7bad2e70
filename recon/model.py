"""Dynamic isotropic Gaussians: canonical parameters, view offsets and the deformation field.

Frame ``(v, t)`` places each Gaussian at ``p + Δp_v + Δp_t(p, t)`` (Eq. 11) and renders it with
view v's camera. ``Δp_v`` comes from tracking and compensates inconsistencies between the views
of the grid; it is dropped for display and export.

Beyond the paper, each Gaussian has a presence ``∈ [0, 1]`` at every grid time (a table of
logits, linear in between), which multiplies its opacity. Gaussians seeded from one time's
column (recon/seeds.py) are present at that time only, so an object that moves farther between
grid times than photometric gradients can pull a Gaussian is still in place at every time. A
table with no columns means present at all times.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fourreal.recon.deform import DeformConfig, DeformField
from fourreal.types import GaussianParams

SKIP_PRESENCE = 0.01
"""Gaussians whose presence at a time is below this are left out of that time's renders (and
get no gradient there)."""

PER_GAUSSIAN = ("means", "log_scales", "opacity_logits", "color_logits", "presence_logits")
"""Names of the per-Gaussian parameters (rows = Gaussians)."""


class DynamicGaussians(nn.Module):
    def __init__(
        self,
        means: Tensor,
        scales: Tensor,
        opacities: Tensor,
        colors: Tensor,
        view_offsets: Tensor,
        deform: DeformConfig,
        extent: float,
        presence: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.means = nn.Parameter(means.float().clone())
        self.log_scales = nn.Parameter(scales.float().clamp_min(1e-6).log())
        o = opacities.float().clamp(1e-4, 1 - 1e-4)
        self.opacity_logits = nn.Parameter(torch.log(o / (1 - o)))
        c = colors.float().clamp(1e-3, 1 - 1e-3)
        self.color_logits = nn.Parameter(torch.log(c / (1 - c)))
        self.register_buffer("view_offsets", view_offsets.float().clone())  # [V, N, 3]
        if presence is None:
            presence = torch.ones(means.shape[0], 0)
        q = presence.float().clamp(1e-4, 1 - 1e-4)
        self.presence_logits = nn.Parameter(torch.log(q / (1 - q)))  # [N, T] or [N, 0]
        self.deform = DeformField(deform, means.float().mean(0), extent)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> Tensor:
        return torch.sigmoid(self.color_logits)

    def presence(self, times: Tensor) -> Tensor:
        """Presence ``[B, N]`` at normalized ``times [B]`` (the grid's times spread evenly over
        [0, 1]; linear between them)."""
        N, T = self.presence_logits.shape
        times = times.reshape(-1).to(self.means.dtype)
        if T == 0:
            return torch.ones(len(times), N, dtype=self.means.dtype, device=self.means.device)
        table = torch.sigmoid(self.presence_logits)
        if T == 1:
            return table[:, 0].expand(len(times), N)
        x = times.clamp(0, 1) * (T - 1)
        lo = x.floor().long().clamp(max=T - 2)
        w = (x - lo)[:, None]
        return table[:, lo].T * (1 - w) + table[:, lo + 1].T * w

    def opacities_at(self, times: Tensor) -> Tensor:
        """Opacity times presence, ``[B, N]``; 0 where the presence is under
        :data:`SKIP_PRESENCE`, as in training renders."""
        presence = self.presence(times)
        return self.opacities[None] * torch.where(presence >= SKIP_PRESENCE, presence, 0.0)

    def positions(
        self,
        times: Tensor,
        views: Tensor | None = None,
        index: Tensor | None = None,
        offset_weight: float = 1.0,
    ) -> Tensor:
        """Positions ``[B, N, 3]`` at normalized ``times [B]``, with the offsets of ``views [B]``
        (None: no view offsets, as for display); of the Gaussians ``index`` only if given."""
        means = self.means if index is None else self.means[index]
        p = means[None] + self.deform(means, times)
        if views is not None and offset_weight != 0:
            offsets = self.view_offsets[views] * offset_weight
            p = p + (offsets if index is None else offsets[:, index])
        return p

    @torch.no_grad()
    def keep(self, mask: Tensor) -> None:
        """Keep only the Gaussians where ``mask`` is True (optimizer state must be rebuilt)."""
        for name in PER_GAUSSIAN:
            setattr(self, name, nn.Parameter(getattr(self, name)[mask].clone()))
        self.view_offsets = self.view_offsets[:, mask].clone()

    @torch.no_grad()
    def grow(self, parents: Tensor, split: Tensor, generator: torch.Generator) -> None:
        """Densify while staying isotropic: each of ``parents`` gets a copy. Where ``split`` is
        True (large Gaussians) parent and copy are both shrunk by 1.6 and the copy is moved to a
        random point of the parent's footprint; elsewhere the copy is a clone. The copies are
        appended (optimizer state must be extended)."""
        scales = self.scales[parents]
        jitter = torch.randn(len(parents), 3, generator=generator) * scales[:, None]
        new_means = self.means[parents] + jitter * split[:, None]
        shrink = torch.where(split, math.log(1.6), 0.0)
        self.log_scales[parents] -= shrink
        new = {
            "means": new_means,
            "log_scales": self.log_scales[parents],
            "opacity_logits": self.opacity_logits[parents],
            "color_logits": self.color_logits[parents],
            "presence_logits": self.presence_logits[parents],
        }
        for name, values in new.items():
            joined = torch.cat([getattr(self, name).detach(), values])
            setattr(self, name, nn.Parameter(joined))
        self.view_offsets = torch.cat([self.view_offsets, self.view_offsets[:, parents]], 1)

    @torch.no_grad()
    def canonical(self) -> GaussianParams:
        return GaussianParams.isotropic(self.means, self.scales, self.opacities, self.colors)

    @torch.no_grad()
    def at_time(self, time: float) -> GaussianParams:
        t = torch.tensor([time], dtype=self.means.dtype)
        means = self.positions(t)[0]
        opacities = self.opacities_at(t)[0]
        return GaussianParams.isotropic(means, self.scales, opacities, self.colors)
