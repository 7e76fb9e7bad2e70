"""Canonical points in the central frame, their per-view positions and residual offsets
(paper supplement 6; design.md §5 step 1).

Points are lifted from keyframes (the central view first, then outward), dropping those that
a keyframe already taken sees on the same surface. Each point's track gives its position in
every view's own camera coordinates, lifted with that view's depth. The best rigid transform of
each view (canonical → that camera) leaves the residual offsets ``Δp_v``, expressed in canonical
coordinates: what the view disagrees with the canonical geometry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fourreal.tracking.depth import DenseDepth
from fourreal.tracking.flow import sample
from fourreal.tracking.geometry import project, transform, umeyama


def keyframe_order(views: int, central: int, stride: int) -> list[int]:
    keys = {central} | set(range(central % stride, views, stride)) | {0, views - 1}
    return sorted(keys, key=lambda v: (abs(v - central), v))


def canonical_points(
    frames: Tensor,
    K: Tensor,
    T_cam_world: Tensor,
    dense: DenseDepth,
    central: int,
    keyframe_stride: int = 2,
    point_stride: int = 2,
    duplicate_tolerance: float = 0.03,
) -> dict[str, Tensor]:
    """Returns ``points [N,3]`` (central camera coordinates), ``colors [N,3]``,
    ``keyframe [N]``, ``per_view [V,N,3]`` (each view's camera coordinates), ``visible [V,N]``,
    ``T_cam_canonical [V,4,4]`` (best rigid fit per view) and ``offsets [V,N,3]``."""
    V, _, H, W = frames.shape
    T_world_cam = torch.linalg.inv(T_cam_world.double())
    taken: list[int] = []
    chunks: dict[str, list[Tensor]] = {k: [] for k in ("points", "colors", "key", "pix")}
    ys = torch.arange(point_stride // 2, H, point_stride)
    xs = torch.arange(point_stride // 2, W, point_stride)
    jj, ii = torch.meshgrid(ys, xs, indexing="ij")
    jj, ii = jj.reshape(-1), ii.reshape(-1)
    for k in keyframe_order(V, central, keyframe_stride):
        d = dense.depth[k, jj, ii].double()
        keep = d > 0
        uv = torch.stack([ii, jj], -1).double() + 0.5
        rays = torch.cat([uv, torch.ones_like(uv[:, :1])], -1) @ torch.linalg.inv(K[k].double()).T
        world = transform(T_world_cam[k], rays * d[:, None])
        for other in taken:  # already represented by a keyframe that sees the same surface
            proj, z = project(K[other].double(), T_cam_world[other].double(), world)
            i = proj[:, 0].floor().long()
            j = proj[:, 1].floor().long()
            inside = (i >= 0) & (i < W) & (j >= 0) & (j < H) & (z > 0)
            d_other = dense.depth[other, j.clamp(0, H - 1), i.clamp(0, W - 1)].double()
            same = inside & (d_other > 0) & ((d_other - z).abs() <= duplicate_tolerance * z)
            keep &= ~same
        chunks["points"].append(world[keep])
        chunks["colors"].append(frames[k, :, jj[keep], ii[keep]].T)
        chunks["key"].append(torch.full((int(keep.sum()),), k))
        chunks["pix"].append(torch.stack([ii[keep], jj[keep]], -1))
        taken.append(k)
    points = torch.cat(chunks["points"])
    key = torch.cat(chunks["key"])
    pix = torch.cat(chunks["pix"])
    N = points.shape[0]

    # per-view positions: follow each point's track, lift with that view's depth
    per_view = torch.zeros(V, N, 3, dtype=torch.float64)
    visible = torch.zeros(V, N, dtype=torch.bool)
    for k in key.unique().tolist():
        sel = torch.nonzero(key == k).squeeze(1)
        i, j = pix[sel, 0], pix[sel, 1]
        pos = dense.tracks[k][:, j, i]  # [V, n, 2] index coordinates
        alive = dense.visible[k][:, j, i]
        for v in range(V):
            d = sample(dense.depth[v][None, None], pos[v][None])[0, :, 0].double()
            valid_d = sample((dense.depth[v] > 0).float()[None, None], pos[v][None])[0, :, 0] > 0.99
            uv = pos[v].double() + 0.5
            rays = torch.cat([uv, torch.ones_like(uv[:, :1])], -1)
            rays = rays @ torch.linalg.inv(K[v].double()).T
            cam = rays * d[:, None]
            expected = transform(T_cam_world[v].double(), points[sel])
            agree = (cam[:, 2] - expected[:, 2]).abs() <= duplicate_tolerance * expected[:, 2]
            ok = alive[v] & valid_d & agree
            per_view[v, sel] = torch.where(ok[:, None], cam, expected)
            visible[v, sel] = ok

    T_cam_canonical = torch.eye(4, dtype=torch.float64).repeat(V, 1, 1)
    offsets = torch.zeros(V, N, 3, dtype=torch.float64)
    for v in range(V):
        T_cam_canonical[v] = _robust_rigid(points, per_view[v], visible[v], T_cam_world[v])
        back = transform(torch.linalg.inv(T_cam_canonical[v]), per_view[v])
        offsets[v] = torch.where(visible[v, :, None], back - points, torch.zeros_like(points))
    colors = torch.cat(chunks["colors"]).float()
    return {
        "points": points.float(),
        "colors": colors,
        "keyframe": key,
        "per_view": per_view.float(),
        "visible": visible,
        "T_cam_canonical": T_cam_canonical.float(),
        "offsets": offsets.float(),
    }


def _robust_rigid(src: Tensor, dst: Tensor, mask: Tensor, fallback: Tensor) -> Tensor:
    """Rigid ``T`` with ``dst ≈ T·src`` over ``mask``, refit on the best 80% once."""
    T = fallback.double().clone()
    if int(mask.sum()) < 10:
        return T
    a, b = src[mask].double(), dst[mask].double()
    use = torch.ones(a.shape[0], dtype=torch.bool)
    for _ in range(2):
        _, R, t = umeyama(a[use], b[use], with_scale=False)
        err = (a @ R.T + t - b).norm(dim=-1)
        use = err <= err.quantile(0.8)
    T[:3, :3], T[:3, 3] = R, t
    return T
