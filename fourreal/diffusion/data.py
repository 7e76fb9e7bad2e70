"""Training data for the grid generator (design.md §8; paper §3.3, §4.2).

Three kinds of samples, all streamed (made on demand, nothing written to disk) and fully
determined by ``(seed, index)``:

- **videos** (stage 0): single videos of both kinds, as one-row or one-column grids: a
  fixed-view video ``[1, T]`` (a synthetic scene seen by one camera, or a clip of a user video)
  or a freeze-time video ``[V, 1]`` (a synthetic scene at one time seen along an arc, or one
  frame swept by a smooth 2D affine camera path).
- **pseudo-4D grids** (stage 1): a dynamic video (the time axis) under a continuous random 2D
  affine transform that varies smoothly along the view axis (the camera axis): ``[V, T]``.
- **multi-view grids** (stage 2): synthetic dynamic scenes rendered on random arcs: ``[V, T]``;
  with ``assets``, also animated 3D assets (the bundled panda, a user's glTF) on random arcs.

Frames are float in [0, 1]; row ``v = 0`` is the untransformed video (the identity warp).
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.types import Grid

Kind = Literal["videos", "pseudo4d", "multiview"]
KINDS: tuple[Kind, ...] = ("videos", "pseudo4d", "multiview")
_VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}


@dataclass(frozen=True)
class DataConfig:
    """Sizes, randomness and sources of the training samples."""

    views: int = 4
    times: int = 4
    height: int = 32
    width: int = 32
    seed: int = 0
    scenes: tuple[str, ...] = ("default", "orbit", "wave", "spin")
    """Synthetic scenes to draw from (each sample picks one and a fresh scene seed)."""
    videos: Path | None = None
    """A folder of user videos (or image-sequence subfolders) to use as dynamic videos instead
    of synthetic fixed-view renders."""
    max_rotation_deg: float = 12.0
    """Largest rotation of the last view of a pseudo-4D grid relative to the first."""
    max_log_scale: float = 0.15
    """Largest |log scale| of the last view."""
    max_translation: float = 0.12
    """Largest translation of the last view, as a fraction of the frame size."""
    arc_deg: tuple[float, float] = (20.0, 70.0)
    """Range of arc angles of the multi-view grids' cameras."""
    assets: tuple[str, ...] = ()
    """Animated assets (``panda`` or .glb/.gltf/.egg/.bam paths; needs ``fourreal[assets]``)
    that multi-view grids are also rendered from: a random clip start, arc, elevation and
    azimuth per sample (the paper's animated-Objaverse data)."""
    asset_share: float = 0.5
    """Fraction of the multi-view grids taken from ``assets`` (when any are given)."""


def sample_seed(seed: int, index: int, salt: int = 0) -> int:
    """The seed of sample ``index`` of a stream seeded ``seed`` (a fixed integer hash, the same
    on every machine and run)."""
    x = (seed * 0x9E3779B1 + index * 0x85EBCA77 + salt * 0xC2B2AE3D) & 0xFFFFFFFFFFFF
    x ^= x >> 17
    x = (x * 0x2545F491) & 0xFFFFFFFFFFFF
    return x ^ (x >> 23)


# ---------------------------------------------------------------------------- affine camera paths


def affine_path(views: int, config: DataConfig, generator: torch.Generator) -> Float[Tensor, "V 4"]:
    """Per view ``(angle_deg, log_scale, tx, ty)`` of a smooth random 2D camera path: zero at
    ``v = 0``, a random end point at ``v = V − 1``, along a random smooth (quadratic) curve."""
    limits = torch.tensor(
        [
            config.max_rotation_deg,
            config.max_log_scale,
            config.max_translation,
            config.max_translation,
        ]
    )
    end = (torch.rand(4, generator=generator) * 2 - 1) * limits
    bend = (torch.rand(4, generator=generator) * 2 - 1) * 0.5  # curvature of each parameter
    s = torch.linspace(0, 1, views)[:, None]
    return end * (s + bend * s * (s - 1))


def warp_frames(
    frames: Float[Tensor, "N 3 H W"], params: Float[Tensor, "N 4"]
) -> Float[Tensor, "N 3 H W"]:
    """Rotate, scale and translate each frame about its center (kornia; reflected borders, so
    no black corners enter the data). ``params`` rows are ``(angle_deg, log_scale, tx, ty)``
    with translations as fractions of the width and height."""
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    N, _, H, W = frames.shape
    center = torch.tensor([[(W - 1) / 2, (H - 1) / 2]]).expand(N, 2)
    scale = params[:, 1:2].exp().expand(N, 2)
    matrix = get_rotation_matrix2d(center, params[:, 0], scale)
    matrix[:, 0, 2] += params[:, 2] * W
    matrix[:, 1, 2] += params[:, 3] * H
    out = warp_affine(frames, matrix, (H, W), mode="bilinear", padding_mode="reflection",
                      align_corners=True)  # fmt: skip
    return out.clamp(0, 1)


def pseudo_4d(
    video: Float[Tensor, "T 3 H W"], views: int, config: DataConfig, generator: torch.Generator
) -> Float[Tensor, "V T 3 H W"]:
    """A pseudo-4D grid: view ``v`` is the whole video under the affine camera ``v`` of one
    smooth random path (row 0 is the video itself)."""
    T = video.shape[0]
    params = affine_path(views, config, generator)  # [V, 4]
    frames = video[None].expand(views, *video.shape).reshape(views * T, *video.shape[1:])
    warped = warp_frames(frames, params.repeat_interleave(T, dim=0))
    warped[:T] = video  # the identity warp, exactly
    return warped.reshape(views, T, *video.shape[1:])


# ---------------------------------------------------------------------------- sources


def _synthetic(config: DataConfig, seed: int, views: int, times: int) -> Tensor:
    """The frames of :func:`synthetic_grid`."""
    return synthetic_grid(config, seed, views, times).frames


def synthetic_grid(config: DataConfig, seed: int, views: int, times: int) -> Grid:
    """A synthetic grid ``[views, times]`` of a random scene on a random arc, with its ground
    truth (cameras, depth)."""
    from fourreal.synth import ArcConfig, synth_grid

    g = torch.Generator().manual_seed(seed)
    u = torch.rand(4, generator=g).tolist()
    scene = config.scenes[int(u[0] * len(config.scenes)) % len(config.scenes)]
    lo, hi = config.arc_deg
    arc = ArcConfig(
        arc_deg=lo + (hi - lo) * u[1],
        azimuth_deg=-90.0 + 60.0 * (u[2] - 0.5),
        radius=3.0 + 0.8 * u[3],
    )
    return synth_grid(scene, seed % 2**31, views, times, config.height, config.width, arc=arc,
                      num_tracks=1)  # fmt: skip


@functools.lru_cache(maxsize=64)
def asset_clips(asset: str) -> tuple[str, ...]:
    """The clip names of an asset (loaded once per process; a missing file or panda3d raises
    a FourrealError, so calling this first checks an asset before training)."""
    from fourreal.synth.assets import list_clips

    return tuple(c.name for c in list_clips(asset))


def _asset(config: DataConfig, seed: int, views: int, times: int) -> Tensor:
    """A grid ``[views, times]`` of a random asset of ``config.assets``: a random stretch of one
    of its clips, seen from a random arc, elevation and azimuth."""
    from fourreal.synth.assets import AssetCameras, asset_grid

    g = torch.Generator().manual_seed(seed)
    u = torch.rand(7, generator=g).tolist()
    asset = config.assets[int(u[0] * len(config.assets)) % len(config.assets)]
    clips = asset_clips(asset)
    clip = clips[int(u[6] * len(clips)) % len(clips)] if clips else None
    lo, hi = config.arc_deg
    cameras = AssetCameras(
        arc_deg=lo + (hi - lo) * u[1], elevation_deg=5.0 + 30.0 * u[2], azimuth_deg=360.0 * u[3]
    )
    grid = asset_grid(asset, clip, views=views, times=times, height=config.height,
                      width=config.width, cameras=cameras, frame_step=1.0 + 3.0 * u[4],
                      start_frame=100.0 * u[5], num_tracks=1, supersample=2)  # fmt: skip
    return grid.frames


def _multiview(config: DataConfig, seed: int) -> Tensor:
    """A multi-view grid: an asset's (``asset_share`` of them, when assets are given) or a
    synthetic scene's."""
    share = (seed >> 5) % 1000 / 1000
    if config.assets and share < config.asset_share:
        return _asset(config, seed, config.views, config.times)
    return _synthetic(config, seed, config.views, config.times)


def list_videos(folder: Path) -> list[Path]:
    """Video files and image-sequence subfolders directly inside ``folder``, sorted."""
    if not folder.is_dir():
        raise FourrealError(f"--videos {folder} is not a folder of videos")
    found = sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in _VIDEO_SUFFIXES)
    )
    if not found:
        raise FourrealError(
            f"--videos {folder} holds no videos ({', '.join(sorted(_VIDEO_SUFFIXES))}) or "
            "image-sequence folders"
        )
    return found


def _user_clip(config: DataConfig, files: list[Path], seed: int, times: int) -> Tensor:
    """``times`` consecutive frames of one user video, resized to the training size."""
    from fourreal.io import read_video, resize_frames

    g = torch.Generator().manual_seed(seed)
    path = files[int(torch.randint(len(files), (1,), generator=g))]
    frames = read_video(path, max_frames=4 * times)
    if frames.shape[0] < times:
        raise FourrealError(f"{path} has {frames.shape[0]} frames; training needs {times}")
    start = int(torch.randint(frames.shape[0] - times + 1, (1,), generator=g))
    return resize_frames(frames[start : start + times], config.height, config.width)


def dynamic_video(config: DataConfig, seed: int, files: list[Path] | None = None) -> Tensor:
    """A dynamic fixed-view video ``[T, 3, H, W]``: a user clip, or a synthetic scene from one
    camera of a random arc."""
    if files:
        return _user_clip(config, files, seed, config.times)
    return _synthetic(config, seed, 1, config.times)[0]


# ---------------------------------------------------------------------------- the stream


def make_sample(
    kind: Kind, config: DataConfig, index: int, files: list[Path] | None = None
) -> Tensor:
    """Sample ``index`` of the ``kind`` stream: a grid ``[V, T, 3, H, W]`` in [0, 1].

    For ``videos`` the even indices are fixed-view videos ``[1, T]`` and the odd ones
    freeze-time videos ``[V, 1]``, so every batch holds one shape."""
    seed = sample_seed(config.seed, index, KINDS.index(kind))
    g = torch.Generator().manual_seed(seed)
    if kind == "multiview":
        return _multiview(config, seed)
    if kind == "pseudo4d":
        return pseudo_4d(dynamic_video(config, seed, files), config.views, config, g)
    if kind != "videos":
        raise FourrealError(f"unknown data kind {kind!r}; choose one of {', '.join(KINDS)}")
    if index % 2 == 0:
        return dynamic_video(config, seed, files)[None]
    if files or (seed >> 3) % 2:  # half the synthetic freeze-time videos are affine sweeps
        frame = dynamic_video(config, seed, files)[:1]
        return pseudo_4d(frame, config.views, config, g)
    return _synthetic(config, seed, config.views, 1)


def batches(
    kind: Kind,
    config: DataConfig,
    batch_size: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    reuse: int = 1,
    workers: int = 0,
) -> Iterator[Tensor]:
    """Batches ``[B, V, T, 3, H, W]`` from batch number ``start`` on. Rank ``r`` of ``world_size``
    takes its own samples; batch ``k`` is the same whatever ``start`` was (resumable), and the
    same whatever ``workers`` is.

    ``reuse`` > 1 makes only ``ceil(B / reuse)`` fresh samples per batch and fills the rest with
    samples drawn (by seed) from the fresh samples of the last ``4·reuse`` batches, so each sample
    serves about ``reuse`` steps (each time with new masks and noise): a fast accelerator need not
    wait for the renderer. ``workers`` > 0 makes the samples in that many processes, in order
    and ahead of use."""
    if reuse < 1 or workers < 0:
        raise FourrealError(f"reuse must be >= 1 and workers >= 0, got {reuse} and {workers}")
    fresh = -(-batch_size // reuse)
    keep = 4 * reuse if reuse > 1 else 0  # batches whose fresh samples stay in the pool
    files = list_videos(Path(config.videos)) if config.videos else None

    def indices(step: int) -> list[int]:
        # in "videos", all samples of one global batch share the step's parity (one shape)
        base = (step * world_size + rank) * fresh
        return [2 * (base + i) + step % 2 if kind == "videos" else base + i for i in range(fresh)]

    first = max(0, start - keep)  # replay the pool a resumed run would hold at ``start``
    made = _make_in_order(kind, config, files, indices, first, workers)
    pool: dict[int, list[Tensor]] = {}  # step -> its fresh samples
    try:
        for step in range(first, start):
            pool[step] = next(made)
        step = start
        while True:
            pool[step] = next(made)
            pool.pop(step - keep - 1, None)
            samples = list(pool[step])
            if reuse > 1:  # the rest from earlier batches of the same shape (parity)
                older = [x for k, xs in sorted(pool.items()) if k % 2 == step % 2 or
                         kind != "videos" for x in xs]  # fmt: skip
                g = torch.Generator().manual_seed(sample_seed(config.seed, step, 2000 + rank))
                picks = torch.randint(len(older), (batch_size - fresh,), generator=g)
                samples += [older[int(i)] for i in picks]
            yield torch.stack(samples)
            step += 1
    finally:
        made.close()


def _worker_init() -> None:
    """A renderer process: one thread, and Ctrl-C left to the training process, which stops it."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _make_in_order(
    kind: Kind,
    config: DataConfig,
    files: list[Path] | None,
    indices: Callable[[int], list[int]],
    start: int,
    workers: int,
) -> Iterator[list[Tensor]]:
    """The samples of ``indices(step)`` for step = start, start + 1, …: made here, or by
    ``workers`` processes that keep about ``2·workers`` samples made ahead."""
    if workers == 0:
        for step in itertools.count(start):
            yield [make_sample(kind, config, i, files) for i in indices(step)]
    import multiprocessing as mp

    # spawn: the parent may hold CUDA, which forked children must not inherit
    pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init)
    try:
        pending: collections.deque = collections.deque()
        steps = itertools.count(start)
        while True:
            while sum(len(p) for p in pending) < 2 * workers or not pending:
                jobs = [(kind, config, i, files) for i in indices(next(steps))]
                pending.append([pool.apply_async(make_sample, job) for job in jobs])
            yield [job.get() for job in pending.popleft()]
    finally:
        # let the workers finish the few queued samples (about 2 each) and exit: terminate()
        # would leave semaphores behind for the resource tracker to warn about
        pool.close()
        pool.join()


def check_sizes(config: DataConfig, multiple: int) -> None:
    """Frame sizes must be multiples of the patch size; grids at least 2×2."""
    if config.height % multiple or config.width % multiple:
        raise FourrealError(
            f"--height {config.height} and --width {config.width} must be multiples of the "
            f"patch size {multiple}"
        )
    if config.views < 2 or config.times < 2:
        raise FourrealError(
            f"grids need at least 2 views and 2 times, got {config.views}x{config.times}"
        )
    if config.videos is not None and not os.path.isdir(config.videos):
        raise FourrealError(f"--videos {config.videos} is not a folder")
    if not math.isfinite(config.max_rotation_deg):
        raise FourrealError("--max-rotation-deg must be finite")
