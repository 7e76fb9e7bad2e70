"""Image losses and metrics: L1, D-SSIM (kornia), PSNR, SSIM."""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim
from torch import Tensor


def to_bchw(image: Tensor) -> Tensor:
    """``[H, W, 3]`` or ``[B, H, W, 3]`` to ``[B, 3, H, W]``."""
    if image.ndim == 3:
        image = image[None]
    return image.permute(0, 3, 1, 2)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM (11×11 Gaussian window) of images ``[..., H, W, 3]`` in [0, 1]."""
    return kornia_ssim(to_bchw(a), to_bchw(b), window_size=11).mean()


def photometric_loss(render: Tensor, target: Tensor, ssim_weight: float) -> Tensor:
    """``(1 - λ)·L1 + λ·(1 - SSIM)``, as in 3D Gaussian splatting."""
    l1 = (render - target).abs().mean()
    if ssim_weight == 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(render, target))


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item()
