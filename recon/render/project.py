"""Projection of isotropic 3D Gaussians to 2D (design.md §6), differentiable by autograd.

Everything here is exact to the renderer contract: near plane 0.01, Jacobian with the
normalized coordinates clamped to 1.3× the half-FOV tangents, low-pass 0.3 px², and a footprint
that covers every pixel a Gaussian can touch (Mahalanobis² ≤ 9 and α ≥ 1/255).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

NEAR = 0.01
LOW_PASS = 0.3
FOV_CLAMP = 1.3
MAHALANOBIS_MAX = 9.0
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4


@dataclass
class Projected:
    """Per camera and Gaussian: screen position, inverse 2D covariance, depth, footprint."""

    mean2d: Float[Tensor, "C N 2"]  # pixels
    conic: Float[Tensor, "C N 3"]  # (a, b, c) of Σ⁻¹ = [[a, b], [b, c]]
    depth: Float[Tensor, "C N"]  # camera z
    radius: Float[Tensor, "C N 2"]  # half extents of the footprint box in pixels (no grad)
    visible: Bool[Tensor, "C N"]  # in front of the near plane and opaque enough to count


def project(
    means: Float[Tensor, "N 3"],
    scales: Float[Tensor, " N"],
    opacities: Float[Tensor, " N"],
    T_cam_world: Float[Tensor, "C 4 4"],
    K: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
) -> Projected:
    R = T_cam_world[:, :3, :3]
    p = torch.einsum("cij,nj->cni", R, means) + T_cam_world[:, None, :3, 3]  # [C, N, 3]
    x, y, z = p.unbind(-1)
    visible = z > NEAR
    z_safe = torch.where(visible, z, torch.ones_like(z))  # keeps culled entries finite
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    x_n, y_n = x / z_safe, y / z_safe
    mean2d = torch.stack([fx * x_n + cx, fy * y_n + cy], dim=-1)

    lim_x = FOV_CLAMP * width / (2 * fx)
    lim_y = FOV_CLAMP * height / (2 * fy)
    x_c = torch.maximum(torch.minimum(x_n, lim_x), -lim_x)
    y_c = torch.maximum(torch.minimum(y_n, lim_y), -lim_y)
    # J = [[fx/z, 0, -fx x'/z], [0, fy/z, -fy y'/z]]; Σ2D = s² J Jᵀ + 0.3 I
    j00, j02 = fx / z_safe, -fx * x_c / z_safe
    j11, j12 = fy / z_safe, -fy * y_c / z_safe
    s2 = (scales * scales)[None]
    cov_xx = s2 * (j00 * j00 + j02 * j02) + LOW_PASS
    cov_xy = s2 * (j02 * j12)
    cov_yy = s2 * (j11 * j11 + j12 * j12) + LOW_PASS
    det = cov_xx * cov_yy - cov_xy * cov_xy
    conic = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)

    with torch.no_grad():
        # α = o·exp(-m/2) ≥ 1/255 needs m ≤ 2 ln(255 o): a tighter footprint than 3σ for faint
        # Gaussians, and none at all below o = 1/255. The pixel test stays exact either way.
        o = opacities.detach()[None].expand_as(z)
        reach = torch.clamp(2 * torch.log((o * 255).clamp_min(1e-30)), max=MAHALANOBIS_MAX)
        visible = visible & (reach >= 0)
        reach = reach.clamp_min(0)
        radius = torch.stack([torch.sqrt(reach * cov_xx), torch.sqrt(reach * cov_yy)], dim=-1)
        radius = torch.where(visible[..., None], radius, torch.zeros_like(radius))
    return Projected(mean2d, conic, z, radius.detach(), visible)


def footprint_tiles(
    proj: Projected, width: int, height: int, tile: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Inclusive tile ranges ``(x0, y0)``, ``(x1, y1)`` touched by each Gaussian and a mask of
    those that touch the image at all. Pixel ``i`` is touched where ``|i + 0.5 - u| ≤ r``."""
    with torch.no_grad():
        center = proj.mean2d.detach()
        lo = torch.ceil(center - proj.radius - 0.5)
        hi = torch.floor(center + proj.radius - 0.5)
        size = torch.tensor([width - 1, height - 1], dtype=lo.dtype, device=lo.device)
        hit = proj.visible & (hi >= 0).all(-1) & (lo <= size).all(-1) & (hi >= lo).all(-1)
        lo = torch.minimum(torch.maximum(lo, torch.zeros_like(lo)), size)
        hi = torch.minimum(torch.maximum(hi, torch.zeros_like(hi)), size)
        return (lo / tile).floor().long(), (hi / tile).floor().long(), hit


def tiles_per_axis(width: int, height: int, tile: int) -> tuple[int, int]:
    return math.ceil(width / tile), math.ceil(height / tile)
