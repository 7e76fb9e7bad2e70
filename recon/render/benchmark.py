"""``fourreal bench render``: forward and forward+backward time and peak memory per backend.

Each configuration runs in a fresh subprocess, so the peak memory of one (the process's
high-water mark above its level before rendering, or CUDA's peak allocation) is not hidden by
another's.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fourreal.io.atomic import write_json
from fourreal.recon.render import cpu_available, gsplat_available, rasterize


@dataclass(frozen=True)
class Case:
    backend: str
    num_gaussians: int
    height: int
    width: int
    repeats: int = 3
    seed: int = 0


def bench_scene(num: int, width: int, height: int, seed: int = 0, device: str = "cpu"):
    """Gaussians filling the view frustum between z = 2 and 6, with 3σ radii of 2–10 pixels
    (log-uniform), random colors and opacities; camera at the origin looking down +z."""
    g = torch.Generator().manual_seed(seed)
    f = 0.5 * width / math.tan(math.radians(30))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    z = torch.rand(num, generator=g) * 4 + 2
    x = (torch.rand(num, generator=g) - 0.5) * width / f * z
    y = (torch.rand(num, generator=g) - 0.5) * height / f * z
    radius_px = torch.exp(torch.rand(num, generator=g) * math.log(5)) * 2
    scene = (
        torch.stack([x, y, z], 1),
        radius_px * z / (3 * f),
        torch.rand(num, generator=g) * 0.9 + 0.05,
        torch.rand(num, 3, generator=g),
    )
    return [t.to(device) for t in scene], torch.eye(4, device=device), K.to(device)


def run_case(case: Case) -> dict:
    """Time one configuration in this process; returns milliseconds and peak memory."""
    device = "cuda" if case.backend == "gsplat" else "cpu"
    scene, T_cam_world, K = bench_scene(
        case.num_gaussians, case.width, case.height, case.seed, device
    )
    args = (T_cam_world, K, case.width, case.height)

    def forward() -> None:
        with torch.no_grad():
            rasterize(*scene, *args, backend=case.backend)

    def forward_backward() -> None:
        params = [t.detach().requires_grad_() for t in scene]
        out = rasterize(*params, *args, backend=case.backend)
        (out.rgb.sum() + out.depth.sum()).backward()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_bytes()
    result = {"forward_ms": _time(forward, case.repeats, device)}
    result["forward_backward_ms"] = _time(forward_backward, case.repeats, device)
    if device == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mb"] = max(0, _peak_rss_bytes() - base_rss) / 2**20
    result["gaussians_per_s_forward"] = case.num_gaussians / (result["forward_ms"] / 1000)
    return result


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def available_backends() -> list[str]:
    """torch everywhere, cpu where it builds (compiling it here, once, if needed), gsplat with
    CUDA."""
    backends = ["torch"]
    if cpu_available():
        backends.append("cpu")
    if torch.cuda.is_available() and gsplat_available():
        backends.append("gsplat")
    return backends


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_render(
    counts: tuple[int, ...] = (10_000, 50_000, 200_000),
    sizes: tuple[tuple[int, int], ...] = ((144, 256), (288, 512)),
    backends: tuple[str, ...] | None = None,
    repeats: int = 3,
    output: Path | None = Path("bench/results/render.json"),
    quiet: bool = False,
) -> dict:
    """Run every (size, count, backend) in its own subprocess; print a table; write JSON. The
    backends of one configuration run back to back, so that they see the same machine load."""
    rows = []
    load_before = os.getloadavg()  # other work on the machine makes every timing slower
    header = f"{'backend':8s} {'size':>9s} {'gaussians':>9s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} "
    header += f"{'Mgauss/s':>9s} {'peak MB':>8s}"
    if not quiet:
        print(header)
    backends = backends or tuple(available_backends())
    for height, width in sizes:
        for num in counts:
            for backend in backends:
                case = Case(backend, num, height, width, repeats)
                row = {**asdict(case), **_run_in_subprocess(case)}
                rows.append(row)
                if not quiet:
                    print(
                        f"{backend:8s} {height:4d}x{width:<4d} {num:9d} {row['forward_ms']:9.1f} "
                        f"{row['forward_backward_ms']:11.1f} "
                        f"{row['gaussians_per_s_forward'] / 1e6:9.2f} {row['peak_memory_mb']:8.0f}"
                    )
    report = {
        "benchmark": "fourreal.recon.render.rasterize, one camera, median of repeats",
        "scene": "Gaussians filling the frustum at z in [2, 6], 3-sigma radii 2-10 px",
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": rows,
    }
    if output is not None:
        write_json(output, report)
        if not quiet:
            print(f"wrote {output}")
    return report


def _run_in_subprocess(case: Case) -> dict:
    code = (
        "import json, sys; from fourreal.recon.render.benchmark import Case, run_case; "
        "print(json.dumps(run_case(Case(**json.loads(sys.argv[1])))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(asdict(case))],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
