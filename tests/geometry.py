"""Test helpers: move pixels between views with depth and cameras."""

import torch
import torch.nn.functional as F


def reproject(grid, a: int, b: int, t: int):
    """Lift view ``a``'s pixels (time ``t``) with their depth and project them into view ``b``.

    Returns ``(colors_a [M,3], colors_b [M,3])`` for the pixels seen by both views (same surface
    within 1% of depth in ``b``, away from depth edges), colors of ``b`` sampled bilinearly.
    """
    cams = grid.cameras
    H, W = grid.height, grid.width
    depth_a = grid.depth[a, t].double()
    j, i = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5,
        torch.arange(W, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([i, j, torch.ones_like(i)], -1)
    ray = pix @ torch.linalg.inv(cams.K[a]).T
    X_cam_a = ray * depth_a[..., None]
    X_world = X_cam_a @ cams.T_world_cam[a, :3, :3].T + cams.T_world_cam[a, :3, 3]
    T_cam_world_b = torch.linalg.inv(cams.T_world_cam[b])
    X_cam_b = X_world @ T_cam_world_b[:3, :3].T + T_cam_world_b[:3, 3]
    z_b = X_cam_b[..., 2]
    uv = X_cam_b[..., :2] / z_b[..., None] @ cams.K[b, :2, :2].T + cams.K[b, :2, 2]
    inside = (depth_a > 0) & (uv[..., 0] > 1) & (uv[..., 0] < W - 1) & (uv[..., 1] > 1)
    inside &= uv[..., 1] < H - 1
    # the surface seen by b at that pixel must be the same point: compare with the depth there,
    # and stay away from depth edges, where bilinear colors mix two surfaces
    depth_b = grid.depth[b, t].double()
    ii = uv[..., 0].clamp(0, W - 1).long()
    jj = uv[..., 1].clamp(0, H - 1).long()
    same = inside.clone()
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            near = depth_b[(jj + dj).clamp(0, H - 1), (ii + di).clamp(0, W - 1)]
            same &= (near - z_b).abs() <= 0.01 * z_b
    norm = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1).float()
    sampled = F.grid_sample(
        grid.frames[b, t][None], norm[None], mode="bilinear", align_corners=False
    )[0]
    colors_a = grid.frames[a, t].permute(1, 2, 0)[same]
    colors_b = sampled.permute(1, 2, 0)[same]
    return colors_a, colors_b
