"""Viewer cameras: presets from a scene's cameras, framing a bounding box, the up direction.

Everything is in the scene's world frame and the OpenCV camera convention (x right, y down,
z forward), which is also the convention of viser's camera API; ``T_world_cam`` maps camera to
world coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ViewPose:
    """Where a browser camera sits and looks; ``fov`` is vertical, in radians."""

    position: np.ndarray  # [3]
    look_at: np.ndarray  # [3]
    up: np.ndarray  # [3] unit
    fov: float


@dataclass
class SceneCameras:
    """The cameras of a scene or grid: ``K [V, 3, 3]`` pixels, ``T_world_cam [V, 4, 4]`` or None
    when only the lens is known, and the image size they belong to."""

    K: np.ndarray
    T_world_cam: np.ndarray | None
    width: int
    height: int

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def has_poses(self) -> bool:
        return self.T_world_cam is not None

    def fov_y(self, v: int) -> float:
        return 2 * math.atan(self.height / (2 * float(self.K[v, 1, 1])))

    def pose(self, v: int, target: np.ndarray) -> ViewPose:
        """View ``v``'s camera, looking along its axis as far as ``target`` lies ahead of it."""
        assert self.T_world_cam is not None
        T = self.T_world_cam[v].astype(np.float64)
        position, forward = T[:3, 3], T[:3, 2] / np.linalg.norm(T[:3, 2])
        depth = float(np.dot(target - position, forward))
        distance = max(depth, 0.1 * float(np.linalg.norm(target - position)), 1e-3)
        up = -T[:3, 1] / np.linalg.norm(T[:3, 1])
        return ViewPose(position, position + forward * distance, up, self.fov_y(v))

    def up(self) -> np.ndarray | None:
        """The world direction the cameras agree is up, if any.

        Cameras rarely roll, so their x axes are horizontal: up is the direction most nearly
        perpendicular to all of them (well defined once two cameras differ in heading), on the
        side of their mean up (-y) axis. With one heading only, the mean -y axis is used."""
        if self.T_world_cam is None:
            return None
        R = self.T_world_cam[:, :3, :3].astype(np.float64)
        mean_up = -R[:, :, 1].mean(0)
        x_axes = R[:, :, 0] / np.linalg.norm(R[:, :, 0], axis=1, keepdims=True)
        eigenvalues, eigenvectors = np.linalg.eigh(x_axes.T @ x_axes / len(x_axes))
        if eigenvalues[1] > 1e-3:  # the x axes span a plane: its normal is up
            up = eigenvectors[:, 0] * (1.0 if eigenvectors[:, 0] @ mean_up >= 0 else -1.0)
        else:
            up = mean_up
        norm = np.linalg.norm(up)
        return up / norm if norm > 1e-6 else None


AXES = {
    "+x": (1.0, 0.0, 0.0), "-x": (-1.0, 0.0, 0.0), "+y": (0.0, 1.0, 0.0),
    "-y": (0.0, -1.0, 0.0), "+z": (0.0, 0.0, 1.0), "-z": (0.0, 0.0, -1.0),
}  # fmt: skip


def robust_bounds(points: np.ndarray, max_points: int = 200_000) -> tuple[np.ndarray, float]:
    """Center and radius of the 1st–99th percentile box of ``points [N, 3]`` (ignores the few
    far floaters that most splat scenes have)."""
    if len(points) > max_points:
        points = points[:: len(points) // max_points + 1]
    low, high = np.percentile(points, [1, 99], axis=0)
    center = (low + high) / 2
    return center.astype(np.float64), max(float(np.linalg.norm(high - low)) / 2, 1e-3)


def frame_bounds(center: np.ndarray, radius: float, up: np.ndarray, fov: float) -> ViewPose:
    """A camera that sees a sphere of ``radius`` around ``center`` whole, from 25° above."""
    up = up / np.linalg.norm(up)
    side = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    horizontal = side - np.dot(side, up) * up
    horizontal /= np.linalg.norm(horizontal)
    elevation = math.radians(25)
    direction = math.cos(elevation) * horizontal + math.sin(elevation) * up
    distance = 1.1 * radius / math.sin(fov / 2)
    return ViewPose(center + distance * direction, center.copy(), up, fov)


def frame_cameras(T_world_cam: np.ndarray, size: float, up: np.ndarray, fov: float) -> ViewPose:
    """A camera behind and above a set of cameras ``[V, 4, 4]`` that sees all their frustums
    (of depth ``size``), looking the way they look on average."""
    up = up / np.linalg.norm(up)
    forward = T_world_cam[:, :3, 2].mean(0)
    forward = forward - np.dot(forward, up) * up
    if np.linalg.norm(forward) < 1e-6:  # cameras looking straight up or down, or all around
        return frame_bounds(T_world_cam[:, :3, 3].mean(0), size, up, fov)
    forward /= np.linalg.norm(forward)
    centers = T_world_cam[:, :3, 3]
    center = centers.mean(0) + forward * size / 2
    radius = float(np.linalg.norm(centers - center, axis=1).max()) + size
    elevation = math.radians(20)
    direction = -math.cos(elevation) * forward + math.sin(elevation) * up
    distance = radius / math.tan(fov / 2)  # the cameras lie nearly in a plane: no sphere margin
    return ViewPose(center + distance * direction, center, up, fov)


def matrix_to_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a rotation matrix ``[3, 3]``."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    if trace > 0:
        s = 2 * math.sqrt(trace + 1)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(max(1 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = s / 4
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)
