"""Accuracy of column tracking against ground truth (synthetic grids).

Poses are compared after aligning the estimate to the truth: a similarity (Umeyama) on the camera
centers for the center error, and the best global rotation for the rotation error, so neither
depends on the estimate's arbitrary world frame and scale. Depth is compared on the canonical
points that the central view sees, after one global scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fourreal.tracking.geometry import project, rotation_angle_deg, umeyama
from fourreal.tracking.pipeline import ColumnTracks


def pose_errors(T_world_cam: Tensor, gt_T_world_cam: Tensor, radius: float) -> dict[str, Tensor]:
    """Per-view rotation error (degrees) and camera-center error (fraction of ``radius``)."""
    est, gt = T_world_cam.double(), gt_T_world_cam.double()
    s, R, t = umeyama(est[:, :3, 3], gt[:, :3, 3])
    center = (s * est[:, :3, 3] @ R.T + t - gt[:, :3, 3]).norm(dim=-1) / radius
    U, _, Vh = torch.linalg.svd((gt[:, :3, :3] @ est[:, :3, :3].transpose(1, 2)).sum(0))
    D = torch.eye(3, dtype=torch.float64)
    D[2, 2] = torch.sign(torch.det(U @ Vh))
    align = U @ D @ Vh
    rotation = rotation_angle_deg(align @ est[:, :3, :3], gt[:, :3, :3])
    return {"rotation_deg": rotation, "center_fraction": center}


def depth_errors(tracks: ColumnTracks, gt_depth_central: Tensor) -> dict[str, float]:
    """Relative depth error of the canonical points seen by the central view, against that
    view's true depth at their pixels, after the best global scale."""
    c = tracks.central
    H, W = gt_depth_central.shape
    sel = tracks.visible[c]
    uv, z = project(tracks.K[c].double(), torch.eye(4, dtype=torch.float64), tracks.points.double())
    i, j = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    sel &= (i >= 0) & (i < W) & (j >= 0) & (j < H) & (z > 0)
    truth = gt_depth_central[j.clamp(0, H - 1), i.clamp(0, W - 1)].double()
    sel &= truth > 0
    scale = (truth[sel] / z[sel]).median()
    rel = (scale * z[sel] - truth[sel]).abs() / truth[sel]
    return {
        "median_rel_error": float(rel.median()),
        "outlier_fraction": float((rel > 0.05).double().mean()),
        "points_evaluated": float(sel.sum()),
        "scale": float(scale),
    }
