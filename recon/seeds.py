"""Per-time seeds: Gaussians for what moved, lifted from each time's own column.

Every grid row is a video from one fixed camera, so the pixels of frame ``(v, t)`` that differ
from frame ``(v, 0)`` mark what moved (or was uncovered) by time t. Every column is a multi-view
set seen by the same cameras as the freeze-time column, so triangulating its flow with the
cameras tracking estimated from column 0 lifts those changed pixels to 3D at time t.

The lifted points become Gaussians that are present at their time only (the presence table of
:class:`~fourreal.recon.model.DynamicGaussians`), and the canonical Gaussians are made absent at
the times where the training views that saw them show something else. The deformation field is
then left with the motion within a time step, which photometric gradients can follow; without
seeds, an object that moves farther than its own size between grid times fades instead.

Held-out frames are never used: each column is lifted from its training views only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.tracking.canonical import canonical_points
from fourreal.tracking.depth import DenseDepth, DepthConfig, triangulate_views
from fourreal.tracking.flow import neighbour_flows, texture_score
from fourreal.tracking.geometry import project

log = logging.getLogger("fourreal.recon")

PRESENT, ABSENT = 0.98, 0.003
"""Starting presence of a Gaussian at a time where it is, and is not, seen. Absent is below
:data:`~fourreal.recon.model.SKIP_PRESENCE`, so absent Gaussians cost nothing when rendering."""


@dataclass
class TimeSeeds:
    """Gaussians lifted from the changed pixels of columns ``t > 0`` (all in canonical
    coordinates), and the starting presence table of the canonical Gaussians."""

    points: Tensor  # [M, 3]
    colors: Tensor  # [M, 3]
    scales: Tensor  # [M]
    offsets: Tensor  # [V, M, 3] view offsets (zero for views not used at their time)
    time: Tensor  # [M] grid time index each was lifted at
    canonical_presence: Tensor  # [N, T]

    def presence(self, times: int) -> Tensor:
        """Starting presence ``[M, T]`` of the seeds: at their own time only."""
        table = torch.full((len(self.time), times), ABSENT)
        table[torch.arange(len(self.time)), self.time] = PRESENT
        return table


def changed_pixels(frames: Tensor, threshold: float, dilate: int) -> Tensor:
    """``[V, T, H, W]``: where frame ``(v, t)`` differs from ``(v, 0)`` by more than
    ``threshold`` in some channel, grown by ``dilate`` pixels (False at t = 0)."""
    diff = (frames - frames[:, :1]).abs().amax(2)  # [V, T, H, W]
    changed = (diff > threshold).float()
    if dilate > 0:
        k = 2 * dilate + 1
        changed = F.max_pool2d(changed.flatten(0, 1)[:, None], k, 1, dilate)[:, 0]
        changed = changed.reshape(diff.shape)
    return changed > 0


def time_seeds(
    frames: Tensor,
    K: Tensor,
    T_world_cam: Tensor,
    canonical: Tensor,
    depth: Tensor,
    holdout: list[tuple[int, int]],
    threshold: float = 0.05,
    dilate: int = 2,
    point_stride: int = 1,
    keyframe_stride: int = 2,
    scale_factor: float = 0.7,
    progress: bool = False,
) -> TimeSeeds:
    """Seeds for the grid ``frames [V, T, 3, H, W]`` seen by cameras ``K, T_world_cam`` (the
    tracked ones, canonical frame). ``canonical [N, 3]`` are the canonical Gaussians and
    ``depth [V, H, W]`` the column's depth maps from tracking (0 = unknown), which say which
    views saw them."""
    V, T, _, H, W = frames.shape
    held = set(holdout)
    changed = changed_pixels(frames, threshold, dilate)
    T_cam_world = torch.linalg.inv(T_world_cam.double())
    chunks: dict[str, list[Tensor]] = {k: [] for k in ("points", "colors", "scales", "off", "t")}
    presence = torch.full((canonical.shape[0], T), PRESENT)
    uv, z = project(K.double(), T_cam_world, canonical.double())  # [V, N, 2], [V, N]
    i = uv[..., 0].floor().long()
    j = uv[..., 1].floor().long()
    inside = (i >= 0) & (i < W) & (j >= 0) & (j < H) & (z > 0)
    i, j = i.clamp(0, W - 1), j.clamp(0, H - 1)
    d = depth[torch.arange(V)[:, None], j, i].double()
    inside &= (d > 0) & ((d - z).abs() <= 0.03 * z)  # seen, not hidden, in column 0
    for t in tqdm(range(1, T), desc="seeding times", disable=not progress):
        views = [v for v in range(V) if (v, t) not in held]
        if len(views) < 3:
            continue
        # canonical Gaussians: absent where most training views that saw them show a change
        votes = torch.zeros(canonical.shape[0])
        seen = torch.zeros(canonical.shape[0])
        for v in views:
            ok = inside[v]
            votes += (ok & changed[v, t, j[v], i[v]]).float()
            seen += ok.float()
        gone = (seen > 0) & (votes > 0.5 * seen)
        presence[gone, t] = ABSENT
        # the changed pixels of column t, triangulated with the fixed cameras
        index = torch.tensor(views)
        column = frames[index, t]
        Kt, Tt = K[index].double(), T_cam_world[index]
        dense = triangulate_views(Kt, Tt, neighbour_flows(column), texture_score(column),
                                  DepthConfig())  # fmt: skip
        mask = changed[index, t].float()
        masked = DenseDepth(dense.depth * mask, dense.confidence * mask, dense.tracks,
                            dense.visible)  # fmt: skip
        canon = canonical_points(
            column, Kt, Tt, masked, len(views) // 2, keyframe_stride, point_stride
        )
        n = canon["points"].shape[0]
        if n == 0:
            continue
        key = canon["keyframe"].long()
        cam = canon["per_view"][key, torch.arange(n)]
        scales = scale_factor * point_stride * cam[:, 2].clamp_min(1e-6) / Kt[key, 0, 0].float()
        offsets = torch.zeros(V, n, 3)
        offsets[index] = canon["offsets"]
        chunks["points"].append(canon["points"])  # world = canonical frame, as the cameras
        chunks["off"].append(offsets)
        chunks["colors"].append(canon["colors"])
        chunks["scales"].append(scales)
        chunks["t"].append(torch.full((n,), t))
        log.info("time %d: %d seeds from %d views; %d canonical Gaussians absent", t, n,
                 len(views), int(gone.sum()))  # fmt: skip
    if not chunks["points"]:
        empty = torch.zeros(0, 3)
        return TimeSeeds(empty, empty, torch.zeros(0), torch.zeros(V, 0, 3),
                         torch.zeros(0, dtype=torch.long), presence)  # fmt: skip
    return TimeSeeds(
        torch.cat(chunks["points"]), torch.cat(chunks["colors"]), torch.cat(chunks["scales"]),
        torch.cat(chunks["off"], 1), torch.cat(chunks["t"]), presence,
    )  # fmt: skip
