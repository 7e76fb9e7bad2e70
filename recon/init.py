"""Canonical isotropic Gaussians from the dense 3D tracking of the freeze-time column."""

from __future__ import annotations

import torch
from torch import Tensor

from fourreal.recon.deform import DeformConfig
from fourreal.recon.model import DynamicGaussians
from fourreal.tracking.pipeline import ColumnTracks


def scene_extent(points: Tensor) -> float:
    """Robust size of a point set: the 90th percentile distance from its median."""
    center = points.median(dim=0).values
    return float((points - center).norm(dim=-1).quantile(0.9).clamp_min(1e-6))


def from_tracks(
    tracks: ColumnTracks,
    point_stride: int,
    scale_factor: float,
    opacity: float,
    deform: DeformConfig,
    use_view_offsets: bool = True,
) -> DynamicGaussians:
    """One Gaussian per tracked point: its canonical position and color, a standard deviation
    covering its pixel footprint (``scale_factor · point_stride · depth / focal`` in the keyframe it
    came from) and a fixed starting opacity. View offsets ``Δp_v`` come from tracking."""
    points = tracks.points.float()
    key = tracks.keyframe.long()
    cam = tracks.per_view[key, torch.arange(points.shape[0])]  # position in its keyframe
    depth = cam[:, 2].clamp_min(1e-6)
    focal = tracks.K[key, 0, 0].float()
    scales = scale_factor * point_stride * depth / focal
    offsets = tracks.offsets.float() if use_view_offsets else torch.zeros_like(tracks.offsets)
    return DynamicGaussians(
        points, scales, torch.full_like(scales, opacity), tracks.colors.float(), offsets,
        deform, scene_extent(points),
    )  # fmt: skip


def random_like(
    tracks: ColumnTracks, count: int, opacity: float, deform: DeformConfig, seed: int
) -> DynamicGaussians:
    """The ablation without tracking: ``count`` Gaussians uniform in the box of the tracked
    points, random colors, the same typical size, no view offsets."""
    g = torch.Generator().manual_seed(seed)
    points = tracks.points.float()
    lo, hi = points.quantile(0.02, dim=0), points.quantile(0.98, dim=0)
    means = lo + (hi - lo) * torch.rand(count, 3, generator=g)
    extent = scene_extent(points)
    scales = torch.full((count,), extent / count ** (1 / 3))
    colors = torch.rand(count, 3, generator=g)
    V = tracks.per_view.shape[0]
    return DynamicGaussians(
        means, scales, torch.full((count,), opacity), colors, torch.zeros(V, count, 3),
        deform, extent,
    )  # fmt: skip
