"""Grid format version 1 (design.md §3): a folder with ``grid.json`` and one PNG per frame."""

from __future__ import annotations

import json
import math
import os
import re
import tokenize
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fourreal.errors import GridFormatError, ShapeError
from fourreal.io.atomic import atomic_dir
from fourreal.memory import check_fits
from fourreal.types import Cameras, Grid

FORMAT = "fourreal-grid"
VERSION = 1
FRAME_PATTERN = "frames/v{v:03d}_t{t:03d}.png"
DEPTH_PATTERN = "depth/v{v:03d}_t{t:03d}.npy"
_THREADS = 4


# ----------------------------------------------------------------------------------- saving


def save_grid(grid: Grid, path: str | os.PathLike[str]) -> Path:
    """Write ``grid`` to the folder ``path`` (format version 1) and return the path.

    Frames are quantized to 8-bit PNG. The grid is written into a temporary sibling folder and
    renamed at the end, so an interrupted save leaves the previous folder (or nothing), never a
    ``grid.json`` that points to missing frames. An existing non-empty folder is replaced only if
    it is itself a grid.
    """
    path = Path(path)
    with atomic_dir(path, marker="grid.json") as tmp:
        frames_u8 = to_uint8(grid.frames)  # [V, T, H, W, 3]
        jobs = [(v, t) for v in range(grid.views) for t in range(grid.times)]
        (tmp / "frames").mkdir()

        def write_frame(vt: tuple[int, int]) -> None:
            v, t = vt
            Image.fromarray(frames_u8[v, t]).save(
                tmp / FRAME_PATTERN.format(v=v, t=t), compress_level=4
            )

        _run_all(write_frame, jobs)
        if grid.depth is not None:
            (tmp / "depth").mkdir()
            depth = grid.depth.detach().cpu().to(torch.float32).numpy()
            for v, t in jobs:
                np.save(tmp / DEPTH_PATTERN.format(v=v, t=t), depth[v, t])
        if grid.gt:
            (tmp / "gt").mkdir()
            for name, array in grid.gt.items():
                if not name.isidentifier():
                    raise ShapeError(f"ground-truth name {name!r} must be a plain identifier")
                np.save(tmp / "gt" / f"{name}.npy", array.detach().cpu().numpy())
        meta = grid_json(grid)
        # grid.json last: a folder is a grid only once every file it names exists.
        (tmp / "grid.json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def grid_json(grid: Grid) -> dict[str, Any]:
    cameras = None
    if grid.cameras is not None:
        cameras = {
            "K": grid.cameras.K.tolist(),
            "T_world_cam": None
            if grid.cameras.T_world_cam is None
            else grid.cameras.T_world_cam.tolist(),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "views": grid.views,
        "times": grid.times,
        "height": grid.height,
        "width": grid.width,
        "fps": grid.fps,
        "frame_pattern": FRAME_PATTERN,
        "known": None if grid.known is None else grid.known.tolist(),
        "cameras": cameras,
        "depth_pattern": None if grid.depth is None else DEPTH_PATTERN,
        "source": grid.source,
    }


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[..., 3, H, W]`` floats in [0, 1] to ``[..., H, W, 3]`` uint8 (rounded)."""
    x = frames.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous().numpy()


def _run_all(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Map ``fn`` over ``items`` on a few threads (PNG codecs release the GIL)."""
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------------------------- loading


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read a grid folder (or its ``grid.json``), validating everything.

    Raises :class:`GridFormatError` naming the file and what is wrong: missing or bad JSON, an
    unknown format or version, zero views or times, a missing, unreadable or wrongly sized frame,
    camera arrays of the wrong shape, malformed or non-finite depth.
    """
    path = Path(path)
    root = path.parent if path.name == "grid.json" else path
    json_path = root / "grid.json"
    if not root.is_dir():
        raise GridFormatError(f"{root} is not a folder; a grid is a folder with a grid.json")
    if not json_path.is_file():
        raise GridFormatError(
            f"{json_path} is missing: {root} is not a fourreal grid "
            "(make one with `fourreal synth` or fourreal.io.save_grid)"
        )
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise GridFormatError(
            f"{json_path} is not valid JSON ({err}); fix or re-export it"
        ) from err
    spec = _GridSpec.parse(meta, json_path)
    check_fits(
        spec.memory_bytes(),
        f"{json_path} ({spec.views} views x {spec.times} times of {spec.width}x{spec.height})",
        "make the grid smaller (fourreal import --height/--width/--max-frames, or fewer views "
        "and times)",
    )

    flat = []
    for v in range(spec.views):
        for t in range(spec.times):
            flat.append(spec.resolve(root, spec.frame_pattern, v, t))
            if not _is_file(flat[-1]):  # fail at the first missing frame, before reading any
                raise GridFormatError(
                    f"{flat[-1]} is missing (grid.json declares {spec.views} views x "
                    f"{spec.times} times); re-export the grid or restore the file"
                )
    images = _run_all(lambda p: _read_frame(p, spec.height, spec.width), flat)
    frames = torch.from_numpy(np.stack(images)).reshape(
        spec.views, spec.times, spec.height, spec.width, 3
    )
    frames = frames.permute(0, 1, 4, 2, 3).to(torch.float32) / 255

    depth = None
    if spec.depth_pattern is not None:
        maps = [
            _read_depth(spec.resolve(root, spec.depth_pattern, v, t), spec.height, spec.width)
            for v in range(spec.views)
            for t in range(spec.times)
        ]
        depth = torch.from_numpy(np.stack(maps)).reshape(
            spec.views, spec.times, spec.height, spec.width
        )

    gt = {}
    gt_dir = root / "gt"
    if gt_dir.is_dir():
        for file in sorted(gt_dir.glob("*.npy")):
            gt[file.stem] = torch.from_numpy(_read_npy(file))

    try:
        return Grid(
            frames=frames,
            known=spec.known,
            cameras=spec.cameras,
            depth=depth,
            fps=spec.fps,
            source=spec.source,
            gt=gt,
        )
    except ShapeError as err:  # pragma: no cover - the spec checks above catch these first
        raise GridFormatError(f"{json_path}: {err}") from err


class _GridSpec:
    """The validated content of a grid.json."""

    def __init__(self, meta: dict[str, Any], where: Path) -> None:
        self.where = where
        self.meta = meta

    def fail(self, what: str) -> GridFormatError:
        return GridFormatError(f"{self.where}: {what}")

    @classmethod
    def parse(cls, meta: Any, where: Path) -> _GridSpec:
        spec = cls(meta, where)
        if not isinstance(meta, dict):
            raise spec.fail("must hold a JSON object")
        if meta.get("format") != FORMAT:
            raise spec.fail(f'"format" must be "{FORMAT}", got {meta.get("format")!r}')
        if meta.get("version") != VERSION:
            raise spec.fail(
                f"unknown version {meta.get('version')!r}: this fourreal reads grid version "
                f"{VERSION}; upgrade fourreal or re-export the grid"
            )
        spec.views = spec.positive_int("views")
        spec.times = spec.positive_int("times")
        spec.height = spec.positive_int("height")
        spec.width = spec.positive_int("width")
        fps = meta.get("fps", 8)
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
            raise spec.fail(f'"fps" must be a positive number, got {fps!r}')
        spec.fps = float(fps)
        spec.frame_pattern = spec.pattern("frame_pattern", required=True)
        spec.depth_pattern = spec.pattern("depth_pattern", required=False)
        spec.known = spec.parse_known(meta.get("known"))
        spec.cameras = spec.parse_cameras(meta.get("cameras"))
        source = meta.get("source", {})
        spec.source = source if isinstance(source, dict) else {"value": source}
        return spec

    def memory_bytes(self) -> int:
        """Estimated peak memory of loading: uint8 frames, float32 frames, float32 depth, and
        about a kilobyte of bookkeeping per frame."""
        frames = self.views * self.times
        pixels = frames * self.height * self.width
        depth = 8 * pixels if self.depth_pattern is not None else 0
        return pixels * 3 * (1 + 4) + depth + frames * 1024

    def positive_int(self, key: str) -> int:
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f'"{key}" must be an integer, got {value!r}')
        if value <= 0:
            raise self.fail(f'"{key}" is {value}: a grid needs at least one of them')
        return value

    def pattern(self, key: str, required: bool) -> str | None:
        value = self.meta.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self.fail(f'"{key}" must be a string like "{FRAME_PATTERN}", got {value!r}')
        if len(value) > 512 or re.search(r"\{[^}]*\d{4,}[^}]*\}", value):
            raise self.fail(f'"{key}" is too long or pads numbers too wide: {value[:80]!r}')
        try:
            value.format(v=0, t=0)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as err:
            raise self.fail(f'"{key}" {value!r} is not a pattern over {{v}} and {{t}}') from err
        return value

    def resolve(self, root: Path, pattern: str, v: int, t: int) -> Path:
        rel = pattern.format(v=v, t=t)
        try:
            full = (root / rel).resolve()
        except (OSError, ValueError, RuntimeError) as err:  # too long, NUL byte, symlink loop
            raise self.fail(f"pattern gives an unusable file name {rel[:80]!r} ({err})") from err
        if not full.is_relative_to(root.resolve()):
            raise self.fail(f"pattern points outside the grid folder: {rel}")
        return full

    def parse_known(self, value: Any) -> torch.Tensor | None:
        if value is None:
            return None
        array = _as_array(value, bool)
        if array is None or array.shape != (self.views, self.times):
            raise self.fail(
                f'"known" must be null or {self.views} lists of {self.times} booleans '
                f"(views x times)"
            )
        return torch.from_numpy(array)

    def parse_cameras(self, value: Any) -> Cameras | None:
        if value is None:
            return None
        if not isinstance(value, dict) or "K" not in value:
            raise self.fail('"cameras" must be null or an object with "K" (and "T_world_cam")')
        K = _as_array(value["K"], float)
        if K is not None and K.shape == (3, 3):
            K = np.broadcast_to(K, (self.views, 3, 3)).copy()
        if K is None or K.shape != (self.views, 3, 3) or not np.isfinite(K).all():
            raise self.fail(
                f'"cameras.K" must be one 3x3 matrix or {self.views} of them (one per view), '
                f"with finite numbers; got shape {None if K is None else list(K.shape)}"
            )
        if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
            raise self.fail('"cameras.K" has a focal length <= 0')
        T_world_cam = value.get("T_world_cam")
        if T_world_cam is not None:
            T_world_cam = _as_array(T_world_cam, float)
            if (
                T_world_cam is None
                or T_world_cam.shape != (self.views, 4, 4)
                or not np.isfinite(T_world_cam).all()
            ):
                raise self.fail(
                    f'"cameras.T_world_cam" must be null or {self.views} 4x4 matrices '
                    "(camera-to-world, OpenCV axes) with finite numbers"
                )
            T_world_cam = torch.from_numpy(T_world_cam)
        return Cameras(K=torch.from_numpy(K), T_world_cam=T_world_cam)


def _as_array(value: Any, kind: type) -> np.ndarray | None:
    """A nested JSON list as a numpy array of ``kind``, or None if it is ragged or mistyped."""
    try:
        array = np.array(value, dtype=object)
    except ValueError:
        return None
    if array.dtype != object or array.size == 0:
        return None
    flat = array.reshape(-1)
    if kind is bool:
        if not all(isinstance(x, bool) for x in flat):
            return None
        return array.astype(bool)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
        return None
    return array.astype(np.float64)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _read_frame(path: Path, height: int, width: int) -> np.ndarray:
    if not _is_file(path):
        raise GridFormatError(
            f"{path} is missing (grid.json declares it); re-export the grid or restore the file"
        )
    try:
        with Image.open(path) as image:
            size = image.size
            if size != (width, height):
                raise GridFormatError(
                    f"{path} is {size[0]}x{size[1]} but grid.json says {width}x{height}; "
                    "resize it or fix width/height in grid.json"
                )
            if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                raise GridFormatError(
                    f"{path} has pixel mode {image.mode}; save frames as 8-bit RGB PNG"
                )
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as err:  # fmt: skip
        raise GridFormatError(
            f"{path} is not a readable image ({err}); re-export or replace it"
        ) from err
    return array


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, its header checked against the file size before anything is allocated
    (a 1 KB file cannot ask for gigabytes); pickled object arrays are refused."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unknown .npy version {version}")
            read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0", None)
            if read_header is None:  # version 3.0 has the layout of 2.0 (utf-8 field names)
                read_header = np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f, max_header_size=10_000)
            if dtype.hasobject:
                raise ValueError("object arrays (pickles) are not loaded")
            need = f.tell() + math.prod(shape) * dtype.itemsize
            size = os.fstat(f.fileno()).st_size
            if need > size:
                raise ValueError(
                    f"its header declares {list(shape)} {dtype} ({need} bytes) but the file has "
                    f"{size} bytes"
                )
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except (
        OSError,
        ValueError,
        EOFError,
        TypeError,
        SyntaxError,
        KeyError,
        RecursionError,
        tokenize.TokenError,
    ) as err:  # fmt: skip  (numpy parses the header as Python)
        raise GridFormatError(f"{path} is not a readable .npy array ({err})") from err


def _read_depth(path: Path, height: int, width: int) -> np.ndarray:
    if not _is_file(path):
        raise GridFormatError(f"{path} is missing (grid.json has a depth_pattern)")
    depth = _read_npy(path)
    if depth.shape != (height, width) or depth.dtype.kind != "f":
        raise GridFormatError(
            f"{path} must be a float array of shape ({height}, {width}) (camera z), "
            f"got {depth.dtype} {depth.shape}"
        )
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise GridFormatError(
            f"{path} has {bad} NaN or infinite values; depth must be finite (0 = no surface)"
        )
    if (depth < 0).any():
        raise GridFormatError(f"{path} has negative depth; camera z must be >= 0 (0 = no surface)")
    return depth.astype(np.float32, copy=False)
