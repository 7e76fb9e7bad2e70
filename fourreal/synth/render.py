"""The analytic ray caster and the grid it produces, with exact ground truth.

Per time step, the rays of all views are cast together (vectorized over pixels and views) in
float64; each object intersects the rays in its own local frame and the nearest hit wins.
Shading is Lambertian (view-independent colors), so a surface point has the same color in every
view, which is what reconstruction assumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.synth.cameras import ArcConfig, arc_cameras, camera_rays
from fourreal.synth.scenes import Scene, build_scene
from fourreal.types import Cameras, Grid

NEAR = 0.01


@dataclass
class Frames:
    rgb: Float[Tensor, "V T 3 H W"]
    depth: Float[Tensor, "V T H W"]
    instance: Tensor  # [V, T, H, W] uint8: 0 background, k = object index + 1


def time_values(times: int) -> Float[Tensor, " T"]:
    """Normalized times ``s`` in [0, 1] of the grid's columns (one clip, however many steps)."""
    if times == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0, 1, times, dtype=torch.float64)


def render(
    scene: Scene,
    cameras: Cameras,
    times: Tensor,
    height: int,
    width: int,
    progress: bool = False,
) -> Frames:
    """Render every camera at every normalized time in ``times``."""
    V, T = len(cameras), times.numel()
    rays = [camera_rays(cameras.K[v], cameras.T_world_cam[v], width, height) for v in range(V)]
    origins = torch.stack([o for o, _ in rays]).reshape(-1, 3)
    dirs = torch.stack([d for _, d in rays]).reshape(-1, 3)
    rgb = torch.empty(V, T, height, width, 3, dtype=torch.float32)
    depth = torch.empty(V, T, height, width, dtype=torch.float32)
    instance = torch.empty(V, T, height, width, dtype=torch.uint8)
    for k in tqdm(range(T), desc=f"rendering {scene.name}", disable=not progress, unit="step"):
        color, z, obj = _render_time(scene, origins, dirs, float(times[k]))
        rgb[:, k] = color.reshape(V, height, width, 3)
        depth[:, k] = z.reshape(V, height, width)
        instance[:, k] = obj.reshape(V, height, width)
    return Frames(rgb.permute(0, 1, 4, 2, 3).contiguous(), depth, instance)


def _render_time(
    scene: Scene, origins: Tensor, dirs: Tensor, s: float
) -> tuple[Tensor, Tensor, Tensor]:
    n = origins.shape[0]
    best_t = torch.full((n,), torch.inf, dtype=torch.float64)
    best_obj = torch.zeros(n, dtype=torch.uint8)
    hits = []
    for index, obj in enumerate(scene.objects):
        R, c = obj.motion.pose(s)
        # world -> local: x_local = R^T (x_world - c); as row vectors, (x - c) @ R
        hit = obj.shape.intersect((origins - c) @ R, dirs @ R, s, NEAR)
        closer = hit.t < best_t
        best_t = torch.where(closer, hit.t, best_t)
        best_obj[closer] = index + 1
        hits.append((hit, R))
    light = torch.tensor(scene.light_dir, dtype=torch.float64)
    light = light / light.norm()
    color = torch.tensor(scene.background, dtype=torch.float64).expand(n, 3).clone()
    for index, (obj, (hit, R)) in enumerate(zip(scene.objects, hits, strict=True)):
        mask = best_obj == index + 1
        if not mask.any():
            continue
        normal = hit.normal[mask] @ R.T
        lambert = (normal @ light).clamp_min(0)
        shade = scene.ambient + (1 - scene.ambient) * lambert
        color[mask] = obj.material.albedo(hit.canonical[mask]) * shade[:, None]
    depth = torch.where(torch.isfinite(best_t), best_t, 0.0)
    return color.clamp(0, 1).to(torch.float32), depth.to(torch.float32), best_obj


def sample_tracks(
    scene: Scene, times: Tensor, num_points: int, seed: int
) -> tuple[Float[Tensor, "T P 3"], Tensor]:
    """World positions over time of ``num_points`` surface points spread by area over the
    objects, and the object index of each point (``[P]``, 0-based)."""
    generator = torch.Generator().manual_seed(seed)
    areas = torch.tensor([obj.shape.area() for obj in scene.objects], dtype=torch.float64)
    owner = (
        torch.multinomial(areas, num_points, replacement=True, generator=generator).sort().values
    )
    tracks = torch.empty(times.numel(), num_points, 3, dtype=torch.float64)
    for index, obj in enumerate(scene.objects):
        sel = torch.nonzero(owner == index).squeeze(1)
        if sel.numel() == 0:
            continue
        canonical = obj.shape.sample(sel.numel(), generator)
        for k, s in enumerate(times.tolist()):
            tracks[k, sel] = obj.world_points(canonical, s)
    return tracks.to(torch.float32), owner


def track_visibility(
    tracks: Float[Tensor, "T P 3"], cameras: Cameras, depth: Float[Tensor, "V T H W"]
) -> Tensor:
    """``[V, T, P]`` bool: the point projects inside view v at time t and is not occluded
    (its camera z agrees with the depth map at its pixel within 1%)."""
    V, T, H, W = depth.shape
    T_cam_world = cameras.T_cam_world.to(torch.float64)
    out = torch.zeros(V, T, tracks.shape[1], dtype=torch.bool)
    for v in range(V):
        p = tracks.to(torch.float64) @ T_cam_world[v, :3, :3].T + T_cam_world[v, :3, 3]
        z = p[..., 2]
        K = cameras.K[v]
        u = K[0, 0] * p[..., 0] / z + K[0, 2]
        w = K[1, 1] * p[..., 1] / z + K[1, 2]
        inside = (z > NEAR) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
        i = u.clamp(0, W - 1).long()
        j = w.clamp(0, H - 1).long()
        surface = depth[v][torch.arange(T)[:, None], j, i].to(torch.float64)
        out[v] = inside & ((surface - z).abs() <= 0.01 * z)
    return out


def synth_grid(
    scene: str = "default",
    seed: int = 0,
    views: int = 8,
    times: int = 8,
    height: int = 144,
    width: int = 256,
    arc: ArcConfig | None = None,
    fps: float = 8.0,
    num_tracks: int = 4096,
    progress: bool = False,
) -> Grid:
    """Render a synthetic dynamic scene into a grid with ground truth.

    The grid carries cameras, depth (camera z, 0 = background) and ``gt`` arrays: ``tracks``
    ``[T, P, 3]`` world positions of surface points, ``track_object`` ``[P]``, ``track_visible``
    ``[V, T, P]`` and ``instance`` ``[V, T, H, W]`` (0 = background, k = object k-1 of
    ``source["objects"]``). Frames are quantized to 8 bits, as they are stored.
    """
    arc = arc or ArcConfig()
    built = build_scene(scene, seed)
    cameras = arc_cameras(views, width, height, arc)
    s = time_values(times)
    frames = render(built, cameras, s, height, width, progress=progress)
    tracks, owner = sample_tracks(built, s, num_tracks, seed)
    visible = track_visibility(tracks, cameras, frames.depth)
    source = {
        "generator": "fourreal.synth",
        "scene": scene,
        "seed": seed,
        "description": built.description,
        "world_up": [0.0, 0.0, 1.0],
        "time_values": s.tolist(),
        "background": list(built.background),
        "arc": {**dataclasses.asdict(arc), "look_at": list(arc.look_at)},
        "objects": [
            {"name": obj.name, "shape": type(obj.shape).__name__, "dynamic": obj.dynamic}
            for obj in built.objects
        ],
    }
    return Grid(
        frames=torch.round(frames.rgb * 255) / 255,
        known=None,
        cameras=cameras,
        depth=frames.depth,
        fps=fps,
        source=source,
        gt={
            "tracks": tracks,
            "track_object": owner.to(torch.int16),
            "track_visible": visible,
            "instance": frames.instance,
        },
    )
