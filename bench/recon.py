"""Reconstruction quality and time on the synthetic scenes (issue 5's acceptance figures).

Each scene is rendered as an 8x8 grid at 144x256; the reconstruction sees only the frames and
the intrinsics (poses and depth hidden). ``panda`` is the animated asset bundled with panda3d
(fourreal.synth.assets) walking on a checkered ground. Reports held-out PSNR/SSIM, Gaussians,
pruned, seconds, and the PSNR of the exported per-time PLYs rendered at the held-out views;
with --ablations, the same run without pruning, without view offsets, without tracking init and
without time seeds (or the ones named by --variants). Writes bench/results/recon.json (merging
with earlier rows of other scenes; one writer at a time, or give --out).

    .venv/bin/python bench/recon.py --scenes default orbit --ablations
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from fourreal.io import read_ply, save_grid
from fourreal.io.atomic import write_json
from fourreal.recon.config import PRESETS
from fourreal.recon.export import export_ply_sequence
from fourreal.recon.losses import psnr
from fourreal.recon.render import rasterize
from fourreal.recon.render.benchmark import machine
from fourreal.recon.run import run_reconstruction
from fourreal.synth import synth_grid
from fourreal.types import Cameras

ABLATIONS = {
    "full": {},
    "no_prune": {"prune": False},
    "no_view_offsets": {"view_offsets": False},
    "no_tracking_init": {"tracking_init": False},
    "no_time_seeds": {"time_seeds": False},
    "keep_view_offsets": {"view_offset_fade": 0.0},
}


def bench_grid(scene: str):
    """The 8x8 grid at 144x256 of a procedural scene, or of the panda walking on a checkered
    ground (``panda``: the animated asset bundled with panda3d, issue 11)."""
    if scene == "panda":
        from fourreal.synth.assets import AssetStage, asset_grid

        return asset_grid("panda", views=8, times=8, height=144, width=256,
                          stage=AssetStage(ground=True))  # fmt: skip
    return synth_grid(scene, seed=0, views=8, times=8, height=144, width=256)


def exported_psnr(scene: Path, grid, metrics: dict) -> float:
    """Mean PSNR of the per-time PLYs rendered at the held-out views vs the true frames."""
    meta = json.loads((scene / "scene.json").read_text())
    folder = export_ply_sequence(scene, scene / "export")
    K = torch.tensor(meta["cameras"]["K"])
    T_cam_world = torch.linalg.inv(torch.tensor(meta["cameras"]["T_world_cam"]))
    background = torch.tensor(meta["background"])
    values = []
    for v, t in metrics["holdout"]:
        g = read_ply(folder / f"t{t:03d}.ply")
        out = rasterize(g.means, g.scales[:, 0], g.opacities, g.colors, T_cam_world[v], K[v],
                        grid.width, grid.height, background)  # fmt: skip
        values.append(psnr(out.rgb.clamp(0, 1), grid.frames[v, t].permute(1, 2, 0)))
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", nargs="+",
                        default=["default", "orbit", "wave", "spin", "panda"])  # fmt: skip
    parser.add_argument("--ablations", action="store_true", help="run every variant")
    parser.add_argument("--variants", nargs="+", choices=list(ABLATIONS), default=None)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's")
    parser.add_argument("--backend", default="auto", help="rasterizer backend")
    results = Path(__file__).parent / "results" / "recon.json"
    parser.add_argument("--out", type=Path, default=results,
                        help="JSON to merge rows into (one writer at a time)")  # fmt: skip
    args = parser.parse_args()
    path = args.out
    rows = json.loads(path.read_text())["results"] if path.exists() else []
    for scene in args.scenes:
        grid = bench_grid(scene)
        blind = grid.replace(cameras=Cameras(grid.cameras.K), depth=None, gt={})
        names = list(ABLATIONS) if args.ablations else args.variants or ["full"]
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                grid_path = save_grid(blind, Path(tmp) / "grid")
                config = PRESETS[args.preset].replace(**ABLATIONS[name], backend=args.backend)
                if args.iterations is not None:
                    config = config.replace(iterations=args.iterations)
                metrics = run_reconstruction(grid_path, Path(tmp) / "scene", config, progress=False)
                exported = exported_psnr(Path(tmp) / "scene", grid, metrics)
            row = {
                "scene": scene, "variant": name, "preset": args.preset, "backend": args.backend,
                "psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4),
                "exported_ply_psnr": round(exported, 3),
                "num_gaussians": metrics["num_gaussians"], "num_pruned": metrics["num_pruned"],
                "seconds": round(metrics["seconds"], 1), "steps": metrics["steps"],
            }  # fmt: skip
            rows = [
                r
                for r in rows
                if (r["scene"], r["variant"], r["preset"], r.get("backend"), r["steps"])
                != (scene, name, args.preset, args.backend, metrics["steps"])
            ]
            rows.append(row)
            print(json.dumps(row), flush=True)
            what = "fourreal reconstruct, 8x8 grids at 144x256, poses and depth hidden"
            out = {"benchmark": what, "machine": machine(), "results": rows}
            write_json(path, out)


if __name__ == "__main__":
    main()
