"""Time asset grids: the bundled panda as an 8x8 grid at 144x256 (load, pose, render with
Panda3D's software renderer at 4x4 supersampling, z-buffer depth, tracks).

Target (issue 11): under 30 s per grid on 2 CPU cores. Writes bench/results/assets.json.

    .venv/bin/python bench/assets.py
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from fourreal.io.atomic import write_json
from fourreal.synth.assets import asset_grid


def main(repeats: int = 3) -> None:
    asset_grid("panda", views=1, times=1, height=16, width=16)  # load the libraries once
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        asset_grid("panda", views=8, times=8, height=144, width=256)
        runs.append(round(time.perf_counter() - start, 3))
        print(f"panda 8x8 at 144x256: {runs[-1]:6.2f} s")
    out = {
        "benchmark": "asset_grid('panda') 8 views x 8 times at 144x256, supersample 4 (seconds)",
        "seconds": statistics.median(runs),
        "runs": runs,
        "target_seconds": 30.0,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    path = Path(__file__).parent / "results" / "assets.json"
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
