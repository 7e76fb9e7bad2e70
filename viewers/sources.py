"""What ``fourreal view`` opens, loaded and checked before any server starts.

- a scene folder, or its ``scene.ply`` with ``scene.json`` and ``deform.safetensors`` beside it:
  dynamic; the deformation is evaluated once for every time of the scene (positions
  ``p + Δp_t``; view offsets ``Δp_v`` are not shown);
- any standard 3DGS PLY: static; anisotropic scales and rotations, colors from SH degree 0;
- a folder or ``.zip`` of per-time PLYs ``t000.ply``, ``t001.ply``, …;
- a grid folder (``grid.json``): its frames on camera frustums, over time.

Every problem raises one :class:`~fourreal.errors.FourrealError` that names the file.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fourreal.errors import FourrealError
from fourreal.io.archive import check_sizes, copy_member, open_zip
from fourreal.io.gaussian_ply import PlyError, read_ply, read_ply_header
from fourreal.memory import check_fits
from fourreal.viewers.cameras import SceneCameras
from fourreal.viewers.splats import Splats

Kind = Literal["dynamic", "static", "sequence", "grid"]
_STEP_NAME = re.compile(r"t(\d+)\.ply")
_ACCEPTS = (
    "fourreal view takes a scene folder (or its scene.ply), a 3DGS .ply, a folder or .zip of "
    "per-time PLYs (t000.ply, t001.ply, ...), or a grid folder (grid.json)"
)


class ViewerInputError(FourrealError):
    """What was given to the viewer cannot be shown."""


@dataclass
class ViewScene:
    """Everything the viewer shows, precomputed: one :class:`Splats` per time step (none for a
    grid), the time of each step, cameras, grid frames ``images [V, T, h, w, 3]`` (uint8) and
    notes for the user."""

    path: Path
    kind: Kind
    steps: list[Splats]
    time_values: list[float]
    cameras: SceneCameras | None = None
    images: np.ndarray | None = None
    fps: float = 8.0
    notes: list[str] = field(default_factory=list)

    @property
    def num_times(self) -> int:
        return len(self.time_values)

    @property
    def num_gaussians(self) -> int:
        return max((len(s) for s in self.steps), default=0)


def load_view_scene(path: str | os.PathLike[str], max_image_side: int = 320) -> ViewScene:
    """Load whatever ``path`` is (see the module docstring) for the viewer."""
    path = Path(path)
    if not path.exists():
        raise ViewerInputError(f"{path} does not exist; {_ACCEPTS}")
    if path.is_dir():
        if (path / "scene.json").is_file():
            return load_dynamic(path)
        if (path / "grid.json").is_file():
            return load_grid_view(path, max_image_side)
        if any(_STEP_NAME.fullmatch(p.name) for p in path.iterdir()):
            return load_sequence_folder(path)
        raise ViewerInputError(
            f"{path} has no scene.json, grid.json or t000.ply: nothing to show; {_ACCEPTS}"
        )
    suffix = path.suffix.lower()
    if suffix == ".ply":
        if path.name == "scene.ply" and (path.parent / "scene.json").is_file():
            return load_dynamic(path.parent)
        return load_static(path)
    if suffix == ".zip":
        return load_sequence_zip(path)
    if path.name == "grid.json":
        return load_grid_view(path.parent, max_image_side)
    raise ViewerInputError(f"{path}: unknown kind of file; {_ACCEPTS}")


def load_static(path: Path) -> ViewScene:
    """A plain 3DGS PLY (higher SH bands are not read; a note says so)."""
    header = read_ply_header(path)
    if header.count == 0:
        raise PlyError(f"{path} has no Gaussians (element vertex 0)")
    splats = Splats.from_params(read_ply(path, sh_rest=False))
    notes = []
    if header.sh_rest_count:
        degree = round(math.sqrt(header.sh_rest_count + 1)) - 1
        notes.append(
            f"{path.name} has spherical harmonics up to degree {degree}; the viewer shows "
            "degree 0 (view-independent color) and ignores the higher bands"
        )
    if "opacity" not in header.properties:
        notes.append(f"{path.name} is a plain point cloud: shown as small opaque splats")
    return ViewScene(path, "static", [splats], [0.0], notes=notes)


def load_dynamic(folder: Path) -> ViewScene:
    """A fourreal scene folder: canonical Gaussians moved by the deformation field."""
    from fourreal.recon.scene import SceneError, load_scene

    meta, model = load_scene(folder)
    meta_path = folder / "scene.json"
    times = _float_list(meta.get("times"), meta_path, "times")
    if not times:
        raise SceneError(f"{meta_path}: 'times' is empty; the scene has no time steps")
    if len(model) == 0:
        raise SceneError(f"{folder / 'scene.ply'} has no Gaussians")
    positions = evaluate_positions(model, torch.tensor(times, dtype=torch.float32))
    if not np.isfinite(positions).all():
        raise SceneError(
            f"{folder / 'deform.safetensors'} moves Gaussians to NaN or infinite positions; "
            "the deformation field is broken (reconstruct the scene again)"
        )
    with torch.no_grad():
        canonical = Splats.from_params(model.canonical())
        # opacity times presence: Gaussians seeded at one time show at that time only (steps
        # without a presence table share one opacity array, so only their centers are packed)
        opacities = [canonical.opacities] * len(times)
        if model.presence_logits.shape[1] > 0:
            table = model.opacities_at(torch.tensor(times, dtype=torch.float32))
            opacities = list(table.clamp(0, 1).numpy().astype(np.float32))
    steps = [
        Splats(positions[t], canonical.scales, canonical.quats, canonical.rgbs, opacities[t])
        for t in range(len(times))
    ]  # fmt: skip
    cameras = _scene_cameras(meta.get("cameras"), meta_path)
    fps = float(meta.get("fps", 8.0))
    return ViewScene(folder / "scene.ply", "dynamic", steps, times, cameras, fps=fps)


def evaluate_positions(model, times: torch.Tensor, budget: int = 1 << 22) -> np.ndarray:
    """Positions ``[T, N, 3]`` (float32) of a :class:`~fourreal.recon.model.DynamicGaussians` at
    normalized ``times [T]``, without view offsets; evaluated in chunks of Gaussians so the MLP's
    activations stay near ``budget`` floats."""
    N = len(model)
    check_fits(
        len(times) * N * 3 * 4 * 2,  # positions, and the packed splats made from them
        f"showing {N} Gaussians at {len(times)} times",
        "export fewer time steps (fourreal export) and view those, or use a smaller scene",
    )
    out = np.empty((len(times), N, 3), dtype=np.float32)
    chunk = max(1024, budget // (len(times) * model.deform.config.width))
    with torch.no_grad():
        means = model.means.detach()
        for start in range(0, N, chunk):
            p = means[start : start + chunk]
            moved = p[None] + model.deform(p, times)  # [T, n, 3]
            out[:, start : start + chunk] = moved.numpy()
    return out


def load_sequence_folder(folder: Path) -> ViewScene:
    """``t000.ply``, ``t001.ply``, … in a folder: one time step each."""
    files = {p.name: p for p in folder.iterdir() if _STEP_NAME.fullmatch(p.name)}
    names = _step_names(files, folder)
    steps = _share_constant_arrays([_read_step(files[name]) for name in names])
    return ViewScene(folder, "sequence", steps, [float(t) for t in range(len(names))])


def load_sequence_zip(path: Path) -> ViewScene:
    """A zip of per-time PLYs (at its root or in one folder), read one member at a time.

    The zip is not trusted: absolute or ``..`` member names are refused, and declared sizes and
    compression ratios are bounded before anything is decompressed (:mod:`fourreal.io.archive`).
    """
    archive = open_zip(path)
    with archive, tempfile.TemporaryDirectory(prefix="fourreal-view-") as tmp:
        members = {}
        for info in archive.infolist():
            name = Path(info.filename).name
            if info.is_dir() or not _STEP_NAME.fullmatch(name):
                continue
            if name in members:
                raise ViewerInputError(f"{path} holds {name} twice ({info.filename})")
            members[name] = info
        names = _step_names(members, path)
        check_sizes([members[name] for name in names], path)
        steps = []
        for name in names:
            target = Path(tmp) / name
            with open(target, "wb") as dst:
                copy_member(archive, members[name], dst, path)
            try:
                steps.append(_read_step(target))
            except PlyError as err:
                where = f"{path}:{members[name].filename}"
                raise PlyError(str(err).replace(str(target), where)) from None
            target.unlink()
    steps = _share_constant_arrays(steps)
    return ViewScene(path, "sequence", steps, [float(t) for t in range(len(names))])


def load_grid_view(folder: Path, max_image_side: int) -> ViewScene:
    """A grid: its frames, shrunk to ``max_image_side``, shown on the views' frustums."""
    from fourreal.io import load_grid

    grid = load_grid(folder)
    frames = grid.frames.flatten(0, 1)  # [V*T, 3, H, W]
    scale = min(1.0, max_image_side / max(grid.height, grid.width))
    if scale < 1:
        size = (max(1, round(grid.height * scale)), max(1, round(grid.width * scale)))
        frames = torch.nn.functional.interpolate(frames, size, mode="area")
    images = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    images = images.reshape(grid.views, grid.times, *images.shape[1:]).numpy()
    notes = []
    cameras = None
    if grid.cameras is not None:
        T_world_cam = grid.cameras.T_world_cam
        cameras = SceneCameras(
            grid.cameras.K.double().numpy(),
            None if T_world_cam is None else T_world_cam.double().numpy(),
            grid.width, grid.height,
        )  # fmt: skip
    if cameras is None or not cameras.has_poses:
        notes.append("grid.json has no camera poses: the views are laid out side by side")
    times = [float(t) / grid.fps for t in range(grid.times)]
    return ViewScene(folder, "grid", [], times, cameras, images, grid.fps, notes)


def _read_step(path: Path) -> Splats:
    if read_ply_header(path).count == 0:
        raise PlyError(f"{path} has no Gaussians (element vertex 0)")
    return Splats.from_params(read_ply(path, sh_rest=False))


def _step_names(names: dict[str, object], where: Path) -> list[str]:
    """``t000.ply`` … in time order; the numbers must run from 0 without gaps."""
    ordered = sorted(names, key=lambda n: int(_STEP_NAME.fullmatch(n).group(1)))
    if not ordered:
        raise ViewerInputError(f"{where} holds no per-time PLYs (t000.ply, t001.ply, ...)")
    for t, name in enumerate(ordered):
        if int(_STEP_NAME.fullmatch(name).group(1)) != t:
            raise ViewerInputError(
                f"{where}: time {t} is missing (expected t{t:03d}.ply before {name}); "
                "per-time PLYs must be numbered from t000 without gaps"
            )
    return ordered


def _share_constant_arrays(steps: list[Splats]) -> list[Splats]:
    """Let steps use the previous step's arrays where they are equal (saves memory, and lets
    packing reuse them: exported sequences only move their centers)."""
    for prev, step in itertools.pairwise(steps):
        for name in ("scales", "quats", "rgbs", "opacities"):
            if np.array_equal(getattr(prev, name), getattr(step, name)):
                setattr(step, name, getattr(prev, name))
    return steps


def _float_list(value, where: Path, key: str) -> list[float]:
    try:
        values = [float(x) for x in value]
    except (TypeError, ValueError):
        raise ViewerInputError(f"{where}: '{key}' must be a list of numbers") from None
    if not all(math.isfinite(x) for x in values):
        raise ViewerInputError(f"{where}: '{key}' holds NaN or infinite values")
    return values


def _scene_cameras(value, where: Path) -> SceneCameras | None:
    if value is None:
        return None
    try:
        K = np.asarray(value["K"], dtype=np.float64)
        T = value.get("T_world_cam")
        T_world_cam = None if T is None else np.asarray(T, dtype=np.float64)
        width, height = int(value["width"]), int(value["height"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ViewerInputError(f"{where}: 'cameras' is malformed ({err})") from None
    ok = K.ndim == 3 and K.shape[1:] == (3, 3) and np.isfinite(K).all() and width > 0
    if T_world_cam is not None:
        ok = ok and T_world_cam.shape == (len(K), 4, 4) and np.isfinite(T_world_cam).all()
    if not ok or height <= 0:
        raise ViewerInputError(
            f"{where}: 'cameras' must hold K [V][3][3], T_world_cam [V][4][4] and a positive "
            "width and height"
        )
    return SceneCameras(K, T_world_cam, width, height)


__all__ = ["ViewScene", "ViewerInputError", "load_view_scene"]
