"""The compiled CPU backend (design.md §6): binning, per-tile depth sorting, forward compositing
and a hand-written backward in C++ (``csrc/rasterize.cpp``), parallel over tiles with OpenMP.

The projection stays in PyTorch autograd (``project.py``, shared with the torch backend), so
gradients reach the means, scales, pose (and intrinsics) through the same code as the reference,
and the projected values are bit for bit those of the torch backend. The C++ side gets the
projected Gaussians and returns gradients with respect to them.

The C++ file is compiled on first use by the system's C++ compiler into torch's extension cache
(``~/.cache/torch_extensions/fourreal/`` unless ``TORCH_EXTENSIONS_DIR`` says otherwise), named by
a hash of the source, the flags and the CPU, and loaded with ctypes; docs/render.md says why this
route rather than a torch extension.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from fourreal.errors import FourrealError, ShapeError
from fourreal.recon.render.project import (
    ALPHA_MAX,
    ALPHA_MIN,
    MAHALANOBIS_MAX,
    T_MIN,
    project,
    tiles_per_axis,
)

SOURCE = Path(__file__).with_name("csrc") / "rasterize.cpp"
FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp",
    # keeps every rounding as written: the exponent must match the torch backend bit for bit
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-std=c++17",
    "-shared",
    "-fPIC",
)
EXP_FLOOR = -30.0
"""Lower clamp of the exponent -m/2. Exact for any value below -4.5, since pixels with m > 9 are
masked (the torch backend clamps at -87 only to keep float32 ``exp`` fast); -30 also keeps
o·exp(-m/2) clear of float32 subnormals."""
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
RECORD = 12
"""Values per binned Gaussian in the packed array (kRecord in the C++ source)."""
PAIR_GRAD = 10
"""Gradient values per (tile, Gaussian) pair (kPairGrad in the C++ source)."""


class CpuBackendError(FourrealError, RuntimeError):
    """The compiled CPU rasterizer could not be built or loaded."""


def rasterize_cpu(
    means: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    T_cam_world: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor,
    tile_size: int = 8,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``C`` cameras; returns ``rgb [C,H,W,3]``, ``alpha [C,H,W,1]``, ``depth [C,H,W,1]``."""
    dtype = means.dtype
    if dtype not in DTYPES:
        raise ShapeError(
            f"the cpu backend renders float32 and float64, got {dtype}; convert the inputs or "
            "use backend='torch'"
        )
    if means.shape[0] * T_cam_world.shape[0] >= 2**31:
        raise ShapeError("the cpu backend handles fewer than 2**31 Gaussians x cameras")
    opacities, colors = opacities.to(dtype), colors.to(dtype)
    proj = project(means, scales, opacities, T_cam_world, K, width, height)
    rgb, alpha, depth = _Composite.apply(
        proj.mean2d, proj.conic, proj.depth, opacities, colors, background,
        proj.radius, proj.visible, (width, height, tile_size),
    )  # fmt: skip
    return rgb, alpha[..., None], depth[..., None]


_INT_FIELDS = ("cameras", "gaussians", "width", "height", "tile", "num_threads")
_FLOAT_FIELDS = ("alpha_min", "alpha_max", "mahalanobis_max", "t_min", "exp_floor")
_BIN_FIELDS = (
    "mean2d", "conic", "depth", "radius", "visible", "opacities", "colors", "background",
    "rect", "pair_count", "pair_offset", "rank_gauss", "packed", "tile_start", "tile_rank",
    "tile_end", "pair_slot",
)  # fmt: skip
_PIXEL_FIELDS = (
    "rgb", "alpha", "depth_out", "t_final", "last",
    "grad_rgb", "grad_alpha", "grad_depth", "pair_grad",
    "grad_mean2d", "grad_conic", "grad_depth_in", "grad_opacities", "grad_colors",
)  # fmt: skip


class _Args(ctypes.Structure):
    """Mirror of ``FrArgs`` in csrc/rasterize.cpp, field by field (all 8 bytes wide)."""

    _fields_ = [
        *((name, ctypes.c_int64) for name in _INT_FIELDS),
        *((name, ctypes.c_double) for name in _FLOAT_FIELDS),
        *((name, ctypes.c_void_p) for name in _BIN_FIELDS),
        *((name, ctypes.c_void_p) for name in _PIXEL_FIELDS),
    ]


def _args(frame: tuple[int, int, int], cameras: int, gaussians: int, **tensors: Tensor) -> _Args:
    width, height, tile = frame
    args = _Args(
        cameras=cameras, gaussians=gaussians, width=width, height=height, tile=tile,
        num_threads=torch.get_num_threads(), alpha_min=ALPHA_MIN, alpha_max=ALPHA_MAX,
        mahalanobis_max=MAHALANOBIS_MAX, t_min=T_MIN, exp_floor=EXP_FLOOR,
    )  # fmt: skip
    for name, tensor in tensors.items():
        assert tensor.is_contiguous() and tensor.device.type == "cpu", name
        setattr(args, name, tensor.data_ptr() if tensor.numel() else None)
    return args


class _Composite(torch.autograd.Function):
    """Binning and compositing of projected Gaussians in C++, with a hand-written backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, mean2d, conic, depth, opacities, colors, background, radius, visible, frame
    ):
        lib, kind = load_library(), DTYPES[mean2d.dtype]
        width, height, tile = frame
        C, N = depth.shape
        tiles_x, tiles_y = tiles_per_axis(width, height, tile)
        ints = {"dtype": torch.int32}
        longs = {"dtype": torch.int64}
        inputs = {
            "mean2d": mean2d.contiguous(),
            "conic": conic.contiguous(),
            "depth": depth.contiguous(),
            "radius": radius.contiguous(),
            "visible": visible.contiguous(),
            "opacities": opacities.contiguous(),
            "colors": colors.contiguous(),
            "background": background.contiguous(),
            "rect": torch.empty(C * N, 4, **ints),
            "pair_count": torch.empty(C * N, **ints),
        }
        num_pairs = getattr(lib, f"fr_bin_count_{kind}")(ctypes.byref(_args(frame, C, N, **inputs)))
        if num_pairs >= 2**31:
            raise ShapeError(
                f"{num_pairs} (tile, Gaussian) pairs is more than the cpu backend indexes (2**31); "
                "use fewer or smaller Gaussians, fewer cameras per call, or a larger tile_size"
            )
        inputs["pair_offset"] = torch.empty(C * N + 1, **longs)
        inputs["rank_gauss"] = torch.empty(C * N, **ints)
        inputs["packed"] = torch.empty(C * N, RECORD, dtype=mean2d.dtype)
        inputs["tile_start"] = torch.empty(C * tiles_x * tiles_y + 1, **longs)
        inputs["tile_rank"] = torch.empty(num_pairs, **ints)
        inputs["pair_slot"] = torch.empty(num_pairs, **ints)
        getattr(lib, f"fr_bin_fill_{kind}")(ctypes.byref(_args(frame, C, N, **inputs)))

        image = {"dtype": mean2d.dtype}
        outputs = {
            "rgb": torch.empty(C, height, width, 3, **image),
            "alpha": torch.empty(C, height, width, **image),
            "depth_out": torch.empty(C, height, width, **image),
            "t_final": torch.empty(C, height, width, **image),
            "last": torch.empty(C, height, width, **ints),
        }
        args = _args(frame, C, N, **inputs, **outputs)
        getattr(lib, f"fr_forward_{kind}")(ctypes.byref(args))

        ctx.frame, ctx.sizes = frame, (C, N)
        ctx.save_for_backward(
            *(inputs[name] for name in _SAVED_INPUTS), outputs["t_final"], outputs["last"]
        )
        return outputs["rgb"], outputs["alpha"], outputs["depth_out"]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rgb, grad_alpha, grad_depth):  # type: ignore[override]
        saved = dict(zip((*_SAVED_INPUTS, "t_final", "last"), ctx.saved_tensors, strict=True))
        dtype = saved["packed"].dtype
        lib, kind = load_library(), DTYPES[dtype]
        C, N = ctx.sizes
        num_pairs = saved["tile_rank"].numel()
        grads = {
            "grad_rgb": grad_rgb.contiguous(),
            "grad_alpha": grad_alpha.contiguous(),
            "grad_depth": grad_depth.contiguous(),
            # rows are written only where used, so untouched pages are never even mapped
            "pair_grad": torch.empty(num_pairs, PAIR_GRAD, dtype=dtype),
            "tile_end": torch.empty(saved["tile_start"].numel() - 1, dtype=torch.int32),
            "grad_mean2d": torch.empty(C, N, 2, dtype=dtype),
            "grad_conic": torch.empty(C, N, 3, dtype=dtype),
            "grad_depth_in": torch.empty(C, N, dtype=dtype),
            "grad_opacities": torch.empty(N, dtype=dtype),
            "grad_colors": torch.empty(N, 3, dtype=dtype),
        }
        args = _args(ctx.frame, C, N, **saved, **grads)
        getattr(lib, f"fr_backward_{kind}")(ctypes.byref(args))
        grad_background = None
        if ctx.needs_input_grad[5]:
            grad_background = (grad_rgb * saved["t_final"][..., None]).sum((0, 1, 2))
        return (
            grads["grad_mean2d"], grads["grad_conic"], grads["grad_depth_in"],
            grads["grad_opacities"], grads["grad_colors"], grad_background, None, None, None,
        )  # fmt: skip


_SAVED_INPUTS = (
    "background", "rect", "pair_count", "pair_offset", "rank_gauss", "packed", "tile_start",
    "tile_rank", "pair_slot",
)  # fmt: skip


def available() -> bool:
    """Whether the compiled backend builds and loads here; warns once (per process) if not."""
    try:
        load_library()
    except CpuBackendError as error:
        _warn_unavailable(str(error))
        return False
    return True


@functools.cache
def _warn_unavailable(reason: str) -> None:
    warnings.warn(
        f"fourreal: the compiled CPU rasterizer is unavailable, so rendering falls back to the "
        f"slower torch backend. {reason}",
        RuntimeWarning,
        stacklevel=6,  # the caller of rasterize()
    )


def load_library() -> ctypes.CDLL:
    """The compiled rasterizer, built into the cache on first use; raises :class:`CpuBackendError`
    with the reason when it cannot be built or loaded."""
    library, error = _load()
    if library is None:
        raise CpuBackendError(error)
    return library


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    # cached, failures included: a missing compiler is looked for once per process
    try:
        path = build_library(library_path())
        library = ctypes.CDLL(str(path))
    except (CpuBackendError, OSError) as error:
        return None, str(error)
    for kind in DTYPES.values():
        getattr(library, f"fr_bin_count_{kind}").restype = ctypes.c_int64
        for step in ("bin_count", "bin_fill", "forward", "backward"):
            getattr(library, f"fr_{step}_{kind}").argtypes = [ctypes.POINTER(_Args)]
    return library, ""


def library_path() -> Path:
    """Where the build for this source, these flags and this CPU lives in the cache."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    key = hashlib.sha256()
    for source in sorted(SOURCE.parent.glob("*.[ch]*")):  # rasterize.cpp and its header
        key.update(source.name.encode() + source.read_bytes())
    key.update(" ".join(FLAGS).encode())
    key.update(_cpu_fingerprint().encode())  # -march=native code must not run on another CPU
    return Path(root) / "fourreal" / f"rasterize_{key.hexdigest()[:16]}.so"


def build_library(target: Path, compiler: str | None = None) -> Path:
    """Compile csrc/rasterize.cpp into ``target`` unless it is already there. Concurrent builds
    are safe: each writes its own temporary file and renames it into place."""
    if target.exists():
        return target
    from torch.utils.cpp_extension import get_cxx_compiler

    compiler = compiler or get_cxx_compiler()
    if shutil.which(compiler) is None:
        raise CpuBackendError(
            f"no C++ compiler ({compiler!r} is not on PATH): install g++ (or set CXX) to build "
            "it, or pass backend='torch'"
        )
    print(
        "fourreal: compiling the CPU rasterizer (first use only, ~10 s)...",
        file=sys.stderr,
        flush=True,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    command = [compiler, *FLAGS, str(SOURCE), "-o", tmp]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        os.unlink(tmp)
        raise CpuBackendError(
            f"compiling the CPU rasterizer failed ({' '.join(command)}):\n{done.stderr[-3000:]}"
        )
    os.replace(tmp, target)
    print(
        f"fourreal: compiled in {time.perf_counter() - start:.1f} s -> {target}",
        file=sys.stderr,
        flush=True,
    )
    return target


def _cpu_fingerprint() -> str:
    info = [platform.machine(), platform.processor()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                info.append(line)
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return "\n".join(info)
