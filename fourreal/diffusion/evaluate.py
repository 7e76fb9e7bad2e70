"""``fourreal eval generate``: generators scored on held-out synthetic grids (paper Tables 1–2).

Every method fills the same held-out 8×8 grids from their row 0 (fixed view) and column 0
(freeze time); the other frames are compared with the ground truth:

- **PSNR / SSIM** of the generated frames, averaged over frames and grids;
- **reprojection error**, a multi-view consistency score that needs no ground-truth colors:
  each generated pixel of view ``v`` is carried to view ``v + 1`` at the same time with the
  ground-truth depth and cameras, and its color compared with what view ``v + 1`` shows there
  (mean absolute difference in 8-bit levels, over pixels visible in both views). The ground
  truth itself scores above zero (shading changes with the view, pixels are resampled); that
  floor is reported as the ``ground truth`` row.

Held-out grids are random scenes on random arcs drawn as the stage-2 training grids are
(:func:`fourreal.diffusion.data.synthetic_grid`), from a data seed no training stream uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from fourreal.diffusion.data import DataConfig, sample_seed, synthetic_grid
from fourreal.diffusion.models.sync import SYNC_KINDS
from fourreal.errors import FourrealError
from fourreal.types import Grid, row_and_column

HELD_OUT_SEED = 7_340_033
"""The data seed of the held-out grids (training streams use ``--data-seed``, 0 by default)."""

Filler = Callable[[Grid], Tensor]


@dataclass(frozen=True)
class HeldOut:
    """Which held-out grids: ``count`` grids of ``views × times`` frames at ``height × width``."""

    count: int = 6
    views: int = 8
    times: int = 8
    height: int = 64
    width: int = 64
    first: int = 0
    """Index of the first grid (grid ``i`` is the same whatever ``count`` is)."""


def held_out_grids(spec: HeldOut = HeldOut()) -> list[Grid]:
    """The held-out grids, each with ground-truth cameras and depth, known = row 0 + column 0."""
    config = DataConfig(views=spec.views, times=spec.times, height=spec.height,
                        width=spec.width, seed=HELD_OUT_SEED)  # fmt: skip
    grids = []
    for i in range(spec.first, spec.first + spec.count):
        grid = synthetic_grid(config, sample_seed(HELD_OUT_SEED, i, 7), spec.views, spec.times)
        grid.known = row_and_column(spec.views, spec.times)
        grids.append(grid)
    return grids


# ---------------------------------------------------------------------------- metrics


def unknown_frames(grid: Grid) -> list[tuple[int, int]]:
    assert grid.known is not None
    return [(v, t) for v in range(grid.views) for t in range(grid.times) if not grid.known[v, t]]


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float((a.double() - b.double()).square().mean())
    return 10 * math.log10(1 / max(mse, 1e-20))


def frame_scores(frames: Float[Tensor, "V T 3 H W"], grid: Grid) -> tuple[float, float]:
    """Mean PSNR and SSIM over the grid's unknown frames."""
    from kornia.metrics import ssim

    pairs = unknown_frames(grid)
    est = torch.stack([frames[v, t] for v, t in pairs]).float().clamp(0, 1)
    ref = torch.stack([grid.frames[v, t] for v, t in pairs]).float()
    psnrs = [psnr(e, r) for e, r in zip(est, ref, strict=True)]
    ssims = ssim(est, ref, window_size=11).mean(dim=(1, 2, 3))
    return sum(psnrs) / len(psnrs), float(ssims.mean())


def reprojection_error(frames: Float[Tensor, "V T 3 H W"], grid: Grid, tolerance: float = 0.03
                       ) -> float:  # fmt: skip
    """Mean absolute color difference (8-bit levels) between each pixel of frame ``(v, t)`` and
    the pixel of frame ``(v + 1, t)`` it projects to, with ground-truth depth and cameras, over
    pixels visible in both (projected depth within ``tolerance`` of the other view's depth).
    Pairs where neither frame is unknown are left out."""
    if grid.cameras is None or grid.cameras.T_world_cam is None or grid.depth is None:
        raise FourrealError("the reprojection error needs ground-truth cameras and depth")
    assert grid.known is not None
    V, T, _, H, W = frames.shape
    K = grid.cameras.K.double()
    T_world_cam = grid.cameras.T_world_cam.double()
    T_cam_world = torch.linalg.inv(T_world_cam)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")  # fmt: skip
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # [HW, 3]
    total, count = 0.0, 0
    for v in range(V - 1):
        rays = pixels @ torch.linalg.inv(K[v]).T
        relative = T_cam_world[v + 1] @ T_world_cam[v]
        for t in range(T):
            if bool(grid.known[v, t]) and bool(grid.known[v + 1, t]):
                continue
            z = grid.depth[v, t].double().reshape(-1)
            points = rays * z[:, None]
            moved = points @ relative[:3, :3].T + relative[:3, 3]
            zz = moved[:, 2]
            uv = moved[:, :2] / zz.clamp(min=1e-9)[:, None]
            uv = uv @ K[v + 1][:2, :2].T + K[v + 1][:2, 2]
            inside = (z > 0) & (zz > 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0)
            inside &= uv[:, 1] < H
            norm = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], dim=-1).float()
            target = frames[v + 1, t].float()[None]
            other_depth = grid.depth[v + 1, t].float()[None, None]
            grid_uv = norm.reshape(1, H, W, 2)
            seen = F.grid_sample(target, grid_uv, mode="bilinear", align_corners=False)[0]
            # nearest for depth: no blending across an occlusion edge
            depth_there = F.grid_sample(other_depth, grid_uv, mode="nearest",
                                        align_corners=False)[0, 0].reshape(-1).double()  # fmt: skip
            visible = inside & ((depth_there - zz).abs() <= tolerance * zz)
            if not bool(visible.any()):
                continue
            here = frames[v, t].float().reshape(3, -1)[:, visible]
            there = seen.reshape(3, -1)[:, visible]
            total += float((here - there).abs().sum()) * 255 / 3
            count += int(visible.sum())
    if count == 0:
        raise FourrealError("no pixel of the grid is visible in two neighbouring views")
    return total / count


def score(frames: Tensor, grid: Grid) -> dict[str, float]:
    value_psnr, value_ssim = frame_scores(frames, grid)
    return {
        "psnr": value_psnr,
        "ssim": value_ssim,
        "reprojection": reprojection_error(frames, grid),
    }


# ---------------------------------------------------------------------------- methods


def copy_row(grid: Grid) -> Tensor:
    """Baseline: every view shows the fixed-view video (frame ``(0, t)``)."""
    return grid.frames[0:1].expand_as(grid.frames).clone()


def copy_column(grid: Grid) -> Tensor:
    """Baseline: every time shows the freeze-time frame of its view (frame ``(v, 0)``)."""
    return grid.frames[:, 0:1].expand_as(grid.frames).clone()


def warp(grid: Grid) -> Tensor:
    """The weight-free warp method, with the grid's intrinsics (poses and depth hidden)."""
    from fourreal.diffusion.warp import warp_fill

    K = grid.cameras.K if grid.cameras is not None else None
    return warp_fill(grid.frames[0], grid.frames[:, 0], K)[0]


def model_filler(model: torch.nn.Module, window: tuple[int, int], steps: int, seed: int,
                 samples: int = 1) -> Filler:  # fmt: skip
    """A filler that samples ``model`` (Euler, ``steps`` steps, noise seeded by ``seed``) over
    the grid's unknown frames, in fp32 on the CPU (reproducible); ``samples`` > 1 returns the
    mean of that many samples (:class:`~fourreal.diffusion.pipelines.GridPipeline`)."""
    from fourreal.diffusion.pipelines import GridPipeline

    overlap = (window[0] // 2, window[1] // 2)
    pipe = GridPipeline(model.eval(), window=window, overlap=overlap)

    def fill(grid: Grid) -> Tensor:
        assert grid.known is not None
        return pipe(grid.frames, grid.known, steps, "euler", seed, "fp32", samples=samples)

    return fill


@dataclass(frozen=True)
class ModelSpec:
    """One ``--models`` entry: ``LABEL=PATH[@SYNC][,steps=N][,samples=K]``."""

    label: str
    path: Path
    sync: str | None = None
    """Overrides the checkpoint's sync (``average``/``weighted``: the training-free Eq. 12/13)."""
    steps: int | None = None
    """Sampling steps of this model (default: the run's ``--steps``, else the checkpoint's)."""
    samples: int | None = None
    """Samples averaged per grid (default: the run's ``--samples``, else the checkpoint's)."""


def parse_model(spec: str) -> ModelSpec:
    """Parse ``LABEL=PATH[@SYNC][,steps=N][,samples=K]``."""
    form = "LABEL=CHECKPOINT[@SYNC][,steps=N][,samples=K]"
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise FourrealError(f"--models takes {form} entries, got {spec!r}")
    where, *options = rest.split(",")
    path, _, sync = where.partition("@")
    if sync and sync not in SYNC_KINDS:
        raise FourrealError(
            f"--models {spec!r}: unknown sync {sync!r}; choose one of {', '.join(SYNC_KINDS)}"
        )
    counts: dict[str, int] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in ("steps", "samples") or not value.isdigit() or int(value) < 1:
            raise FourrealError(
                f"--models {spec!r}: {option!r} is not steps=N or samples=K (N, K >= 1); "
                f"entries read {form}"
            )
        counts[key] = int(value)
    return ModelSpec(label, Path(path), sync or None, **counts)


def checkpoint_filler(
    path: Path,
    sync: str | None,
    steps: int | None,
    seed: int,
    window: tuple[int, int] | None = None,
    samples: int | None = None,
) -> tuple[Filler, dict[str, Any]]:
    """A checkpoint's filler; ``steps``/``samples`` None: what the checkpoint records."""
    from fourreal.diffusion.models.checkpoint import default_sampling, load_generator

    model, config = load_generator(path, sync)  # type: ignore[arg-type]
    steps, samples = default_sampling(config, steps, samples)
    use = window or tuple(config.get("window", (8, 8)))
    info = {"checkpoint": str(path), "sync": model.sync, "window": list(use), "steps": steps,
            "samples": samples}  # fmt: skip
    return model_filler(model, use, steps, seed, samples), info  # type: ignore[arg-type]


def untrained_filler(
    like: Path, steps: int | None, seed: int, window: tuple[int, int] | None = None
) -> tuple[Filler, dict[str, Any]]:
    """The architecture of checkpoint ``like`` (soft sync) with fresh random weights (seed 0):
    what training starts from."""
    from fourreal.diffusion.models import DiTConfig, TwoStreamDiT, VideoDiT
    from fourreal.diffusion.models.checkpoint import default_sampling, read_generator_config

    config = read_generator_config(like)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoStreamDiT(VideoDiT(DiTConfig(**config["dit"])), sync="soft")
    use = window or tuple(config.get("window", (8, 8)))
    info = {"architecture_of": str(like), "sync": "soft", "weights": "random (seed 0)",
            "window": list(use)}  # fmt: skip
    steps, _ = default_sampling({}, steps)  # one sample: random weights record no sampling
    info["steps"], info["samples"] = steps, 1
    return model_filler(model, use, steps, seed), info  # type: ignore[arg-type]


def build_methods(
    specs: Sequence[ModelSpec],
    steps: int | None,
    seed: int,
    window: tuple[int, int] | None = None,
    baselines: bool = True,
    samples: int | None = None,
) -> dict[str, tuple[Filler, dict[str, Any]]]:
    """The methods to score, by label: the baselines (copy row, copy column, warp, and the
    untrained architecture of the first checkpoint) when asked, then each model of ``specs``
    (sampled with its own steps and samples where it names them, else ``steps``/``samples``,
    else what its checkpoint records)."""
    methods: dict[str, tuple[Filler, dict[str, Any]]] = {}
    if baselines:
        methods["copy row"] = (copy_row, {})
        methods["copy column"] = (copy_column, {})
        methods["warp"] = (warp, {})
        methods["untrained"] = untrained_filler(specs[0].path, steps, seed, window)
    for spec in specs:
        methods[spec.label] = checkpoint_filler(
            spec.path, spec.sync, spec.steps or steps, seed, window, spec.samples or samples
        )
    return methods


# ---------------------------------------------------------------------------- the table


def evaluate(
    methods: dict[str, tuple[Filler, dict[str, Any]]],
    grids: Sequence[Grid],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score every method on every grid; one row per method (means over grids, and the
    per-grid values)."""
    from tqdm.auto import tqdm

    rows = []
    floor = [reprojection_error(g.frames, g) for g in grids]
    rows.append({"method": "ground truth", "reprojection": sum(floor) / len(floor),
                 "per_grid": [{"reprojection": f} for f in floor]})  # fmt: skip
    bar = tqdm(total=len(methods) * len(grids), desc="eval generate", disable=not progress)
    for name, (fill, info) in methods.items():
        per_grid, seconds = [], 0.0
        for grid in grids:
            start = time.perf_counter()
            frames = fill(grid)
            seconds += time.perf_counter() - start
            per_grid.append(score(frames, grid))
            bar.update()
        mean = {k: sum(g[k] for g in per_grid) / len(per_grid) for k in per_grid[0]}
        rows.append({"method": name, **mean, "seconds_per_grid": seconds / len(grids),
                     "info": info, "per_grid": per_grid})  # fmt: skip
    bar.close()
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    width = max(32, *(len(row["method"]) for row in rows))
    lines = [f"{'method':<{width}} {'PSNR dB':>8} {'SSIM':>6} {'reproj.':>8} {'s/grid':>7}"]
    for row in rows:
        if "psnr" not in row:
            lines.append(f"{row['method']:<{width}} {'':>8} {'':>6} {row['reprojection']:>8.2f}")
            continue
        lines.append(f"{row['method']:<{width}} {row['psnr']:>8.2f} {row['ssim']:>6.3f} "
                     f"{row['reprojection']:>8.2f} {row['seconds_per_grid']:>7.1f}")  # fmt: skip
    return "\n".join(lines)
