"""Dense 3D tracking of the freeze-time column, end to end: :func:`track_column`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.tracking.canonical import canonical_points
from fourreal.tracking.chains import chain, pixel_grid
from fourreal.tracking.depth import DenseDepth, DepthConfig, triangulate_views
from fourreal.tracking.flow import FlowModel, neighbour_flows, texture_score
from fourreal.tracking.poses import estimate_poses


@dataclass(frozen=True)
class TrackConfig:
    """Settings of :func:`track_column`."""

    depth: Literal["triangulate", "gt", "mono"] = "triangulate"
    """Where depth comes from: multi-view triangulation, the grid's own depth maps, or
    triangulation filled in by a learned monocular depth model aligned to it (``mono_model``)."""
    mono_model: str | None = None
    """Local folder of a transformers depth model (Depth Anything) for ``depth="mono"``."""
    track_stride: int = 4
    """Spacing in pixels of the tracks used to estimate the cameras."""
    min_texture: float = 0.05
    """Tracks for the cameras start only where the Shi–Tomasi score is at least this fraction of
    the frame's 99th percentile."""
    keyframe_stride: int = 2
    """Every this many views is a keyframe that contributes points (the central view always)."""
    point_stride: int = 2
    """Spacing in pixels of the canonical points taken from each keyframe."""
    assumed_fov_deg: tuple[float, ...] = (40.0, 55.0, 70.0)
    """Horizontal fields of view tried when the intrinsics are unknown (the best fit wins)."""
    dense: DepthConfig = field(default_factory=DepthConfig)


@dataclass
class ColumnTracks:
    """Everything tracking gives the reconstruction; world = central camera (canonical frame).

    Scale: with triangulated depth the median depth of the track points in the central view is
    1; with ``depth="gt"`` it is that of the given depth maps.
    """

    central: int
    K: Tensor  # [V, 3, 3]
    T_world_cam: Tensor  # [V, 4, 4], identity at the central view
    points: Tensor  # [N, 3] canonical (central camera coordinates)
    colors: Tensor  # [N, 3]
    keyframe: Tensor  # [N] the view each point was lifted from
    per_view: Tensor  # [V, N, 3] each point in view v's camera coordinates
    visible: Tensor  # [V, N]
    T_cam_canonical: Tensor  # [V, 4, 4] best rigid fit canonical -> view camera
    offsets: Tensor  # [V, N, 3] residual offsets Δp_v in canonical coordinates
    depth: Tensor  # [V, H, W] depth maps used (camera z, 0 = unknown)
    confidence: Tensor  # [V, H, W]
    stats: dict[str, float]

    def tensors(self) -> dict[str, Tensor]:
        names = ("K", "T_world_cam", "points", "colors", "keyframe", "per_view", "visible")
        names += ("T_cam_canonical", "offsets", "depth", "confidence")
        return {name: getattr(self, name).contiguous() for name in names}


def check_column(frames: Tensor) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise FourrealError(f"the column must be [V, 3, H, W], got {list(frames.shape)}")
    if frames.shape[0] < 2:
        raise FourrealError(
            "tracking needs a freeze-time column of at least 2 views (3 or more for reliable "
            f"depth); this grid has {frames.shape[0]}"
        )
    if not bool(torch.isfinite(frames).all()):
        raise FourrealError("the freeze-time column contains NaN or infinite pixel values")


def track_column(
    frames: Tensor,
    K: Tensor | None = None,
    gt_depth: Tensor | None = None,
    config: TrackConfig = TrackConfig(),
    flow_model: FlowModel | None = None,
) -> ColumnTracks:
    """Track the freeze-time column ``frames [V, 3, H, W]`` (grid column t = 0).

    ``K`` ``[V, 3, 3]`` or ``[3, 3]`` when the intrinsics are known (else one focal length is
    estimated, principal point at the image center). ``gt_depth [V, H, W]`` is used when
    ``config.depth == "gt"``.
    """
    check_column(frames)
    V, _, H, W = frames.shape
    central = V // 2
    stats: dict[str, float] = {}
    start = time.perf_counter()
    flows = neighbour_flows(frames, flow_model)
    motion = flows[0].norm(dim=1).flatten(1).median(dim=1).values
    if bool((motion < 0.2).any()):
        v = int(torch.argmin(motion))
        raise FourrealError(
            f"views {v} and {v + 1} of the freeze-time column barely differ (median flow "
            f"{float(motion[v]):.2f} px): tracking needs a moving camera"
        )
    texture = texture_score(frames)
    stats["flow_s"] = time.perf_counter() - start

    uv, visible = _camera_tracks(flows, texture, config)
    if K is not None:
        K = K.double().expand(V, 3, 3).clone() if K.ndim == 2 else K.double()
    poses = estimate_poses(K, uv, visible, W, H, central, config.assumed_fov_deg)
    K_est, T_cam_world = poses.K, poses.T_cam_world
    stats.update(ba_rms_px=poses.rms_px, ba_inliers=poses.inlier_fraction)
    stats["focal_px"] = float(K_est[0, 0, 0])
    stats["poses_s"] = time.perf_counter() - start - stats["flow_s"]

    dense = triangulate_views(K_est, T_cam_world, flows, texture, config.dense)
    if config.depth == "gt":
        if gt_depth is None:
            raise FourrealError("depth='gt' needs the grid's depth maps (depth_pattern)")
        scale = _scale_to(dense.depth, gt_depth)
        T_cam_world = T_cam_world.clone()
        T_cam_world[:, :3, 3] *= scale
        confidence = (gt_depth > 0).float()
        dense = DenseDepth(gt_depth.float(), confidence, dense.tracks, dense.visible)
        stats["gt_scale"] = scale
    if config.depth == "mono":
        dense = _fill_with_mono(frames, dense, config)
    stats["dense_fraction"] = float((dense.depth > 0).float().mean())
    canon = canonical_points(
        frames, K_est, T_cam_world, dense, central, config.keyframe_stride, config.point_stride
    )
    stats["num_points"] = float(canon["points"].shape[0])
    stats["seconds"] = time.perf_counter() - start
    return ColumnTracks(
        central=central,
        K=K_est.float(),
        T_world_cam=torch.linalg.inv(T_cam_world).float(),
        depth=dense.depth,
        confidence=dense.confidence,
        stats=stats,
        **canon,
    )


def _camera_tracks(flows, texture: Tensor, config: TrackConfig) -> tuple[Tensor, Tensor]:
    forward, backward, ok_fw, ok_bw = flows
    V = forward.shape[0] + 1
    H, W = forward.shape[-2:]
    grid = pixel_grid(H, W, config.track_stride, config.track_stride // 2)
    uvs, viss = [], []
    for k in range(V):
        score = texture[k, grid[:, 1].long(), grid[:, 0].long()]
        pos, vis = chain(k, grid[score >= config.min_texture], forward, backward, ok_fw, ok_bw)
        uvs.append(pos)
        viss.append(vis)
    uv = torch.cat(uvs, 1) + 0.5  # index -> camera pixel coordinates
    visible = torch.cat(viss, 1)
    visible &= visible.sum(0, keepdim=True) >= 2
    return uv.double(), visible


def _fill_with_mono(frames: Tensor, dense: DenseDepth, config: TrackConfig) -> DenseDepth:
    """Where triangulation is not confident, use the monocular depth aligned (scale and shift in
    inverse depth) to the triangulated depth of the same view."""
    from fourreal.tracking.mono import MonoDepth, align_inverse_depth

    if config.mono_model is None:
        raise FourrealError("depth='mono' needs mono_model: the local folder of a depth model")
    disparity = MonoDepth(config.mono_model)(frames)
    depth, confidence = dense.depth.clone(), dense.confidence.clone()
    for v in range(frames.shape[0]):
        aligned = align_inverse_depth(disparity[v], dense.depth[v])
        fill = (depth[v] == 0) & (aligned > 0)
        depth[v][fill] = aligned[fill]
        confidence[v][fill] = 0.25  # below any triangulated pixel's
    return DenseDepth(depth, confidence, dense.tracks, dense.visible)


def _scale_to(estimated: Tensor, reference: Tensor) -> float:
    both = (estimated > 0) & (reference > 0)
    if int(both.sum()) < 10:
        raise FourrealError("too few pixels with both estimated and given depth to fix the scale")
    return float((reference[both] / estimated[both]).median())


def focal_from_fov(width: int, fov_deg: float) -> float:
    return 0.5 * width / math.tan(math.radians(fov_deg) / 2)
