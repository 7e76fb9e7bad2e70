"""Memory and time of ``fourreal view`` on a large static 3DGS PLY (1M Gaussians, SH degree 3).

Target (issue 6): the PLY opens, subsampled for the browser, with the server under 2 GB. The PLY
is written into a temporary folder; a fresh process loads it through the viewer's own path
(``load_view_scene`` then ``Viewer``, default ``max_gaussians``), starts the server on a free
port without a browser, fetches the page once, and reports its peak RSS. Writes
bench/results/view.json.

    .venv/bin/python bench/view.py [--count 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from fourreal.io.atomic import write_json

LIMIT_MB = 2048


def write_big_ply(path: Path, count: int, seed: int = 0, chunk: int = 200_000) -> None:
    """A standard 3DGS PLY (SH degree 3: 62 float properties) of ``count`` random Gaussians."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{k}" for k in range(45)] + ["opacity"]
    names += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {count}\n" + "".join(f"property float {n}\n" for n in names)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write((header + "end_header\n").encode())
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            rows = np.zeros((n, len(names)), dtype="<f4")
            rows[:, 0:3] = rng.normal(size=(n, 3)) * [2.0, 2.0, 0.5]
            rows[:, 6:54] = rng.normal(size=(n, 48)) * 0.5
            rows[:, 54] = rng.normal(size=n) * 2
            rows[:, 55:58] = np.log(rng.uniform(0.005, 0.05, size=(n, 3)))
            rows[:, 58:62] = rng.normal(size=(n, 4))
            f.write(rows.tobytes())


def child(path: Path) -> None:
    """Load and serve ``path`` the way ``fourreal view`` does; print one JSON line."""
    from fourreal.viewers.server import Viewer, ViewOptions
    from fourreal.viewers.sources import load_view_scene

    start = time.perf_counter()
    scene = load_view_scene(path)
    loaded = time.perf_counter()
    viewer = Viewer(scene, ViewOptions(port=0))
    served = time.perf_counter()
    try:
        with urllib.request.urlopen(viewer.url, timeout=30) as response:
            status = response.status
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result = {
            "gaussians_in_file": scene.num_gaussians,
            "gaussians_shown": len(viewer._packed[0].centers),
            "display_note": viewer.display_note,
            "notes": scene.notes,
            "load_seconds": round(loaded - start, 2),
            "pack_and_serve_seconds": round(served - loaded, 2),
            "page_status": status,
            "peak_rss_mb": round(peak_kb / 1024, 1),
        }
    finally:
        viewer.stop()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="fourreal-bench-view-") as tmp:
        ply = Path(tmp) / "big.ply"
        start = time.perf_counter()
        write_big_ply(ply, args.count)
        print(f"wrote {args.count:,} Gaussians ({ply.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(ply)], capture_output=True, text=True
        )
        if run.returncode != 0:
            sys.exit(f"the viewer failed:\n{run.stderr}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        file_mb = round(ply.stat().st_size / 2**20, 1)
    import torch

    out = {
        "benchmark": "fourreal view of a static 3DGS PLY (SH degree 3), server without a browser",
        "file_mb": file_mb,
        **result,
        "limit_mb": LIMIT_MB,
        "under_limit": result["peak_rss_mb"] < LIMIT_MB,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    path = Path(__file__).parent / "results" / "view.json"
    write_json(path, out)
    print(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
