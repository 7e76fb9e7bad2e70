"""Differentiable rasterization of isotropic 3D Gaussians (design.md §6).

One stateless function, :func:`rasterize`, with interchangeable backends that follow the same
contract: ``torch`` (the pure PyTorch reference, CPU or GPU), ``cpu`` (compiled C++ with OpenMP,
built on first use) and ``gsplat`` (CUDA only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from fourreal.errors import ShapeError
from fourreal.types import check_finite, check_shape

Backend = Literal["auto", "torch", "cpu", "gsplat"]
BACKENDS = ("torch", "cpu", "gsplat")


@dataclass
class RenderOutput:
    """Rendered images; a leading camera axis ``C`` when cameras were batched."""

    rgb: Float[Tensor, "*C H W 3"]
    alpha: Float[Tensor, "*C H W 1"]
    depth: Float[Tensor, "*C H W 1"]
    """Accumulated camera z (Σ wᵢ zᵢ); divide by alpha for the expected depth."""


def rasterize(
    means: Float[Tensor, "N 3"],
    scales: Float[Tensor, " N"],
    opacities: Float[Tensor, " N"],
    colors: Float[Tensor, "N 3"],
    T_cam_world: Float[Tensor, "*C 4 4"],
    K: Float[Tensor, "*C 3 3"],
    width: int,
    height: int,
    background: Float[Tensor, "3"] | None = None,
    backend: Backend = "auto",
    tile_size: int = 8,
) -> RenderOutput:
    """Render isotropic Gaussians seen by one or several pinhole cameras (OpenCV axes).

    Args:
        means: World positions.
        scales: Isotropic standard deviations, world units.
        opacities: In [0, 1].
        colors: RGB in [0, 1].
        T_cam_world: World-to-camera transforms, ``[4, 4]`` or ``[C, 4, 4]``.
        K: Intrinsics in pixels, ``[3, 3]`` or ``[C, 3, 3]`` (one is shared by all cameras).
        width, height: Image size in pixels.
        background: RGB composited behind the Gaussians (default black).
        backend: ``"torch"``, ``"cpu"`` (CPU only; compiled on first use), ``"gsplat"`` (CUDA
            only) or ``"auto"``: gsplat on CUDA when it is installed; on the CPU, the cpu backend
            for float32 when it builds (else torch, with one warning) and torch for float64.
        tile_size: Tile edge in pixels (torch and cpu backends); the image does not depend on it.

    Returns:
        :class:`RenderOutput` with ``rgb``, ``alpha`` and accumulated ``depth``, each
        ``[H, W, k]``, or ``[C, H, W, k]`` when ``T_cam_world`` is batched.

    Differentiable with respect to means, scales, opacities, colors and ``T_cam_world``.
    """
    batched = T_cam_world.ndim == 3
    if tile_size < 1:
        raise ShapeError(f"tile_size must be at least 1, got {tile_size}")
    T_cam_world, K, background = _check_inputs(
        means, scales, opacities, colors, T_cam_world, K, width, height, background
    )
    name = _choose(backend, means)
    if name == "gsplat":
        from fourreal.recon.render.gsplat_backend import rasterize_gsplat

        rgb, alpha, depth = rasterize_gsplat(
            means, scales, opacities, colors, T_cam_world, K, width, height, background
        )
    elif name == "cpu":
        from fourreal.recon.render.cpu_backend import rasterize_cpu

        rgb, alpha, depth = rasterize_cpu(
            means, scales, opacities, colors, T_cam_world, K, width, height, background,
            tile_size=tile_size,
        )  # fmt: skip
    else:
        from fourreal.recon.render.torch_backend import rasterize_torch

        rgb, alpha, depth = rasterize_torch(
            means, scales, opacities, colors, T_cam_world, K, width, height, background,
            tile_size=tile_size,
        )  # fmt: skip
    if not batched:
        rgb, alpha, depth = rgb[0], alpha[0], depth[0]
    return RenderOutput(rgb, alpha, depth)


def _choose(backend: str, means: Tensor) -> str:
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if backend == "gsplat":
        if not means.is_cuda:
            raise RuntimeError(
                "backend='gsplat' needs CUDA tensors and a CUDA device (gsplat has no CPU path); "
                "use backend='torch' or 'auto' on the CPU"
            )
        return "gsplat"
    if backend == "cpu" and means.is_cuda:
        raise RuntimeError("backend='cpu' renders CPU tensors; use 'auto' or 'gsplat' on CUDA")
    if backend == "auto":
        if means.is_cuda:
            return "gsplat" if gsplat_available() else "torch"
        # float64 is for checking against the reference, so it gets the reference itself
        if means.device.type == "cpu" and means.dtype == torch.float32 and cpu_available():
            return "cpu"
        return "torch"
    return backend


def cpu_available() -> bool:
    """Whether the compiled cpu backend builds (on first call) and loads; warns once if not."""
    from fourreal.recon.render.cpu_backend import available

    return available()


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _check_inputs(
    means: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    T_cam_world: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    dims: dict[str, int] = {}
    check_shape("means", means, "N 3", dims)
    check_shape("scales", scales, "N", dims)
    check_shape("opacities", opacities, "N", dims)
    check_shape("colors", colors, "N 3", dims)
    for name, x in (("means", means), ("scales", scales), ("opacities", opacities)):
        check_finite(name, x.detach())
    if not means.is_floating_point():
        raise ShapeError(f"means must be floating point, got {means.dtype}")
    if width < 1 or height < 1:
        raise ShapeError(f"image size must be positive, got {width}x{height}")
    if T_cam_world.ndim == 2:
        T_cam_world = T_cam_world[None]
    check_shape("T_cam_world", T_cam_world, "C 4 4", dims)
    if K.ndim == 2:
        K = K[None].expand(dims["C"], 3, 3)
    check_shape("K", K, "C 3 3", dims)
    if background is None:
        background = torch.zeros(3, dtype=means.dtype, device=means.device)
    check_shape("background", background, "3", dims)
    dtype = means.dtype
    return T_cam_world.to(dtype), K.to(dtype), background.to(dtype)
