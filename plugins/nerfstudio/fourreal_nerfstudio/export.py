"""``fourreal-ns-export``: a nerfstudio ``fourreal-splat`` run to a fourreal scene folder.

nerfstudio's ``ns-export`` has a fixed set of formats, so the plugin ships its own command:

    fourreal-ns-export --load-config outputs/.../fourreal-splat/<time>/config.yml -o scene/

It writes the scene format of ``fourreal reconstruct`` (``scene.ply``, ``scene.json``,
``deform.safetensors``, ``metrics.json`` on the held-out frames, ``renders/``), which
``fourreal view`` and ``fourreal export`` read (run those from fourreal's own environment).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro

from fourreal.errors import FourrealError
from fourreal.io import load_grid
from fourreal.io.grid import to_uint8
from fourreal.recon.fit import Reconstruction
from fourreal.recon.losses import psnr, ssim
from fourreal.recon.scene import save_scene
from fourreal.types import Grid
from fourreal_nerfstudio.model import FourrealSplatModel, FourrealSplatModelConfig


@dataclass(frozen=True)
class ExportedConfig:
    """What scene.json and config.yaml record of a nerfstudio run (its model settings)."""

    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)


def model_settings(config: FourrealSplatModelConfig) -> dict[str, Any]:
    """The fourreal-splat settings as plain data (no nerfstudio base fields)."""
    own = {f.name for f in dataclasses.fields(FourrealSplatModelConfig)}
    base = {f.name for f in dataclasses.fields(FourrealSplatModelConfig.__mro__[1])}
    values = {name: getattr(config, name) for name in sorted(own - base)}
    values["deform"] = values["deform"].to_dict()
    return values


def reconstruction_of(model: FourrealSplatModel, step: int) -> Reconstruction:
    """The model as fourreal's :class:`~fourreal.recon.fit.Reconstruction` (on the CPU)."""
    model = model.to("cpu")
    recon = Reconstruction(
        model=model.gaussians,
        K=model.grid_K.detach().clone(),
        T_world_cam=model.grid_T_world_cam.detach().clone(),
        times=model.grid_times.detach().clone(),
        background=model.background.detach().clone(),
        holdout=list(model.holdout),
        num_pruned=int(model.num_pruned),
        step=step,
    )
    recon.image_size = model.image_size
    return recon


@torch.no_grad()
def holdout_metrics(recon: Reconstruction, grid: Grid) -> tuple[dict[str, Any], dict[str, Any]]:
    """PSNR/SSIM on the held-out frames and ``holdout_v###_t###.png`` (truth left, render right)."""
    values, renders = [], {}
    for v, t in recon.holdout:
        render = recon.render(v, t, backend="auto").rgb.clamp(0, 1)
        target = grid.frames[v, t].permute(1, 2, 0)
        values.append((psnr(render, target), float(ssim(render, target))))
        pair = torch.cat([grid.frames[v, t], render.permute(2, 0, 1)], dim=-1)
        renders[f"holdout_v{v:03d}_t{t:03d}.png"] = to_uint8(pair)
    metrics: dict[str, Any] = {"psnr": float("nan"), "ssim": float("nan")}
    if values:
        metrics["psnr"] = sum(p for p, _ in values) / len(values)
        metrics["ssim"] = sum(s for _, s in values) / len(values)
    return metrics, renders


def export_run(load_config: Path, output: Path) -> dict[str, Any]:
    """Load a ``fourreal-splat`` run's last checkpoint and write it as a fourreal scene folder;
    returns the held-out metrics written to ``metrics.json``."""
    from nerfstudio.utils.eval_utils import eval_setup

    start = time.perf_counter()
    if not Path(load_config).is_file():
        raise FourrealError(f"{load_config} is missing: pass the config.yml of an ns-train run")
    config, pipeline, checkpoint, step = eval_setup(Path(load_config), test_mode="inference")
    model = pipeline.model
    if not isinstance(model, FourrealSplatModel):
        raise FourrealError(
            f"{load_config} is a {config.method_name} run; fourreal-ns-export exports "
            "fourreal-splat runs only"
        )
    grid_path = Path(config.pipeline.datamanager.dataparser.data)
    grid = load_grid(grid_path)
    recon = reconstruction_of(model, step)
    metrics, renders = holdout_metrics(recon, grid)
    metrics.update(
        num_gaussians=len(recon.model),
        num_pruned=recon.num_pruned,
        seconds=time.perf_counter() - start,
        holdout=[list(vt) for vt in recon.holdout],
        steps=step,
    )
    source = {
        "grid": str(grid_path.resolve()),
        "grid_source": grid.source,
        "nerfstudio": {"config": str(Path(load_config).resolve()), "checkpoint": str(checkpoint)},
    }
    settings = ExportedConfig({"method": "fourreal-splat", **model_settings(config.pipeline.model)})
    save_scene(recon, settings, metrics, output, source, renders)  # type: ignore[arg-type]
    return metrics


@dataclass
class ExportArgs:
    """Write a nerfstudio fourreal-splat run as a fourreal scene folder (for fourreal view and
    fourreal export)."""

    load_config: Path
    """config.yml of the ns-train run (its last checkpoint is exported)."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("scene")
    """Scene folder to write (replaced atomically if it is an earlier scene)."""


def main(args: list[str] | None = None) -> None:
    parsed = tyro.cli(ExportArgs, args=args)
    try:
        metrics = export_run(parsed.load_config, parsed.output)
    except FourrealError as err:
        raise SystemExit(f"fourreal-ns-export: error: {err}") from err
    print(
        f"wrote {parsed.output} ({metrics['num_gaussians']} Gaussians, step {metrics['steps']}, "
        f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f})"
    )
