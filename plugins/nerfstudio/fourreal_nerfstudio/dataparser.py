"""``fourreal-grid``: a time-aware nerfstudio dataparser for fourreal grids (format v1).

Every grid frame ``(v, t)`` becomes one nerfstudio camera: view v's pose and lens, and
``times = t / (T - 1)`` (normalized to [0, 1], as fourreal's deformation field expects). The
held-out frames are fourreal's own (:func:`fourreal.recon.fit.choose_holdout`): the eval split
is exactly the frames that ``fourreal reconstruct`` would hold out with the same fraction and seed.

The world frame is the tracking's canonical frame (the central view of the freeze-time column),
as in ``fourreal reconstruct``, so that the tracked points that initialize the Gaussians and the
cameras agree. Intrinsics come from grid.json when it has them (else tracking estimates them);
poses from tracking, or with ``cameras="grid"`` from grid.json (see that option).

This module is what the ``nerfstudio.dataparser_configs`` entry point loads, so it must not import
nerfstudio's datamanagers, pipelines or trainer (they import the dataparser registry: a cycle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import (
    DataParser,
    DataParserConfig,
    DataparserOutputs,
)
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.io import load_grid
from fourreal.recon.fit import choose_holdout
from fourreal.tracking.geometry import align_poses
from fourreal.tracking.pipeline import ColumnTracks, TrackConfig, track_column
from fourreal.types import Grid

OPENCV_TO_OPENGL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
"""Right-multiplying a camera-to-world pose by this flips y and z: OpenCV axes (x right, y down,
z forward, fourreal's) to OpenGL axes (x right, y up, z back, nerfstudio's)."""


@dataclass
class FourrealGridDataParserConfig(DataParserConfig):
    """A fourreal grid folder (grid.json + frames/) as nerfstudio data."""

    _target: type = field(default_factory=lambda: FourrealGridDataParser)
    data: Path = Path()
    """The grid folder (the one holding grid.json)."""
    cameras: Literal["tracked", "grid"] = "tracked"
    """Where poses come from: ``tracked`` (default, as ``fourreal reconstruct``): estimated by
    tracking the freeze-time column, consistent with the tracked points that start the Gaussians;
    ``grid``: grid.json's poses when it has them (else tracking's), moved into the tracking's frame
    by a similarity (``tracking.geometry.align_poses``: rotation from the camera orientations,
    scale and shift from the centers). Intrinsics always come from grid.json when it has them."""
    holdout_fraction: float = 0.1
    """Fraction of the frames outside row 0 and column 0 held out for evaluation (fourreal's
    split; 0 keeps every frame for training and evaluates on frame (0, 0))."""
    seed: int = 0
    """Seed of the held-out split (the same as ``fourreal reconstruct``'s with the same value)."""
    point_stride: int = 1
    """Spacing in pixels of the tracked points that become Gaussians."""
    keyframe_stride: int = 2
    """Every this many views of the column contributes points."""


@dataclass
class GridScene:
    """What the dataparser derives from a grid once and shares between its splits."""

    grid: Grid
    tracks: ColumnTracks
    K: Tensor  # [V, 3, 3] pixels
    T_world_cam: Tensor  # [V, 4, 4] OpenCV, canonical frame
    holdout: list[tuple[int, int]]
    frame_pattern: str
    background: Tensor  # [3]
    camera_source: str
    point_stride: int


class FourrealGridDataParser(DataParser):
    """Reads a fourreal grid; see the module docstring for frames, times and the split."""

    config: FourrealGridDataParserConfig
    includes_time: bool = True

    def __init__(self, config: FourrealGridDataParserConfig) -> None:
        super().__init__(config=config)
        self._scene: GridScene | None = None

    @property
    def scene(self) -> GridScene:
        """Loaded and tracked on first use; both splits share it (tracking runs once)."""
        if self._scene is None:
            self._scene = read_grid_scene(self.config)
        return self._scene

    def _generate_dataparser_outputs(
        self, split: str = "train", **kwargs: Any
    ) -> DataparserOutputs:
        scene = self.scene
        frames = split_frames(scene.grid.views, scene.grid.times, scene.holdout, split)
        root = Path(self.config.data)
        filenames = [root / scene.frame_pattern.format(v=v, t=t) for v, t in frames]
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=grid_cameras(scene, frames),
            alpha_color=scene.background,
            scene_box=SceneBox(aabb=points_box(scene.tracks.points)),
            metadata={"fourreal": model_inputs(scene)},
        )


def read_grid_scene(config: FourrealGridDataParserConfig) -> GridScene:
    """Load and validate the grid, track its freeze-time column, and pick the cameras."""
    root = Path(config.data)
    grid = load_grid(root)  # validates everything, with messages that name the file
    pattern = json.loads((root / "grid.json").read_text())["frame_pattern"]
    K_given = grid.cameras.K if grid.cameras is not None else None
    track_config = TrackConfig(
        keyframe_stride=config.keyframe_stride, point_stride=config.point_stride
    )
    tracks = track_column(grid.frames[:, 0], K_given, config=track_config)
    K, T_world_cam, source = tracks.K.float(), tracks.T_world_cam.float(), "tracked"
    has_poses = grid.cameras is not None and grid.cameras.T_world_cam is not None
    if config.cameras == "grid" and has_poses and grid.views >= 3:
        T_world_cam = align_poses(grid.cameras.T_world_cam, tracks.T_world_cam).float()
        K, source = grid.cameras.K.float(), "grid"
    holdout = choose_holdout(grid.views, grid.times, config.holdout_fraction, config.seed)
    return GridScene(
        grid, tracks, K, T_world_cam, holdout, pattern, background_of(grid), source,
        config.point_stride,
    )  # fmt: skip


def background_of(grid: Grid) -> Tensor:
    """The grid's background color (synthetic grids record it in ``source``), else black."""
    value = grid.source.get("background")
    if isinstance(value, list | tuple) and len(value) == 3:
        return torch.tensor([float(x) for x in value])
    return torch.zeros(3)


def split_frames(
    V: int, T: int, holdout: list[tuple[int, int]], split: str
) -> list[tuple[int, int]]:
    """Grid frames ``(v, t)`` of a split: ``train`` everything but the held-out frames, ``val``
    and ``test`` the held-out ones (frame (0, 0) when nothing is held out)."""
    held = set(holdout)
    if split == "train":
        return [(v, t) for v in range(V) for t in range(T) if (v, t) not in held]
    if split in ("val", "test"):
        return list(holdout) or [(0, 0)]
    raise FourrealError(f"unknown split {split!r}: fourreal-grid has train, val and test")


def normalized_time(t: int, T: int) -> float:
    return t / (T - 1) if T > 1 else 0.0


def grid_cameras(scene: GridScene, frames: list[tuple[int, int]]) -> Cameras:
    """One nerfstudio camera per frame, with its time in [0, 1] and its view index in
    ``metadata["fourreal_view"]`` (the model applies that view's offsets Δp_v)."""
    views = torch.tensor([v for v, _ in frames])
    T = scene.grid.times
    times = torch.tensor([[normalized_time(t, T)] for _, t in frames])
    c2w = (scene.T_world_cam @ OPENCV_TO_OPENGL)[views, :3, :4]
    K = scene.K[views]
    return Cameras(
        camera_to_worlds=c2w,
        fx=K[:, 0, 0:1],
        fy=K[:, 1, 1:2],
        cx=K[:, 0, 2:3],
        cy=K[:, 1, 2:3],
        width=scene.grid.width,
        height=scene.grid.height,
        camera_type=CameraType.PERSPECTIVE,
        times=times,
        metadata={"fourreal_view": views[:, None]},
    )


def points_box(points: Tensor) -> Tensor:
    """An axis-aligned box ``[2, 3]`` around the 1st–99th percentiles of the points, padded."""
    lo = points.float().quantile(0.01, dim=0)
    hi = points.float().quantile(0.99, dim=0)
    pad = 0.1 * (hi - lo).max().clamp_min(1e-3)
    return torch.stack([lo - pad, hi + pad])


def model_inputs(scene: GridScene) -> dict[str, Any]:
    """What the fourreal-splat model needs to build itself (passed as dataparser metadata)."""
    return {
        "tracks": scene.tracks,
        "point_stride": scene.point_stride,
        "column": scene.grid.frames[:, 0],  # [V, 3, H, W], for floater pruning
        "K": scene.K,
        "T_world_cam": scene.T_world_cam,
        "times": torch.tensor(
            [normalized_time(t, scene.grid.times) for t in range(scene.grid.times)]
        ),
        "background": scene.background,
        "holdout": scene.holdout,
        "image_size": (scene.grid.height, scene.grid.width),
        "camera_source": scene.camera_source,
    }


fourreal_grid = DataParserSpecification(
    config=FourrealGridDataParserConfig(),
    description="fourreal grid (format v1): multi-view dynamic frames with times in [0, 1]",
)
