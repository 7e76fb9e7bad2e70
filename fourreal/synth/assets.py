"""Grids from real animated 3D assets (the paper's animated-Objaverse pipeline).

An asset (the panda bundled with panda3d, or a user's .glb/.gltf/.egg/.bam with skins and
animation clips) is posed along a clip, normalized (centered, scaled to a unit bounding sphere,
standing on z = 0), lit, and rendered by Panda3D's software renderer from cameras on an arc
around it. Depth and per-pixel object ids come from fourreal's own z-buffer over the same posed
triangles (the software renderer cannot read depth back). World frame: z up, as in the
procedural scenes; cameras are OpenCV, built with ``arc_cameras``.

Panda3D is optional: ``pip install 'fourreal[assets]'``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.errors import FourrealError
from fourreal.synth.asset_load import ClipInfo, LoadedAsset, Mesh, load_asset, panda_config
from fourreal.synth.cameras import ArcConfig, arc_cameras
from fourreal.synth.render import track_visibility
from fourreal.synth.zbuffer import rasterize_depth
from fourreal.types import Cameras, Grid

__all__ = [
    "AssetCameras",
    "AssetStage",
    "ClipInfo",
    "asset_grid",
    "describe_clips",
    "list_clips",
]


@dataclass(frozen=True)
class AssetCameras:
    """Cameras on a horizontal arc around the normalized asset (bounding sphere of radius 1
    centered on the look-at point), all looking at its center."""

    arc_deg: float = 60.0
    """Angle covered from view 0 to view V-1; 360 or more spreads the views on a full circle
    without repeating the first."""
    elevation_deg: float = 20.0
    """Angle of the cameras above the horizontal plane through the look-at point."""
    distance: float | None = None
    """Distance of the cameras from the look-at point (bounding-sphere radii); default: the
    bounding sphere just fits the narrower field of view."""
    azimuth_deg: float = -90.0
    """Azimuth of the middle of the arc (degrees counter-clockwise from +x; -90 is in front of
    assets that face -y, as Panda3D models and converted glTF files do)."""
    fov_deg: float = 50.0
    """Horizontal field of view, in degrees."""


@dataclass(frozen=True)
class AssetStage:
    """What surrounds the asset: background, ground, light."""

    background: tuple[float, float, float] = (0.55, 0.62, 0.7)
    """Background color (RGB in [0, 1])."""
    ground: bool = False
    """Add a checkered ground disk under the asset (z = 0)."""
    ground_radius: float = 2.5
    """Radius of the ground disk (bounding-sphere radii), kept inside the camera circle."""
    light_dir: tuple[float, float, float] = (0.4, -0.5, 1.0)
    """Direction towards the directional light (world)."""
    ambient: float = 0.35
    """Ambient share of the light (the directional light gives the rest)."""


def list_clips(asset: str | Path, extra_clips: tuple[Path, ...] = ()) -> list[ClipInfo]:
    """The animation clips of an asset (name, frame count, frame rate)."""
    with panda_config():
        loaded = load_asset(asset, extra_clips)
        return [loaded.clip_info(name) for name in loaded.clips]


def describe_clips(asset: str | Path, clip: str | None = None) -> str:
    """The clips of an asset as text (``clip``: an extra egg/bam animation file to include)."""
    clips = list_clips(asset, _clip_files(clip))
    if not clips:
        return f"{asset} has no animation clips"
    lines = [f"clips of {asset}:"]
    lines += [f"  {c.name}: {c.num_frames} frames at {c.frame_rate:g} fps" for c in clips]
    return "\n".join(lines)


def asset_grid(
    asset: str | Path = "panda",
    clip: str | None = None,
    views: int = 8,
    times: int = 8,
    height: int = 144,
    width: int = 256,
    cameras: AssetCameras | None = None,
    stage: AssetStage | None = None,
    fps: float | None = None,
    frame_step: float | None = None,
    start_frame: float = 0.0,
    num_tracks: int = 4096,
    supersample: int = 4,
    progress: bool = False,
) -> Grid:
    """Render an animated asset into a ``views`` × ``times`` grid with ground truth.

    Time: column ``t`` shows clip frame ``start_frame + t · step`` (fractional frames are
    blended; frames past the end wrap around, as a looping clip plays). ``step`` is
    ``frame_step``, or the clip's frame rate / ``fps``, or by default ``(frames - 1) / times``:
    one pass over the clip. The grid's fps is the clip's frame rate / ``step``, so
    ``t / grid.fps`` is clip time in seconds.

    ``clip`` is a clip name (see ``list_clips``) or a Panda3D animation file (egg/bam) for the
    model; default: the asset's first clip, or no animation if it has none.

    The grid carries cameras, depth (camera z, 0 = background) and ``gt``: ``tracks``
    ``[T, P, 3]`` world positions of up to ``num_tracks`` posed mesh vertices, ``track_visible``
    ``[V, T, P]``, ``instance`` ``[V, T, H, W]`` (0 background, 1 asset, 2 ground). Frames are
    rendered at ``supersample`` times the size and box-filtered down (anti-aliasing: a pixel that
    the asset covers in part is not background), then quantized to 8 bits. Depth and instance
    are taken at the pixel centers. The same arguments always give the same grid.
    """
    if supersample < 1:
        raise FourrealError(f"--supersample must be at least 1, got {supersample}")
    cameras = cameras or AssetCameras()
    stage = stage or AssetStage()
    # the 8-bit color the renderer clears to, so that background pixels equal it exactly
    stage = dataclasses.replace(
        stage, background=tuple(round(c * 255) / 255 for c in stage.background)
    )
    with panda_config():
        loaded = load_asset(asset, _clip_files(clip))
        clip_name, frames, grid_fps = _clip_frames(
            loaded, clip, times, fps, frame_step, start_frame
        )
        raw = [loaded.pose(clip_name, frame) for frame in frames]
        scale, offset, center_z = _normalization(raw)
        arc = _arc(cameras, (0.0, 0.0, center_z), views, width, height)
        cams = arc_cameras(views, width, height, arc)
        ground_radius = min(stage.ground_radius, 0.8 * arc.radius)
        rgb = _render_frames(loaded, clip_name, frames, cams, arc, stage, (scale, offset),
                             ground_radius, height, width, supersample, progress)  # fmt: skip
        frame_rate = loaded.clip_info(clip_name).frame_rate if clip_name else None
    meshes = [Mesh((m.vertices - offset) * scale, m.faces) for m in raw]
    ground = _ground_mesh(ground_radius) if stage.ground else None
    depth, instance = _depth_frames(meshes, ground, cams, height, width)
    tracks = _tracks(meshes, num_tracks)
    source = {
        "generator": "fourreal.synth.assets",
        "asset": str(asset),
        "clip": clip_name,
        "clip_frames": [float(f) for f in frames],
        "clip_frame_rate": frame_rate,
        "world_up": [0.0, 0.0, 1.0],
        "time_values": [t / grid_fps for t in range(times)],
        "normalization": {"scale": scale, "offset": offset.tolist()},
        "asset_cameras": dataclasses.asdict(cameras),
        "arc": {**dataclasses.asdict(arc), "look_at": list(arc.look_at)},
        "stage": {**dataclasses.asdict(stage), "ground_radius": ground_radius},
        "background": list(stage.background),
        "objects": [
            {"name": str(asset), "shape": "mesh", "dynamic": clip_name is not None},
            {"name": "ground", "shape": "disk", "dynamic": False},
        ][: 2 if stage.ground else 1],
    }
    gt = {"tracks": tracks, "track_visible": track_visibility(tracks, cams, depth)}
    gt["instance"] = instance
    return Grid(rgb, None, cams, depth, grid_fps, source, gt)


def _clip_files(clip: str | None) -> tuple[Path, ...]:
    """A clip that names an existing file is an animation file to load for the model."""
    return (Path(clip),) if clip is not None and Path(clip).is_file() else ()


def _clip_frames(
    loaded: LoadedAsset,
    clip: str | None,
    times: int,
    fps: float | None,
    frame_step: float | None,
    start_frame: float,
) -> tuple[str | None, list[float], float]:
    """The clip to play, the clip frame of each column and the grid's frame rate."""
    if fps is not None and frame_step is not None:
        raise FourrealError("give --fps or --frame-step, not both")
    if clip is None:
        if not loaded.clips:
            return None, [0.0] * times, fps or 8.0
        clip = next(iter(loaded.clips))
    if clip not in loaded.clips:
        names = ", ".join(loaded.clips) or "none"
        raise FourrealError(f"asset {loaded.name} has no clip {clip!r} (its clips: {names})")
    info = loaded.clip_info(clip)
    if frame_step is None:
        frame_step = info.frame_rate / fps if fps else max(info.num_frames - 1, 1) / times
    if not frame_step > 0:
        raise FourrealError(f"the time step must be positive, got {frame_step} clip frames")
    frames = [(start_frame + t * frame_step) % info.num_frames for t in range(times)]
    return clip, frames, info.frame_rate / frame_step


def _normalization(meshes: list[Mesh]) -> tuple[float, np.ndarray, float]:
    """Scale and offset (``world = (p - offset) · scale``) that center the posed asset (over the
    whole clip) on the z axis, put its lowest point on z = 0 and every vertex within 1 of the
    center of its bounding box; and the height of that center (the look-at point)."""
    points = [m.vertices[np.unique(m.faces)] for m in meshes]
    lo = np.min([p.min(0) for p in points], axis=0)
    hi = np.max([p.max(0) for p in points], axis=0)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(p - center, axis=1).max()) for p in points)
    if not radius > 0:
        raise FourrealError("the asset has no extent (all its vertices coincide)")
    offset = np.array([center[0], center[1], lo[2]])
    return 1.0 / radius, offset, float(center[2] - lo[2]) / radius


def _arc(
    cameras: AssetCameras, look_at: tuple[float, float, float], views: int, width: int, height: int
) -> ArcConfig:
    half_h = math.radians(cameras.fov_deg) / 2
    half_v = math.atan(math.tan(half_h) * height / width)
    distance = cameras.distance or 1.0 / math.sin(min(half_h, half_v))
    elevation = math.radians(cameras.elevation_deg)
    arc_deg = cameras.arc_deg
    if arc_deg >= 360:  # a full circle: the last view stops one step before the first
        arc_deg = 360.0 * (views - 1) / views
    return ArcConfig(
        arc_deg=arc_deg,
        radius=distance * math.cos(elevation),
        height=look_at[2] + distance * math.sin(elevation),
        look_at=look_at,
        azimuth_deg=cameras.azimuth_deg,
        fov_deg=cameras.fov_deg,
    )


def _render_frames(
    loaded: LoadedAsset,
    clip: str | None,
    frames: list[float],
    cams: Cameras,
    arc: ArcConfig,
    stage: AssetStage,
    normalization: tuple[float, np.ndarray],
    ground_radius: float,
    height: int,
    width: int,
    supersample: int,
    progress: bool,
) -> Float[Tensor, "V T 3 H W"]:
    from panda3d.core import NodePath

    from fourreal.synth.asset_render import add_lights, make_ground, offscreen_renderer

    scale, offset = normalization
    root = NodePath("world")
    holder = root.attach_new_node("normalized")
    holder.set_scale(scale)
    loaded.static.reparent_to(holder)
    loaded.static.set_pos(*(-offset).tolist())
    if stage.ground:
        make_ground(ground_radius)[0].reparent_to(root)
    add_lights(root, stage.light_dir, stage.ambient)
    near, far = _near_far(arc, ground_radius if stage.ground else 0.0)
    V, T, s = len(cams), len(frames), supersample
    # pixel (I, J) of the s-times larger image has its center at ((I + 0.5) / s, (J + 0.5) / s)
    # in the grid's pixels: scaling K's first two rows by s maps the grid's pixels onto it
    K_fine = cams.K.clone()
    K_fine[:, :2] *= s
    rgb = np.empty((V, T, height, width, 3), dtype=np.uint8)
    with offscreen_renderer(s * width, s * height, stage.background) as renderer:
        for t in tqdm(range(T), desc="rendering asset", disable=not progress, unit="step"):
            loaded.pose(clip, frames[t])
            for v in range(V):
                image = renderer.render(root, K_fine[v], cams.T_world_cam[v], near, far)
                rgb[v, t] = _box_downsample(image, s)
    loaded.static.detach_node()
    return torch.from_numpy(rgb).permute(0, 1, 4, 2, 3).float() / 255


def _box_downsample(image: np.ndarray, s: int) -> np.ndarray:
    """``[s·H, s·W, 3]`` uint8 to ``[H, W, 3]``: the mean of each s × s block, rounded."""
    H, W = image.shape[0] // s, image.shape[1] // s
    # summing one axis at a time over contiguous rows is ~5x faster than a 2-axis reduction
    rows = image.reshape(H, s, W * s * 3).sum(axis=1, dtype=np.uint32)
    total = rows.reshape(H, W, s, 3).sum(axis=2, dtype=np.uint32)
    return ((total + s * s // 2) // (s * s)).astype(np.uint8)


def _near_far(arc: ArcConfig, ground_radius: float) -> tuple[float, float]:
    """Clip planes around everything: the asset lies within 1 of the look-at point, the ground
    within ``ground_radius + 1``. Tight planes keep the software z-buffer precise."""
    distance = math.hypot(arc.radius, arc.height - arc.look_at[2])
    extent = 1.0 + ground_radius + 0.05
    return max(distance - extent, 0.01), distance + extent


def _ground_mesh(radius: float) -> Mesh:
    from fourreal.synth.asset_render import make_ground

    _, vertices, faces = make_ground(radius)
    return Mesh(vertices, faces)


def _depth_frames(
    meshes: list[Mesh], ground: Mesh | None, cams: Cameras, height: int, width: int
) -> tuple[Float[Tensor, "V T H W"], Tensor]:
    """Camera z and object id (0 background, 1 asset, 2 ground) per pixel, by z-buffer."""
    V, T = len(cams), len(meshes)
    vertices = np.stack([m.vertices for m in meshes])  # [T, N, 3]
    faces = meshes[0].faces
    owner = np.ones(len(faces), np.uint8)
    if ground is not None:
        faces = np.concatenate([faces, ground.faces + vertices.shape[1]])
        still = np.broadcast_to(ground.vertices, (T, *ground.vertices.shape))
        vertices = np.concatenate([vertices, still], axis=1)
        owner = np.concatenate([owner, np.full(len(ground.faces), 2, np.uint8)])
    T_cam_world = cams.T_cam_world.double().numpy()
    depth = torch.empty(V, T, height, width, dtype=torch.float32)
    face = torch.empty(V, T, height, width, dtype=torch.long)
    for t in range(T):  # all views of one time step at once: one z-buffer call, bounded memory
        points = vertices[t] @ T_cam_world[:, :3, :3].transpose(0, 2, 1)  # [V, N, 3]
        points = points + T_cam_world[:, None, :3, 3]
        z, f = rasterize_depth(
            torch.from_numpy(points), torch.from_numpy(faces), cams.K, height, width
        )
        depth[:, t], face[:, t] = z, f
    instance = torch.from_numpy(np.concatenate([[0], owner]))[face + 1]
    return depth, instance


def _tracks(meshes: list[Mesh], num_tracks: int) -> Float[Tensor, "T P 3"]:
    """Up to ``num_tracks`` mesh vertices (evenly spaced through the vertex list) over time."""
    used = np.unique(meshes[0].faces)
    if len(used) > num_tracks:
        used = used[np.linspace(0, len(used) - 1, num_tracks).round().astype(np.int64)]
    return torch.from_numpy(np.stack([m.vertices[used] for m in meshes])).float()
