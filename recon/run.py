"""``fourreal reconstruct``: a grid folder in, a scene folder out, resumable."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fourreal.errors import FourrealError
from fourreal.io import load_grid
from fourreal.io.grid import to_uint8
from fourreal.memory import check_fits
from fourreal.recon.config import PRESETS, ReconConfig
from fourreal.recon.deform import DeformConfig
from fourreal.recon.fit import attach_motion, evaluate, initialize, make_optimizer, train
from fourreal.recon.scene import (
    CHECKPOINT,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
    save_scene,
)

log = logging.getLogger("fourreal.recon")


def run_reconstruction(
    grid_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: ReconConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Reconstruct ``grid_path`` into the scene folder ``output``; returns the metrics."""
    start = time.perf_counter()
    output = Path(output)
    grid = load_grid(grid_path)
    _check_memory(grid, config or PRESETS["fast"], grid_path)
    handler = _log_to(output)
    try:
        if resume:
            recon, opt_state, saved = load_checkpoint(output)
            config = _config_from_dict(saved) if config is None else config
            if recon.image_size != (grid.height, grid.width) or len(recon.K) != grid.views:
                raise FourrealError(f"{output / CHECKPOINT} was made for another grid")
            optimizer = make_optimizer(recon, config)
            restore_optimizer(optimizer, opt_state)
            attach_motion(recon, grid, config)
            log.info("resuming at step %d of %d", recon.step, config.iterations)
        else:
            config = config or PRESETS["fast"]
            recon = initialize(grid, config, progress)
            optimizer = make_optimizer(recon, config)

        def checkpoint(recon, optimizer) -> None:
            save_checkpoint(recon, optimizer, config, output)

        train(recon, grid, config, optimizer, progress, on_checkpoint=checkpoint)
        save_checkpoint(recon, optimizer, config, output)
        metrics = evaluate(recon, grid)
        metrics.update(
            num_gaussians=len(recon.model),
            num_pruned=recon.num_pruned,
            seconds=time.perf_counter() - start,
            holdout=[list(vt) for vt in recon.holdout],
            steps=recon.step,
        )
        if recon.losses and not math.isfinite(recon.losses[-1]):
            raise FourrealError("the optimization diverged (non-finite loss); try a lower lr")
        renders = comparison_images(recon, grid)
        renders["loss.png"] = loss_curve(recon.losses)
        source = {"grid": str(Path(grid_path).resolve()), "grid_source": grid.source}
        save_scene(recon, config, metrics, output, source, renders)
        log.info("held-out PSNR %.2f dB, SSIM %.3f", metrics["psnr"], metrics["ssim"])
        return metrics
    finally:
        logging.getLogger("fourreal").removeHandler(handler)
        handler.close()


def _check_memory(grid, config: ReconConfig, grid_path) -> None:
    """Fail before training when the frames, up to ``max_gaussians`` Gaussians (parameters,
    Adam moments, gradients, per-view offsets) and render buffers cannot fit in memory."""
    per_gaussian = 4 * (14 * 4 + grid.views * 3 * 2)
    frames = grid.views * grid.times * grid.height * grid.width * 3 * 4
    render = 64 * grid.height * grid.width * 4 * config.frames_per_step
    check_fits(
        config.max_gaussians * per_gaussian + 2 * frames + render,
        f"reconstructing {grid_path} ({grid.views}x{grid.times} frames of "
        f"{grid.width}x{grid.height}, up to {config.max_gaussians} Gaussians)",
        "reconstruct a smaller grid (fourreal import --height/--width) or fewer Gaussians",
    )


def _config_from_dict(values: dict[str, Any]) -> ReconConfig:
    values = dict(values)
    values["deform"] = DeformConfig(**values["deform"])
    return ReconConfig(**values)


def _log_to(output: Path) -> logging.Handler:
    output.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger("fourreal")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


@torch.no_grad()
def comparison_images(recon, grid) -> dict[str, np.ndarray]:
    """``holdout_v{v}_t{t}.png``: ground truth left, render right."""
    images = {}
    for v, t in recon.holdout:
        out = recon.render(v, t).rgb.clamp(0, 1).permute(2, 0, 1)
        pair = torch.cat([grid.frames[v, t], out], dim=-1)
        images[f"holdout_v{v:03d}_t{t:03d}.png"] = to_uint8(pair)
    return images


def loss_curve(losses: list[float], width: int = 480, height: int = 200) -> np.ndarray:
    """A small plot of the loss (log scale) over the steps, drawn with PIL."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    values = [v for v in losses if v > 0 and math.isfinite(v)]
    if len(values) >= 2:
        logs = np.log10(np.array(values))
        kernel = max(1, len(logs) // 100)
        smooth = np.convolve(logs, np.ones(kernel) / kernel, mode="valid")
        lo, hi = float(smooth.min()), float(smooth.max()) + 1e-9
        xs = np.linspace(30, width - 10, len(smooth))
        ys = height - 20 - (smooth - lo) / (hi - lo) * (height - 40)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 90, 200), width=2)
        draw.text(
            (32, 4), f"loss {10**hi:.4f} -> {10 ** smooth[-1]:.4f} (log scale)", fill=(0, 0, 0)
        )
    draw.text((32, height - 16), f"{len(losses)} steps", fill=(0, 0, 0))
    return np.asarray(image)
