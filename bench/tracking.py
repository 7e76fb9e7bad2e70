"""Accuracy and time of column tracking on the synthetic scenes (issue 4's acceptance figures).

For each named scene, an 8x8 grid at 144x256 is rendered and its freeze-time column tracked with
the ground truth hidden (intrinsics given, then removed too). Writes bench/results/tracking.json.

    .venv/bin/python bench/tracking.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fourreal.io.atomic import write_json
from fourreal.recon.render.benchmark import machine
from fourreal.synth import SCENES, synth_grid
from fourreal.tracking.evaluate import depth_errors, pose_errors
from fourreal.tracking.pipeline import track_column


def main() -> None:
    rows = []
    for scene in SCENES:
        grid = synth_grid(scene, seed=0, views=8, times=8, height=144, width=256)
        central = grid.views // 2
        truth = grid.depth[central, 0]
        radius = float(truth[truth > 0].median())
        for intrinsics in ("known", "estimated"):
            K = grid.cameras.K if intrinsics == "known" else None
            result = track_column(grid.frames[:, 0], K)
            poses = pose_errors(result.T_world_cam, grid.cameras.T_world_cam, radius)
            depth = depth_errors(result, truth)
            true_f = float(grid.cameras.K[0, 0, 0])
            row = {
                "scene": scene,
                "intrinsics": intrinsics,
                "seconds": round(result.stats["seconds"], 2),
                "rotation_error_deg_max": round(float(poses["rotation_deg"].max()), 3),
                "center_error_pct_of_radius_max": round(
                    100 * float(poses["center_fraction"].max()), 3
                ),
                "depth_median_rel_error_pct": round(100 * depth["median_rel_error"], 3),
                "depth_outliers_over_5pct": round(100 * depth["outlier_fraction"], 2),
                "focal_px": round(result.stats["focal_px"], 2),
                "focal_error_pct": round(100 * abs(result.stats["focal_px"] - true_f) / true_f, 2),
                "num_points": int(result.stats["num_points"]),
                "ba_rms_px": round(result.stats["ba_rms_px"], 3),
            }
            rows.append(row)
            print(json.dumps(row))
    out = {
        "benchmark": "track_column on the freeze-time column of 8x8 grids at 144x256",
        "radius": "median true depth of the central view",
        "machine": machine(),
        "results": rows,
    }
    path = Path(__file__).parent / "results" / "tracking.json"
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
