"""Time the synthetic-scene renderer: each named scene as an 8x8 grid at 144x256.

Target (issue 2): under 30 s per grid on 2 CPU cores. Writes bench/results/synth.json.

    .venv/bin/python bench/synth.py
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from fourreal.io.atomic import write_json
from fourreal.synth import SCENES, synth_grid


def main() -> None:
    results = {}
    for name in SCENES:
        start = time.perf_counter()
        synth_grid(name, seed=0, views=8, times=8, height=144, width=256)
        results[name] = round(time.perf_counter() - start, 3)
        print(f"{name:8s} {results[name]:6.2f} s")
    out = {
        "benchmark": "synth_grid 8 views x 8 times at 144x256 (seconds, incl. tracks)",
        "seconds": results,
        "target_seconds": 30.0,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    path = Path(__file__).parent / "results" / "synth.json"
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
