"""Small scenes for the viewer tests, written straight to disk in fourreal's formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from fourreal.io import write_ply
from fourreal.recon.deform import DeformConfig, DeformField
from fourreal.types import GaussianParams

SHIFT = 0.8  # the dynamic scene moves this far along +x between its first and last time


def blob(n: int = 2000, seed: int = 0, radius: float = 0.3) -> GaussianParams:
    """A ball of small, saturated red and green Gaussians around the origin."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, 3, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    means = direction * radius * torch.rand(n, 1, generator=g) ** (1 / 3)
    colors = torch.zeros(n, 3)
    colors[: n // 2, 0] = 0.9
    colors[n // 2 :, 1] = 0.8
    scales = torch.full((n,), 0.035)
    return GaussianParams.isotropic(means, scales, torch.full((n,), 0.9), colors)


def translating_field(shift: float = SHIFT) -> DeformField:
    """A deformation field whose offset is exactly ``(shift · t, 0, 0)`` for t in [0, 1]."""
    config = DeformConfig(pos_freqs=1, time_freqs=1, width=8, depth=2)
    field = DeformField(config, torch.zeros(3), 1.0)
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
        field.first_time.weight[0, 0] = 1.0  # h0 = relu(t) = t; the raw t is the code's first entry
        field.hidden[0].weight[0, 0] = 1.0
        field.last.weight[0, 0] = shift
    return field


def look_at(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_cam`` (OpenCV axes) of a camera at ``position`` looking at ``target``."""
    position, target, up = (np.asarray(x, dtype=np.float64) for x in (position, target, up))
    z = target - position
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = position
    return T


def write_dynamic_scene(folder: Path, times: int = 5, n: int = 2000) -> Path:
    """A fourreal scene folder: a blob moving along +x, seen by two cameras from -y."""
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(blob(n), folder / "scene.ply")
    field = translating_field()
    save_file(
        {k: v.contiguous() for k, v in field.state_dict().items()},
        folder / "deform.safetensors",
        metadata={"format": "fourreal-deform", "config": json.dumps(field.config.to_dict())},
    )
    width, height = 320, 240
    f = 0.5 * width / math.tan(math.radians(25))
    K = [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]
    target = (SHIFT / 2, 0.0, 0.0)
    poses = [look_at((SHIFT / 2, -3.0, 0.6), target), look_at((SHIFT / 2 + 1.5, -2.6, 0.6), target)]
    meta = {
        "format": "fourreal-scene",
        "version": 1,
        "times": [t / (times - 1) for t in range(times)],
        "cameras": {"width": width, "height": height, "K": [K, K],
                    "T_world_cam": [p.tolist() for p in poses]},
        "num_gaussians": n,
    }  # fmt: skip
    (folder / "scene.json").write_text(json.dumps(meta))
    return folder / "scene.ply"
