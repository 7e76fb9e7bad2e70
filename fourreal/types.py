"""Shared data types: dataclasses of tensors that check their shapes on construction.

Shapes are written in the annotations (jaxtyping) and enforced in ``__post_init__``, so a wrong
tensor fails where it is made, with a message that names the field, not deep inside a renderer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fourreal.errors import ShapeError


def check_shape(name: str, x: Tensor, spec: str, dims: dict[str, int]) -> None:
    """Check ``x`` against a space-separated shape ``spec`` such as ``"V T 3 H W"``.

    Symbolic dimensions are bound in ``dims`` on first sight and must agree afterwards; integer
    entries must match exactly.
    """
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    parts = spec.split()
    if x.ndim != len(parts):
        raise ShapeError(f"{name} must have shape [{', '.join(parts)}], got {list(x.shape)}")
    for axis, (part, size) in enumerate(zip(parts, x.shape, strict=True)):
        if part.isdigit():
            expected = int(part)
        elif part in dims:
            expected = dims[part]
        else:
            dims[part] = int(size)
            continue
        if size != expected:
            raise ShapeError(
                f"{name} must have shape [{', '.join(parts)}] with {part}={expected}, "
                f"but axis {axis} has size {size} (shape {list(x.shape)})"
            )


def check_finite(name: str, x: Tensor) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ShapeError(f"{name} contains NaN or infinite values")


@dataclass
class Cameras:
    """Pinhole cameras in the OpenCV convention (x right, y down, z forward).

    ``K`` holds intrinsics in pixels. ``T_world_cam`` maps camera coordinates to world
    coordinates; it may be ``None`` when only the lens is known (common for generated videos).
    """

    K: Float[Tensor, "C 3 3"]
    T_world_cam: Float[Tensor, "C 4 4"] | None = None

    def __post_init__(self) -> None:
        dims: dict[str, int] = {}
        check_shape("Cameras.K", self.K, "C 3 3", dims)
        check_finite("Cameras.K", self.K)
        if self.T_world_cam is not None:
            check_shape("Cameras.T_world_cam", self.T_world_cam, "C 4 4", dims)
            check_finite("Cameras.T_world_cam", self.T_world_cam)

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def T_cam_world(self) -> Float[Tensor, "C 4 4"]:
        if self.T_world_cam is None:
            raise ShapeError("these cameras have intrinsics only (T_world_cam is None)")
        return torch.linalg.inv(self.T_world_cam)


def row_and_column(views: int, times: int) -> Bool[Tensor, "V T"]:
    """The known frames of the generation task: row 0 (fixed view) and column 0 (freeze time)."""
    known = torch.zeros(views, times, dtype=torch.bool)
    known[0, :] = True
    known[:, 0] = True
    return known


@dataclass
class Grid:
    """A 4D video: ``frames[v, t]`` with view ``v`` and time ``t`` (design.md §3).

    Row ``v = 0`` is the fixed-view video, column ``t = 0`` the freeze-time video.
    ``known[v, t]`` marks the frames that were inputs (``None``: all frames are real).
    ``depth`` is camera z in world units, 0 where there is no surface. ``gt`` holds extra
    ground-truth arrays (synthetic scenes), saved as ``gt/<name>.npy``.
    """

    frames: Float[Tensor, "V T 3 H W"]
    known: Bool[Tensor, "V T"] | None = None
    cameras: Cameras | None = None
    depth: Float[Tensor, "V T H W"] | None = None
    fps: float = 8.0
    source: dict[str, Any] = field(default_factory=dict)
    gt: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims: dict[str, int] = {}
        check_shape("Grid.frames", self.frames, "V T 3 H W", dims)
        if not self.frames.is_floating_point():
            raise ShapeError(
                f"Grid.frames must be floating point in [0, 1], got {self.frames.dtype}"
            )
        if dims["V"] == 0 or dims["T"] == 0 or dims["H"] == 0 or dims["W"] == 0:
            raise ShapeError(f"Grid.frames has an empty axis: shape {list(self.frames.shape)}")
        check_finite("Grid.frames", self.frames)
        if self.known is not None:
            check_shape("Grid.known", self.known, "V T", dims)
            if self.known.dtype != torch.bool:
                raise ShapeError(f"Grid.known must be a bool tensor, got {self.known.dtype}")
        if self.cameras is not None and len(self.cameras) != dims["V"]:
            raise ShapeError(f"Grid has {dims['V']} views but {len(self.cameras)} cameras")
        if self.depth is not None:
            check_shape("Grid.depth", self.depth, "V T H W", dims)
            check_finite("Grid.depth", self.depth)
        if not (self.fps > 0):
            raise ShapeError(f"Grid.fps must be positive, got {self.fps}")

    @property
    def views(self) -> int:
        return self.frames.shape[0]

    @property
    def times(self) -> int:
        return self.frames.shape[1]

    @property
    def height(self) -> int:
        return self.frames.shape[3]

    @property
    def width(self) -> int:
        return self.frames.shape[4]

    @property
    def time_values(self) -> Float[Tensor, " T"]:
        """Time of each column in seconds (``t / fps``)."""
        return torch.arange(self.times, dtype=torch.float64) / self.fps

    def replace(self, **changes: Any) -> Grid:
        return dataclasses.replace(self, **changes)


@dataclass
class GaussianParams:
    """3D Gaussians with activated values (what a renderer consumes).

    ``scales`` are standard deviations in world units per axis (isotropic Gaussians have three
    equal columns), ``quats`` are unit quaternions ``(w, x, y, z)``, ``opacities`` lie in [0, 1] and
    ``colors`` are RGB in [0, 1] (degree-0 spherical harmonics after activation). ``sh_rest``
    keeps higher SH bands read from a file, ``[N, K, 3]``, or ``None``.
    """

    means: Float[Tensor, "N 3"]
    scales: Float[Tensor, "N 3"]
    quats: Float[Tensor, "N 4"]
    opacities: Float[Tensor, " N"]
    colors: Float[Tensor, "N 3"]
    sh_rest: Float[Tensor, "N K 3"] | None = None

    def __post_init__(self) -> None:
        dims: dict[str, int] = {}
        check_shape("GaussianParams.means", self.means, "N 3", dims)
        check_shape("GaussianParams.scales", self.scales, "N 3", dims)
        check_shape("GaussianParams.quats", self.quats, "N 4", dims)
        check_shape("GaussianParams.opacities", self.opacities, "N", dims)
        check_shape("GaussianParams.colors", self.colors, "N 3", dims)
        if self.sh_rest is not None:
            check_shape("GaussianParams.sh_rest", self.sh_rest, "N K 3", dims)

    def __len__(self) -> int:
        return self.means.shape[0]

    @classmethod
    def isotropic(
        cls,
        means: Float[Tensor, "N 3"],
        scales: Float[Tensor, " N"],
        opacities: Float[Tensor, " N"],
        colors: Float[Tensor, "N 3"],
    ) -> GaussianParams:
        """Isotropic Gaussians (one standard deviation per point, identity rotation)."""
        n = means.shape[0]
        quats = torch.zeros(n, 4, dtype=means.dtype, device=means.device)
        quats[:, 0] = 1
        return cls(means, scales.reshape(n, 1).expand(n, 3).clone(), quats, opacities, colors)

    @property
    def is_isotropic(self) -> bool:
        return bool((self.scales == self.scales[:, :1]).all())
