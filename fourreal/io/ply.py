"""PLY files: colored point clouds (binary little endian, opens in MeshLab, open3d, trimesh)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fourreal.errors import ShapeError
from fourreal.io.atomic import atomic_file


def write_point_ply(
    path: str | os.PathLike[str], points: torch.Tensor, colors: torch.Tensor
) -> Path:
    """Write ``points [N, 3]`` (float32 x, y, z) with ``colors [N, 3]`` in [0, 1] (uchar red,
    green, blue) as a binary PLY, atomically."""
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ShapeError(f"points and colors must both be [N, 3], got {list(points.shape)} and "
                         f"{list(colors.shape)}")  # fmt: skip
    n = points.shape[0]
    vertex = np.empty(
        n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                  ("blue", "u1")],
    )  # fmt: skip
    xyz = points.detach().cpu().float().numpy()
    rgb = (colors.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for k, name in enumerate("xyz"):
        vertex[name] = xyz[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, k]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by fourreal\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertex.tobytes())
    return path
