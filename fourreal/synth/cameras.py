"""Cameras for synthetic scenes: pinhole intrinsics and look-at poses on a circular arc.

World frame of the synthetic scenes: z up, ground plane z = 0. Cameras follow OpenCV (x right,
y down, z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from fourreal.types import Cameras


@dataclass(frozen=True)
class ArcConfig:
    """Cameras on a horizontal circular arc around ``look_at``, all looking at it."""

    arc_deg: float = 60.0
    """Angle covered by the arc from the first to the last view, in degrees."""
    radius: float = 3.4
    """Horizontal distance of the cameras from the look-at point, in world units."""
    height: float = 1.5
    """Height of the cameras above the ground (z), in world units."""
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.3)
    """The point every camera looks at."""
    azimuth_deg: float = -90.0
    """Azimuth of the middle of the arc (degrees, counter-clockwise from +x)."""
    fov_deg: float = 50.0
    """Horizontal field of view, in degrees."""


def intrinsics(width: int, height: int, fov_deg: float) -> Float[Tensor, "3 3"]:
    """Pinhole intrinsics with square pixels and the principal point at the image center."""
    fx = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor(
        [[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def look_at_pose(
    eye: Float[Tensor, "3"], target: Float[Tensor, "3"], up: Float[Tensor, "3"] | None = None
) -> Float[Tensor, "4 4"]:
    """``T_world_cam`` of an OpenCV camera at ``eye`` looking at ``target`` (world z up)."""
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype) if up is None else up
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    T_world_cam = torch.eye(4, dtype=eye.dtype)
    T_world_cam[:3, 0] = right
    T_world_cam[:3, 1] = down
    T_world_cam[:3, 2] = forward
    T_world_cam[:3, 3] = eye
    return T_world_cam


def arc_cameras(views: int, width: int, height: int, arc: ArcConfig | None = None) -> Cameras:
    """``views`` cameras evenly spaced on the arc; view 0 at one end (the freeze-time sweep)."""
    arc = arc or ArcConfig()
    target = torch.tensor(arc.look_at, dtype=torch.float64)
    fractions = torch.linspace(-0.5, 0.5, views, dtype=torch.float64) if views > 1 else None
    poses = []
    for v in range(views):
        offset = 0.0 if fractions is None else float(fractions[v]) * arc.arc_deg
        azimuth = math.radians(arc.azimuth_deg + offset)
        eye = torch.tensor(
            [
                target[0] + arc.radius * math.cos(azimuth),
                target[1] + arc.radius * math.sin(azimuth),
                arc.height,
            ],
            dtype=torch.float64,
        )
        poses.append(look_at_pose(eye, target))
    K = intrinsics(width, height, arc.fov_deg).expand(views, 3, 3).clone()
    return Cameras(K=K, T_world_cam=torch.stack(poses))


def camera_rays(
    K: Float[Tensor, "3 3"], T_world_cam: Float[Tensor, "4 4"], width: int, height: int
) -> tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 3"]]:
    """World-space ray origins and directions through pixel centers ``(i + 0.5, j + 0.5)``.

    Directions are scaled so that their camera-z component is 1: the ray parameter of a hit is
    then its camera depth z.
    """
    dtype = T_world_cam.dtype
    j, i = torch.meshgrid(
        torch.arange(height, dtype=dtype) + 0.5,
        torch.arange(width, dtype=dtype) + 0.5,
        indexing="ij",
    )
    dirs_cam = torch.stack(
        [(i - K[0, 2]) / K[0, 0], (j - K[1, 2]) / K[1, 1], torch.ones_like(i)], dim=-1
    )
    dirs = dirs_cam @ T_world_cam[:3, :3].T
    origins = T_world_cam[:3, 3].expand_as(dirs)
    return origins, dirs
