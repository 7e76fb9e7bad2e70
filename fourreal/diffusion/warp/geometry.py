"""Depth maps to points and back, for whole images (camera pixel coordinates, centers at
``i + 0.5``)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from fourreal.tracking.geometry import project, to_homogeneous, transform


def pixel_centers(height: int, width: int) -> Float[Tensor, "HW 2"]:
    """``(x, y)`` camera pixel coordinates of every pixel, row-major."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([x + 0.5, y + 0.5], -1).reshape(-1, 2)


def unproject_at(
    K: Float[Tensor, "3 3"], T_world_cam: Float[Tensor, "4 4"], uv: Tensor, depth: Tensor
) -> Float[Tensor, "M 3"]:
    """World points of pixel positions ``uv [M, 2]`` at camera depths ``depth [M]``."""
    rays = to_homogeneous(uv.double()) @ torch.linalg.inv(K.double()).T
    return transform(T_world_cam.double(), rays * depth.double().reshape(-1, 1))


def unproject_map(
    K: Float[Tensor, "3 3"], T_world_cam: Float[Tensor, "4 4"], depth: Float[Tensor, "H W"]
) -> Float[Tensor, "HW 3"]:
    """World point of every pixel of a depth map."""
    return unproject_at(K, T_world_cam, pixel_centers(*depth.shape), depth.reshape(-1))


def lookup(
    K: Float[Tensor, "3 3"],
    T_cam_world: Float[Tensor, "4 4"],
    points: Float[Tensor, "M 3"],
    depth: Float[Tensor, "H W"],
    rel_tol: float,
) -> tuple[Tensor, Tensor]:
    """Where ``points`` fall in a camera with depth map ``depth``: the flat pixel index of each
    (nearest pixel) and whether the point is the surface seen there (depth within
    ``rel_tol``)."""
    H, W = depth.shape
    uv, z = project(K.double(), T_cam_world.double(), points)
    ix = (uv[:, 0] - 0.5).round().long()
    iy = (uv[:, 1] - 0.5).round().long()
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & (z > 0)
    index = iy.clamp(0, H - 1) * W + ix.clamp(0, W - 1)
    seen = depth.reshape(-1)[index].double()
    return index, inside & ((z - seen).abs() <= rel_tol * z)
