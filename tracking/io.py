"""Writing and reading the output of ``fourreal track`` (a folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_dir
from fourreal.io.grid import to_uint8
from fourreal.io.ply import write_point_ply
from fourreal.tracking.pipeline import ColumnTracks

FORMAT = "fourreal-tracks"
VERSION = 1


def save_tracks(tracks: ColumnTracks, frames: torch.Tensor, folder: str | os.PathLike[str]) -> Path:
    """Write ``tracks.safetensors``, ``canonical.ply``, ``cameras.json`` and ``tracks.png``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_dir(folder, marker="tracks.safetensors") as tmp:
        meta = {"format": FORMAT, "version": str(VERSION), "central": str(tracks.central),
                "stats": json.dumps(tracks.stats)}  # fmt: skip
        save_file(tracks.tensors(), tmp / "tracks.safetensors", metadata=meta)
        os.chmod(tmp / "tracks.safetensors", 0o644)  # safetensors creates it private
        write_point_ply(tmp / "canonical.ply", tracks.points, tracks.colors)
        cameras = {
            "central": tracks.central,
            "K": tracks.K.tolist(),
            "T_world_cam": tracks.T_world_cam.tolist(),
            "world": "camera of the central view (T_world_cam[central] is the identity)",
        }
        (tmp / "cameras.json").write_text(json.dumps(cameras, indent=1) + "\n")
        Image.fromarray(draw_tracks(tracks, frames)).save(tmp / "tracks.png")
    return folder


def load_tracks(folder: str | os.PathLike[str]) -> ColumnTracks:
    """Read a folder written by :func:`save_tracks`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(folder) / "tracks.safetensors"
    if not path.is_file():
        raise FourrealError(f"{path} is missing; run `fourreal track GRID -o {folder}` first")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        raise FourrealError(f"{path} is not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
        raise FourrealError(f"{path} is not fourreal tracks version {VERSION}")
    expected = set(ColumnTracks.__dataclass_fields__) - {"central", "stats"}
    if set(tensors) != expected:
        raise FourrealError(f"{path} lacks {sorted(expected - set(tensors))}")
    try:
        central = int(meta["central"])
        stats = json.loads(meta["stats"])
        if not isinstance(stats, dict):
            raise TypeError("stats must be a JSON object")
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise FourrealError(f"{path} has malformed metadata ({err!r})") from err
    _check_track_shapes(tensors, central, path)
    return ColumnTracks(central=central, stats=stats, **tensors)


def _check_track_shapes(tensors: dict[str, torch.Tensor], central: int, path: Path) -> None:
    """Every tensor's shape against ``V`` (from ``K``), ``N`` (from ``points``) and the depth
    maps' ``H x W``, so a malformed file fails here and not deep inside the reconstruction."""
    V = tensors["K"].shape[0] if tensors["K"].ndim == 3 else -1
    N = tensors["points"].shape[0] if tensors["points"].ndim == 2 else -1
    HW = tuple(tensors["depth"].shape[1:]) if tensors["depth"].ndim == 3 else (-1, -1)
    expected = {
        "K": (V, 3, 3), "T_world_cam": (V, 4, 4), "points": (N, 3), "colors": (N, 3),
        "keyframe": (N,), "per_view": (V, N, 3), "visible": (V, N), "T_cam_canonical": (V, 4, 4),
        "offsets": (V, N, 3), "depth": (V, *HW), "confidence": (V, *HW),
    }  # fmt: skip
    wrong = [f"{k} is {list(tensors[k].shape)}" for k, shape in expected.items()
             if tuple(tensors[k].shape) != shape]  # fmt: skip
    if V < 1 or N < 0 or wrong or not 0 <= central < V:
        raise FourrealError(
            f"{path} is inconsistent ({'; '.join(wrong[:3]) or f'central view {central}'}); "
            "run `fourreal track` again"
        )


def draw_tracks(tracks: ColumnTracks, frames: torch.Tensor, count: int = 300) -> np.ndarray:
    """The column's frames side by side with up to ``count`` points drawn where each view sees
    them: the same point has the same color in every frame."""
    V, _, H, W = frames.shape
    images = [Image.fromarray(img) for img in to_uint8(frames)]
    N = tracks.points.shape[0]
    pick = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:count]
    hues = np.linspace(0, 1, len(pick), endpoint=False)
    palette = [tuple(int(255 * c) for c in _hsv(h)) for h in hues]
    for v, image in enumerate(images):
        draw = ImageDraw.Draw(image)
        cam = tracks.per_view[v, pick].double()
        uv = cam[:, :2] / cam[:, 2:].clamp_min(1e-9) @ tracks.K[v, :2, :2].double().T
        uv = uv + tracks.K[v, :2, 2].double()
        for n, (x, y) in enumerate(uv.tolist()):
            if bool(tracks.visible[v, pick[n]]) and 0 <= x < W and 0 <= y < H:
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=palette[n])
    sheet = Image.new("RGB", (V * W + (V - 1) * 4, H), (20, 20, 20))
    for v, image in enumerate(images):
        sheet.paste(image, (v * (W + 4), 0))
    return np.asarray(sheet)


def _hsv(h: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, 0.9, 1.0)
