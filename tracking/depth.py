"""Dense depth of every view of the column by triangulating multi-view flow tracks.

Every pixel of a view is followed through the chained neighbour flow into all other views and
triangulated with the estimated cameras. Its confidence needs: seen by at least
``min_views`` views, reprojection RMS under ``max_rms_px``, a triangulation angle of at least
``min_angle_deg`` between the rays, and texture at the pixel (flat regions have interpolated
flow and no real match).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fourreal.tracking.chains import chain, pixel_grid
from fourreal.tracking.geometry import project, transform, triangulate


@dataclass(frozen=True)
class DepthConfig:
    min_views: int = 3
    max_rms_px: float = 1.0
    min_angle_deg: float = 2.0
    min_texture: float = 0.0005
    """Minimum Shi–Tomasi score relative to the frame's 99th percentile (the score grows with the
    square of the contrast: 0.0005 keeps dim but textured surfaces, drops flat background)."""


@dataclass
class DenseDepth:
    depth: Float[Tensor, "V H W"]  # camera z, 0 where not confident
    confidence: Float[Tensor, "V H W"]  # in [0, 1]
    tracks: Float[Tensor, "V V H W 2"]  # index-coordinate position in every view of each pixel
    visible: Bool[Tensor, "V V H W"]


def triangulate_views(
    K: Tensor,
    T_cam_world: Tensor,
    flows: tuple[Tensor, Tensor, Tensor, Tensor],
    texture: Tensor,
    config: DepthConfig = DepthConfig(),
) -> DenseDepth:
    """Depth maps of all views from the neighbour flows ``(forward, backward, ok_fw, ok_bw)``."""
    forward, backward, ok_fw, ok_bw = flows
    V = forward.shape[0] + 1
    H, W = forward.shape[-2:]
    pixels = pixel_grid(H, W, 1)
    depth = torch.zeros(V, H, W)
    confidence = torch.zeros(V, H, W)
    tracks = torch.zeros(V, V, H, W, 2)
    visible = torch.zeros(V, V, H, W, dtype=torch.bool)
    centers = torch.linalg.inv(T_cam_world.double())[:, :3, 3]
    for k in range(V):
        pos, vis = chain(k, pixels, forward, backward, ok_fw, ok_bw)
        uv = pos.double() + 0.5
        points, ok = triangulate(K, T_cam_world, uv, vis)
        proj, z = project(K.double(), T_cam_world.double(), points)
        err = (proj - uv).norm(dim=-1)
        err = torch.where(vis, err, torch.zeros_like(err))
        n_views = vis.sum(0)
        rms = (err.pow(2).sum(0) / n_views.clamp_min(1)).sqrt()
        rays = centers[:, None] - points[None]  # [V, M, 3]
        rays = rays / rays.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cos = (rays[k][None] * rays).sum(-1)
        cos = torch.where(vis, cos, torch.ones_like(cos))
        angle = torch.rad2deg(torch.arccos(cos.min(0).values.clamp(-1, 1)))
        z_k = transform(T_cam_world[k].double(), points)[:, 2]
        good = ok & (n_views >= config.min_views) & (rms <= config.max_rms_px)
        good &= (angle >= config.min_angle_deg) & (z_k > 0) & (z > 0).where(vis, True).all(0)
        good &= texture[k].reshape(-1) >= config.min_texture
        depth[k] = torch.where(good, z_k, torch.zeros_like(z_k)).float().reshape(H, W)
        score = (1 - rms / config.max_rms_px).clamp(0, 1) * (n_views / V)
        confidence[k] = torch.where(good, score, torch.zeros_like(score)).float().reshape(H, W)
        tracks[k] = pos.reshape(V, H, W, 2)
        visible[k] = vis.reshape(V, H, W)
    return DenseDepth(depth, confidence, tracks, visible)
