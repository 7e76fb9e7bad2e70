"""The gsplat backend (CUDA only): fourreal's isotropic Gaussians through ``gsplat.rasterization``.

Isotropic Gaussians become identity quaternions with three equal scales; the near plane and the
low-pass (``eps2d``) match the contract. gsplat differs from the reference only at 3σ edges
(square tile culling) and for opacities above 0.99 (it clamps at 0.999), see design.md §6.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fourreal.recon.render.project import LOW_PASS, NEAR


def rasterize_gsplat(
    means: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    T_cam_world: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    try:
        from gsplat import rasterization
    except ImportError as err:
        raise ImportError(
            "backend='gsplat' needs gsplat: pip install -e '.[cuda]' (with a CUDA build of torch)"
        ) from err
    C, N = T_cam_world.shape[0], means.shape[0]
    quats = torch.zeros(N, 4, dtype=means.dtype, device=means.device)
    quats[:, 0] = 1
    out, alpha, _ = rasterization(
        means,
        quats,
        scales[:, None].expand(N, 3),
        opacities,
        colors,
        T_cam_world,
        K,
        width,
        height,
        near_plane=NEAR,
        eps2d=LOW_PASS,
        render_mode="RGB+D",  # accumulated depth, as the contract says
        backgrounds=background[None].expand(C, 3),
        packed=False,
    )
    return out[..., :3], alpha, out[..., 3:4]
