"""``fourreal eval``: render a scene at another grid's cameras and times and compare.

The scene's cameras live in its canonical frame (tracking's, when they were estimated); the
other grid's live in its own world. When the other grid has camera poses they are brought into
the scene's frame by the similarity that maps a reference grid's cameras onto the scene's (view
by view; rotation from the cameras' orientations, scale and shift from their centers): the
reference is ``align_to`` or, by default, the other grid itself when
it has as many views as the scene. A grid without poses is taken to be seen by the scene's own
cameras (same views).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.errors import FourrealError
from fourreal.io import load_grid
from fourreal.recon.losses import psnr, ssim
from fourreal.recon.render import rasterize
from fourreal.recon.scene import load_scene
from fourreal.tracking.geometry import apply_similarity, pose_similarity
from fourreal.types import Grid


def check_same_views(reference: Tensor, scene: Tensor) -> None:
    if reference.shape != scene.shape:
        raise FourrealError(
            f"aligning cameras needs the same views: the reference grid has {reference.shape[0]} "
            f"cameras, the scene {scene.shape[0]} (pass --align-to the grid the scene was made "
            "from, with its poses)"
        )


def cameras_in_scene(
    grid: Grid, meta: dict[str, Any], align_to: Grid | None
) -> tuple[Tensor, Tensor]:
    """``K [V, 3, 3]`` and ``T_world_cam [V, 4, 4]`` of ``grid`` in the scene's frame."""
    scene_K = torch.tensor(meta["cameras"]["K"], dtype=torch.float32)
    scene_T = torch.tensor(meta["cameras"]["T_world_cam"], dtype=torch.float32)
    if grid.cameras is None or grid.cameras.T_world_cam is None:
        if grid.views != len(scene_T):
            raise FourrealError(
                f"the grid has no camera poses and {grid.views} views, the scene "
                f"{len(scene_T)}: without poses it must be seen by the scene's own cameras"
            )
        K = scene_K if grid.cameras is None else grid.cameras.K.float().expand(grid.views, 3, 3)
        return K, scene_T
    reference = align_to if align_to is not None else grid
    if reference.cameras is None or reference.cameras.T_world_cam is None:
        raise FourrealError("the grid given to --align-to has no camera poses")
    ref = reference.cameras.T_world_cam
    check_same_views(ref, scene_T)
    s, R, t = pose_similarity(ref, scene_T)
    K = grid.cameras.K.float().expand(grid.views, 3, 3)
    return K, apply_similarity(grid.cameras.T_world_cam, s, R, t).float()


@torch.no_grad()
def evaluate_scene(
    scene: str | os.PathLike[str],
    grid: str | os.PathLike[str],
    align_to: str | os.PathLike[str] | None = None,
    frames: list[tuple[int, int]] | None = None,
    backend: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """PSNR and SSIM of the scene rendered at every frame of ``grid`` (or ``frames``)."""
    meta, model = load_scene(scene)
    other = load_grid(grid)
    reference = load_grid(align_to) if align_to is not None else None
    K, T_world_cam = cameras_in_scene(other, meta, reference)
    T_cam_world = torch.linalg.inv(T_world_cam)
    times = torch.linspace(0, 1, other.times) if other.times > 1 else torch.zeros(1)
    background = torch.tensor(meta.get("background", [0.0, 0.0, 0.0]), dtype=torch.float32)
    frames = frames or [(v, t) for v in range(other.views) for t in range(other.times)]
    for v, t in frames:
        if not (0 <= v < other.views and 0 <= t < other.times):
            raise FourrealError(f"frame ({v}, {t}) is outside the {other.views}x{other.times} grid")
    per_frame = []
    for v, t in tqdm(frames, desc="evaluating", disable=not progress):
        g = model.at_time(float(times[t]))
        out = rasterize(g.means, g.scales[:, 0], g.opacities, g.colors, T_cam_world[v], K[v],
                        other.width, other.height, background, backend=backend)  # fmt: skip
        rgb = out.rgb.clamp(0, 1)
        target = other.frames[v, t].permute(1, 2, 0)
        per_frame.append({"view": v, "time": t, "psnr": psnr(rgb, target),
                          "ssim": float(ssim(rgb, target))})  # fmt: skip
    return {
        "scene": str(Path(scene)),
        "grid": str(Path(grid)),
        "align_to": None if align_to is None else str(Path(align_to)),
        "psnr": sum(f["psnr"] for f in per_frame) / len(per_frame),
        "ssim": sum(f["ssim"] for f in per_frame) / len(per_frame),
        "frames": per_frame,
    }
