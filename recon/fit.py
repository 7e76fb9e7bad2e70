"""Fitting dynamic Gaussians to a grid: tracking → init → pruning → deformation (supplement 6)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.errors import FourrealError
from fourreal.recon.config import ReconConfig
from fourreal.recon.init import from_tracks, random_like
from fourreal.recon.losses import photometric_loss, psnr, ssim
from fourreal.recon.model import PER_GAUSSIAN, DynamicGaussians
from fourreal.recon.motion import MotionTracks, motion_loss, prefit_motion, row_tracks
from fourreal.recon.prune import prune_floaters
from fourreal.recon.render import rasterize
from fourreal.recon.seeds import time_seeds
from fourreal.tracking.geometry import align_poses
from fourreal.tracking.pipeline import ColumnTracks, TrackConfig, track_column
from fourreal.types import Grid

log = logging.getLogger("fourreal.recon")


@dataclass
class Reconstruction:
    model: DynamicGaussians
    K: Tensor  # [V, 3, 3]
    T_world_cam: Tensor  # [V, 4, 4]
    times: Tensor  # [T] normalized times in [0, 1]
    background: Tensor  # [3]
    holdout: list[tuple[int, int]]
    num_pruned: int
    losses: list[float] = field(default_factory=list)
    step: int = 0
    motion: MotionTracks | None = None

    @property
    def T_cam_world(self) -> Tensor:
        return torch.linalg.inv(self.T_world_cam)

    def render(self, v: int, t: int, views: bool = True, backend: str = "auto"):
        """Render grid frame ``(v, t)`` (with view v's offsets unless ``views`` is False)."""
        H, W = self.image_size
        model = self.model
        time = self.times[t : t + 1]
        scales, colors = model.scales, model.colors
        opacities = model.opacities_at(time)[0]
        on = None
        if model.presence_logits.shape[1] > 0:  # Gaussians absent at this time are skipped
            on = (opacities > 0).nonzero()[:, 0]
            scales, opacities, colors = scales[on], opacities[on], colors[on]
        pos = model.positions(time, torch.tensor([v]) if views else None, on, self.offset_weight)[0]
        return rasterize(
            pos, scales, opacities, colors, self.T_cam_world[v], self.K[v], W, H,
            self.background, backend=backend,
        )  # fmt: skip

    image_size: tuple[int, int] = (0, 0)
    offset_weight: float = 1.0
    """Weight of the view offsets in renders: faded to 0 during training (ReconConfig.
    view_offset_fade) and never raised again, even when a resumed run trains longer."""


def normalized_times(T: int) -> Tensor:
    return torch.linspace(0, 1, T) if T > 1 else torch.zeros(1)


def choose_holdout(V: int, T: int, fraction: float, seed: int) -> list[tuple[int, int]]:
    """About ``fraction`` of the frames outside row 0 and column 0 (at least one if any)."""
    inner = [(v, t) for v in range(1, V) for t in range(1, T)]
    if not inner or fraction <= 0:
        return []
    count = max(1, round(fraction * len(inner)))
    order = torch.randperm(len(inner), generator=torch.Generator().manual_seed(seed))
    return sorted(inner[i] for i in order[:count].tolist())


def background_of(grid: Grid) -> Tensor:
    value = grid.source.get("background")
    if isinstance(value, list | tuple) and len(value) == 3:
        return torch.tensor([float(x) for x in value])
    return torch.zeros(3)


def track_grid(grid: Grid, config: ReconConfig) -> ColumnTracks:
    K = None
    if grid.cameras is not None and not config.estimate_intrinsics:
        K = grid.cameras.K
    track_config = TrackConfig(
        keyframe_stride=config.keyframe_stride, point_stride=config.point_stride
    )
    return track_column(grid.frames[:, 0], K, config=track_config)


def cameras_for(grid: Grid, tracks: ColumnTracks, config: ReconConfig) -> tuple[Tensor, Tensor]:
    """``K`` and ``T_world_cam`` in the tracks' (canonical) frame: the tracked cameras, or with
    ``use_grid_cameras`` the grid's, brought into that frame by a similarity (align_poses)."""
    if not config.use_grid_cameras:
        return tracks.K.float(), tracks.T_world_cam.float()
    if grid.cameras is None or grid.cameras.T_world_cam is None:
        raise FourrealError("use_grid_cameras needs cameras with poses in grid.json")
    aligned = align_poses(grid.cameras.T_world_cam, tracks.T_world_cam)
    return grid.cameras.K.float(), aligned.float()


def initialize(grid: Grid, config: ReconConfig, progress: bool) -> Reconstruction:
    tracks = track_grid(grid, config)
    background = background_of(grid)
    if config.tracking_init:
        model = from_tracks(
            tracks, config.point_stride, config.scale_factor, config.init_opacity, config.deform,
            use_view_offsets=config.view_offsets,
        )  # fmt: skip
    else:
        count = tracks.points.shape[0]
        model = random_like(tracks, count, config.init_opacity, config.deform, config.seed)
    pruned = 0
    if config.prune and config.tracking_init:
        pruned = prune_floaters(
            model, tracks, grid.frames[:, 0], background, config.prune_iterations,
            config.prune_threshold, backend=config.backend, seed=config.seed, progress=progress,
        )  # fmt: skip
        log.info("pruned %d of %d Gaussians", pruned, pruned + len(model))
    K, T_world_cam = cameras_for(grid, tracks, config)
    holdout = choose_holdout(grid.views, grid.times, config.holdout_fraction, config.seed)
    if config.time_seeds and config.tracking_init and grid.times > 1:
        model = add_time_seeds(model, grid, tracks, K, T_world_cam, holdout, config, progress)
    recon = Reconstruction(
        model, K, T_world_cam, normalized_times(grid.times), background, holdout, pruned
    )
    recon.image_size = (grid.height, grid.width)
    attach_motion(recon, grid, config)
    if recon.motion is not None:
        prefit_motion(recon, recon.motion, config.motion_prefit_steps, config.lr_deform * 5,
                      seed=config.seed)  # fmt: skip
    return recon


def add_time_seeds(
    model: DynamicGaussians,
    grid: Grid,
    tracks: ColumnTracks,
    K: Tensor,
    T_world_cam: Tensor,
    holdout: list[tuple[int, int]],
    config: ReconConfig,
    progress: bool,
) -> DynamicGaussians:
    """The canonical Gaussians with a presence table, plus the seeds of every later time
    (recon/seeds.py), lifted with the tracked cameras."""
    seeds = time_seeds(
        grid.frames, K, T_world_cam, model.means.detach(),
        tracks.depth, holdout, config.change_threshold, config.change_dilate,
        config.point_stride, config.keyframe_stride, config.scale_factor, progress,
    )  # fmt: skip
    offsets = seeds.offsets if config.view_offsets else torch.zeros_like(seeds.offsets)
    with torch.no_grad():
        return DynamicGaussians(
            torch.cat([model.means, seeds.points]),
            torch.cat([model.scales, seeds.scales]),
            torch.cat([model.opacities, torch.full_like(seeds.scales, config.init_opacity)]),
            torch.cat([model.colors, seeds.colors]),
            torch.cat([model.view_offsets, offsets], 1),
            config.deform,
            float(model.deform.extent),
            presence=torch.cat([seeds.canonical_presence, seeds.presence(grid.times)]),
        )


def attach_motion(recon: Reconstruction, grid: Grid, config: ReconConfig) -> None:
    """Row tracks for the motion loss (also rebuilt on resume), skipping held-out frames."""
    if config.motion_tracks and grid.times > 1:
        recon.motion = row_tracks(
            recon, grid.frames, recon.holdout, config.motion_per_view, config.seed
        )


def make_optimizer(recon: Reconstruction, config: ReconConfig) -> torch.optim.Optimizer:
    model = recon.model
    extent = float(model.deform.extent)
    return torch.optim.Adam(
        [
            {"params": [model.means], "lr": config.lr_means * extent},
            {"params": [model.log_scales], "lr": config.lr_scales},
            {"params": [model.opacity_logits], "lr": config.lr_opacities},
            {"params": [model.color_logits], "lr": config.lr_colors},
            {"params": [model.presence_logits], "lr": config.lr_presence},
            {"params": model.deform.parameters(), "lr": config.lr_deform},
        ],
        eps=1e-15,
    )


PARAMETER_NAMES = PER_GAUSSIAN
"""Per-Gaussian parameters, in the order of the optimizer's first param groups."""


@torch.no_grad()
def _reindex_optimizer(optimizer: torch.optim.Optimizer, model, index: Tensor) -> None:
    """Point the per-Gaussian param groups at the model's (replaced) parameters; the new row i
    takes the Adam moments of old row ``index[i]`` (zero where ``index[i] < 0``)."""
    for group, name in zip(optimizer.param_groups, PARAMETER_NAMES, strict=False):
        old = group["params"][0]
        new = getattr(model, name)
        state = optimizer.state.pop(old, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                values = state[key][index.clamp_min(0)]
                values[index < 0] = 0
                state[key] = values
        group["params"][0] = new
        if state:
            optimizer.state[new] = state


@torch.no_grad()
def densify(
    recon: Reconstruction,
    optimizer,
    grad_sum: Tensor,
    grad_count: Tensor,
    config: ReconConfig,
    generator: torch.Generator,
) -> tuple[int, int]:
    """One densification (isotropic clone/split by accumulated position gradient) and removal
    of nearly transparent Gaussians. Returns (added, removed)."""  # fmt: skip
    model = recon.model
    n = len(model)
    mean_grad = grad_sum / grad_count.clamp_min(1)
    budget = max(0, min(int(config.densify_fraction * n), config.max_gaussians - n))
    added = 0
    if budget > 0 and bool((grad_count > 0).any()):
        parents = mean_grad.topk(budget).indices
        parents = parents[mean_grad[parents] > 0]
        scales = model.scales
        split = scales[parents] > scales.quantile(0.75)
        model.grow(parents, split, generator)
        index = torch.cat([torch.arange(n), torch.full((len(parents),), -1)])
        _reindex_optimizer(optimizer, model, index)
        added = len(parents)
    presence = torch.sigmoid(model.presence_logits)
    peak = presence.amax(1) if presence.shape[1] else torch.ones(len(model))
    keep = model.opacities * peak >= 0.02
    removed = int((~keep).sum())
    if removed:
        model.keep(keep)
        _reindex_optimizer(optimizer, model, keep.nonzero()[:, 0])
        if recon.motion is not None:
            recon.motion = recon.motion.after_removal(keep)
    return added, removed


def train(
    recon: Reconstruction,
    grid: Grid,
    config: ReconConfig,
    optimizer: torch.optim.Optimizer,
    progress: bool = False,
    on_checkpoint=None,
) -> None:
    """Optimize from ``recon.step`` to ``config.iterations``; ``on_checkpoint(recon, optimizer)``
    is called every ``checkpoint_every`` steps (and can be interrupted safely between them)."""
    V, T = grid.views, grid.times
    held = set(recon.holdout)
    train_frames = [(v, t) for v in range(V) for t in range(T) if (v, t) not in held]
    targets = grid.frames.permute(0, 1, 3, 4, 2)  # [V, T, H, W, 3]
    g = torch.Generator().manual_seed(config.seed + recon.step)
    extent = float(recon.model.deform.extent)
    total = config.iterations
    bar = tqdm(total=total, initial=recon.step, desc="reconstructing", disable=not progress)
    grad_sum = torch.zeros(len(recon.model))
    grad_count = torch.zeros(len(recon.model))
    densify_stop = int(config.densify_until * total)
    while recon.step < total:
        recon.offset_weight = min(recon.offset_weight, offset_weight(recon.step, config))
        pick = torch.randint(len(train_frames), (config.frames_per_step,), generator=g).tolist()
        loss = torch.zeros(())
        for index in pick:
            v, t = train_frames[index]
            out = recon.render(v, t, backend=config.backend)
            loss = loss + photometric_loss(out.rgb, targets[v, t], config.ssim_weight)
        loss = loss / len(pick)
        weight = config.motion_weight * max(0.0, 1 - recon.step / max(densify_stop, 1))
        if recon.motion is not None and weight > 0:
            loss = loss + weight * motion_loss(recon, recon.motion, 1024, g)
        if config.smooth_weight > 0 and T > 1:
            sample = recon.model.means[torch.randint(len(recon.model), (2048,), generator=g)]
            times = torch.rand(1, generator=g)
            dt = 0.5 / (T - 1)
            a = recon.model.deform(sample, times)
            b = recon.model.deform(sample, (times + dt).clamp(max=1))
            loss = loss + config.smooth_weight * ((a - b).norm(dim=-1).mean() / extent)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.densify_every > 0:
            norm = recon.model.means.grad.norm(dim=-1)
            grad_sum += norm
            grad_count += norm > 0
        optimizer.step()
        recon.step += 1
        if config.densify_every > 0 and recon.step % config.densify_every == 0:
            if recon.step <= densify_stop:
                added, removed = densify(recon, optimizer, grad_sum, grad_count, config, g)
                log.info("step %d: +%d -%d Gaussians -> %d", recon.step, added, removed,
                         len(recon.model))  # fmt: skip
            grad_sum = torch.zeros(len(recon.model))
            grad_count = torch.zeros(len(recon.model))
        recon.losses.append(float(loss.detach()))
        bar.update(1)
        if recon.step % 20 == 0:
            bar.set_postfix(loss=f"{recon.losses[-1]:.4f}", n=len(recon.model))
        if on_checkpoint is not None and recon.step % config.checkpoint_every == 0:
            on_checkpoint(recon, optimizer)
    recon.offset_weight = min(recon.offset_weight, offset_weight(recon.step, config))
    bar.close()


def offset_weight(step: int, config: ReconConfig) -> float:
    """The scheduled weight of the view offsets at ``step``: 1, then falling linearly to 0 over
    the second half of the first ``view_offset_fade`` of the iterations (0: never faded)."""
    if config.view_offset_fade <= 0:
        return 1.0
    end = config.view_offset_fade * config.iterations
    return min(1.0, max(0.0, 2.0 - 2.0 * step / max(end, 1)))


@torch.no_grad()
def evaluate(recon: Reconstruction, grid: Grid, frames: list[tuple[int, int]] | None = None):
    """PSNR and SSIM over ``frames`` (default: the held-out ones)."""
    frames = recon.holdout if frames is None else frames
    if not frames:
        return {"psnr": float("nan"), "ssim": float("nan"), "frames": 0}
    targets = grid.frames.permute(0, 1, 3, 4, 2)
    values = []
    for v, t in frames:
        out = recon.render(v, t).rgb.clamp(0, 1)
        values.append((psnr(out, targets[v, t]), float(ssim(out, targets[v, t]))))
    p = sum(x for x, _ in values) / len(values)
    s = sum(y for _, y in values) / len(values)
    return {"psnr": p, "ssim": s, "frames": len(values)}


def reconstruct(grid: Grid, config: ReconConfig, progress: bool = False, on_checkpoint=None):
    """The whole pipeline on an in-memory grid; returns the reconstruction and its metrics."""
    start = time.perf_counter()
    recon = initialize(grid, config, progress)
    optimizer = make_optimizer(recon, config)
    train(recon, grid, config, optimizer, progress, on_checkpoint)
    metrics = evaluate(recon, grid)
    metrics.update(num_gaussians=len(recon.model), num_pruned=recon.num_pruned,
                   seconds=time.perf_counter() - start)  # fmt: skip
    if not math.isfinite(recon.losses[-1] if recon.losses else 0.0):
        raise FourrealError("the optimization diverged (non-finite loss)")
    return recon, metrics
