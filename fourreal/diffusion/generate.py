"""``fourreal generate``: inputs to a filled grid, by the ``warp`` method or a model.

Inputs are a fixed-view video (row ``v = 0``) and a freeze-time video (column ``t = 0``) that
start from the same frame, or a grid folder whose ``known`` frames are the conditions.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from fourreal.diffusion.models.sync import SyncKind
from fourreal.diffusion.pipelines.grid import Precision
from fourreal.diffusion.schedulers import Solver
from fourreal.errors import FourrealError
from fourreal.types import Grid

Method = Literal["warp", "model"]


@dataclass(frozen=True)
class GenerateOptions:
    """How to fill the grid (the CLI's options; see ``fourreal generate --help``)."""

    method: Method = "warp"
    checkpoint: Path | None = None
    sync: SyncKind | None = None
    steps: int | None = None
    """Sampling steps (None: what the checkpoint records, else 20)."""
    solver: Solver = "euler"
    seed: int = 0
    samples: int | None = None
    """Samples averaged per frame, the posterior-mean estimate (see GridPipeline); None: what
    the checkpoint records, else 1."""
    precision: Precision = "auto"
    device: str = "auto"
    progress: bool = True


def grid_from_inputs(
    fixed_view: str | os.PathLike[str] | None = None,
    freeze_time: str | os.PathLike[str] | None = None,
    grid: str | os.PathLike[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    max_frames: int | None = None,
) -> Grid:
    """The grid to fill: from the two videos (``len(freeze_time)`` views × ``len(fixed_view)``
    times, frame (0, 0) of both must agree), or a grid folder with ``known`` frames."""
    from fourreal.io import grid_from_videos, load_grid, read_video, resize_frames
    from fourreal.io.video import FIRST_FRAME_TOLERANCE

    if grid is not None:
        if fixed_view is not None or freeze_time is not None:
            raise FourrealError("give either --grid, or --fixed-view and --freeze-time (not both)")
        loaded = load_grid(grid)
        if loaded.known is None or bool(loaded.known.all()):
            raise FourrealError(
                f"every frame of {grid} is known (grid.json 'known' is null or all true); "
                "there is nothing to generate"
            )
        if not bool(loaded.known.any()):
            raise FourrealError(f"no frame of {grid} is known; there is nothing to condition on")
        if height is not None or width is not None or max_frames is not None:
            raise FourrealError(
                "--height/--width/--max-frames apply to video inputs; a --grid is used as it is"
            )
        return loaded
    if fixed_view is None or freeze_time is None:
        raise FourrealError("give --fixed-view and --freeze-time (or --grid with known frames)")
    for path in (fixed_view, freeze_time):
        if not Path(path).exists():
            raise FourrealError(f"{path} does not exist; pass a video file or a folder of images")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the first frames of")
        loaded = grid_from_videos(
            fixed_view, freeze_time, height=height, width=width, max_frames=max_frames
        )
    first = resize_frames(read_video(freeze_time, max_frames=1), loaded.height, loaded.width)[0]
    difference = float((loaded.frames[0, 0] - first).abs().mean())
    if difference > FIRST_FRAME_TOLERANCE:
        raise FourrealError(
            f"frame (0, 0) differs between {fixed_view} and {freeze_time} (mean absolute "
            f"difference {difference:.3f} > {FIRST_FRAME_TOLERANCE}): the fixed-view and the "
            "freeze-time video must start from the same image"
        )
    return loaded


def check_output(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None) -> None:
    """Refuse an output folder that is one of the inputs or holds one (it would be replaced)."""
    out = Path(output).resolve()
    for path in inputs:
        if path is None:
            continue
        path = Path(path).resolve()
        if path == out or out in path.parents:
            raise FourrealError(
                f"the output {output} would replace the input {path}; write to another folder"
            )


def fill_grid(grid: Grid, options: GenerateOptions = GenerateOptions()) -> Grid:
    """``grid`` with its unknown frames generated (known frames and ``known`` unchanged)."""
    if grid.known is None:
        raise FourrealError("the grid has no 'known' mask: nothing marks what to generate")
    start = time.perf_counter()
    if options.method == "warp":
        frames, info = _fill_warp(grid, options)
    elif options.method == "model":
        original = (grid.height, grid.width)
        checkpoint = model_checkpoint(options)
        grid = _to_model_resolution(grid, checkpoint)
        frames, info = _fill_model(grid, options, checkpoint)
        if (grid.height, grid.width) != original:
            info["resized_from"] = list(original)
    else:
        raise FourrealError(f"unknown method {options.method!r}; choose warp or model")
    frames = torch.where(grid.known[:, :, None, None, None], grid.frames, frames)
    info["seconds"] = round(time.perf_counter() - start, 3)
    source = {**grid.source, "generator": "fourreal generate", "generate": info}
    return grid.replace(frames=frames, source=source)


def _fill_warp(grid: Grid, options: GenerateOptions) -> tuple[torch.Tensor, dict]:
    from fourreal.diffusion.warp import warp_fill

    known = grid.known
    if not (bool(known[0].all()) and bool(known[:, 0].all())):
        raise FourrealError(
            "the warp method fills a grid from its whole row 0 (fixed view) and column 0 "
            "(freeze time); this grid lacks some of those frames. Use --method model"
        )
    if grid.views < 3 and grid.times > 1:
        raise FourrealError(
            f"the warp method needs a freeze-time video of at least 3 views; got {grid.views}"
        )
    K = grid.cameras.K if grid.cameras is not None else None
    frames, stats = warp_fill(grid.frames[0], grid.frames[:, 0], K, progress=options.progress)
    info = {"method": "warp", "intrinsics": "given" if K is not None else "estimated"}
    info.update({k: round(v, 3) for k, v in stats.items()})
    return frames, info


def model_checkpoint(options: GenerateOptions) -> Path:
    """The checkpoint ``--method model`` runs: ``--checkpoint``, else the bundled ``tiny`` one."""
    from fourreal.diffusion.models.checkpoint import bundled_checkpoint

    return Path(options.checkpoint) if options.checkpoint is not None else bundled_checkpoint()


def _to_model_resolution(grid: Grid, checkpoint: Path) -> Grid:
    """``grid`` resized to the frame size the checkpoint was trained at, when it records one
    (intrinsics scaled with it; depth and other ground truth dropped)."""
    from fourreal.diffusion.models.checkpoint import read_generator_config
    from fourreal.io import resize_frames
    from fourreal.types import Cameras

    size = read_generator_config(checkpoint).get("resolution")
    if size is None or (grid.height, grid.width) == tuple(size):
        return grid
    height, width = int(size[0]), int(size[1])
    V, T = grid.views, grid.times
    frames = resize_frames(grid.frames.reshape(V * T, 3, grid.height, grid.width), height, width)
    cameras = grid.cameras
    if cameras is not None:
        scale = torch.tensor([width / grid.width, height / grid.height, 1.0], dtype=cameras.K.dtype)
        cameras = Cameras(cameras.K * scale[:, None], cameras.T_world_cam)
    return grid.replace(frames=frames.reshape(V, T, 3, height, width), cameras=cameras,
                        depth=None, gt={})  # fmt: skip


def _fill_model(
    grid: Grid, options: GenerateOptions, checkpoint: Path
) -> tuple[torch.Tensor, dict]:
    from fourreal.diffusion.models.checkpoint import default_sampling, load_generator
    from fourreal.diffusion.pipelines import GridPipeline
    from fourreal.diffusion.pipelines.grid import use_bf16

    for name, value in (("steps", options.steps), ("samples", options.samples)):
        if value is not None and value < 1:
            raise FourrealError(f"--{name} must be at least 1, got {value}")
    model, config = load_generator(checkpoint, options.sync)
    steps, samples = default_sampling(config, options.steps, options.samples)
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as err:  # unknown or unavailable device
        raise FourrealError(f"cannot run the model on device {device!r}: {err}") from err
    window = tuple(config.get("window", (8, 8)))
    overlap = (window[0] // 2, window[1] // 2)
    pipe = GridPipeline(model, window=window, overlap=overlap)
    precision = "bf16" if use_bf16(options.precision, torch.device(device)) else "fp32"
    frames = pipe(
        grid.frames, grid.known, steps, options.solver, options.seed, precision,
        options.progress, samples,
    )  # fmt: skip
    info = {
        "method": "model",
        "checkpoint": str(checkpoint.resolve()),
        "sync": model.sync,
        "steps": steps,
        "samples": samples,
        "solver": options.solver,
        "seed": options.seed,
        "precision": precision,
        "device": str(device),
        "window": list(window),
    }
    return frames, info
