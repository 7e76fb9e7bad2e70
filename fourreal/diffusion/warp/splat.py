"""Forward splatting with a soft z-buffer, and hole filling, over ``[C, H, W]`` images.

Pixel positions are camera pixel coordinates: the center of pixel ``(i, j)`` is at
``(i + 0.5, j + 0.5)`` (design.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass
class Splat:
    """A splatted image: ``color [C, H, W]``, total bilinear ``weight [H, W]`` (0 = hole) and
    the weighted mean camera ``depth [H, W]`` of what landed there (0 = hole)."""

    color: Tensor
    weight: Tensor
    depth: Tensor

    @property
    def covered(self) -> Tensor:
        return self.weight > 1e-3


def splat(
    values: Float[Tensor, "N C"],
    uv: Float[Tensor, "N 2"],
    z: Float[Tensor, " N"],
    height: int,
    width: int,
    rel_tol: float = 0.03,
) -> Splat:
    """Splat ``values`` at pixel positions ``uv`` (camera depth ``z``) with bilinear weights.

    A soft z-buffer keeps, at each pixel, only contributions whose depth is within ``rel_tol``
    (relative) of the nearest point whose rounded position is that pixel, so a surface hides
    what lies behind it, while the bilinear footprint closes the sub-pixel cracks of a
    forward warp. Points at ``z <= 0`` or outside the image are dropped.
    """
    C = values.shape[1]
    n_pix = height * width
    x = uv[:, 0] - 0.5
    y = uv[:, 1] - 0.5
    ok = (z > 0) & (x > -1) & (x < width) & (y > -1) & (y < height) & torch.isfinite(x + y)
    values, x, y, z = values[ok], x[ok], y[ok], z[ok]

    nearest_x, nearest_y = x.round().long(), y.round().long()
    inside = (nearest_x >= 0) & (nearest_x < width) & (nearest_y >= 0) & (nearest_y < height)
    zbuf = torch.full((n_pix,), float("inf"), dtype=z.dtype)
    zbuf.scatter_reduce_(0, (nearest_y * width + nearest_x)[inside], z[inside], "amin")

    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    color = torch.zeros(n_pix, C, dtype=values.dtype)
    weight = torch.zeros(n_pix, dtype=values.dtype)
    depth = torch.zeros(n_pix, dtype=values.dtype)
    corners = [(0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy))]
    corners += [(0, 1, (1 - fx) * fy), (1, 1, fx * fy)]
    for dx, dy, w in corners:
        xi, yi = x0 + dx, y0 + dy
        keep = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height) & (w > 1e-4)
        index = yi * width + xi
        front = zbuf[index.clamp(0, n_pix - 1)]
        keep &= (z <= front * (1 + rel_tol)) | torch.isinf(front)
        index, wk = index[keep], w[keep].to(values.dtype)
        color.index_add_(0, index, values[keep] * wk[:, None])
        weight.index_add_(0, index, wk)
        depth.index_add_(0, index, z[keep].to(values.dtype) * wk)
    norm = weight.clamp_min(1e-12)
    color = (color / norm[:, None]).T.reshape(C, height, width)
    depth = torch.where(weight > 0, depth / norm, torch.zeros_like(depth))
    return Splat(color, weight.reshape(height, width), depth.reshape(height, width))


def pull_push(values: Float[Tensor, "C H W"], known: Bool[Tensor, "H W"]) -> Float[Tensor, "C H W"]:
    """Fill the pixels where ``known`` is False by a pull–push pyramid (normalized averages of
    ever coarser levels, pushed back down); known pixels keep their values."""
    if bool(known.all()) or not bool(known.any()):
        return values.clone()
    levels = []
    num = values * known
    den = known.to(values.dtype)[None]
    while min(num.shape[-2:]) > 1:
        levels.append((num, den))
        num = F.avg_pool2d(num[None], 2, ceil_mode=True)[0]
        den = F.avg_pool2d(den[None], 2, ceil_mode=True)[0]
    filled = num / den.clamp_min(1e-12)
    for num, den in reversed(levels):
        up = F.interpolate(filled[None], size=num.shape[-2:], mode="bilinear")[0]
        mean = num / den.clamp_min(1e-12)
        # blend toward the coarse estimate where this level has little support
        alpha = den.clamp(0, 1)
        filled = alpha * mean + (1 - alpha) * up
    return torch.where(known[None], values, filled)


def propagate(
    values: Float[Tensor, "C H W"],
    known: Bool[Tensor, "H W"],
    depth: Float[Tensor, "H W"],
    rel_tol: float = 0.05,
    iterations: int = 64,
    allowed: Bool[Tensor, "H W"] | None = None,
    guide: Float[Tensor, "G H W"] | None = None,
    guide_tol: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Spread ``values`` from known pixels to unknown 8-neighbours on the same surface (depth
    within ``rel_tol``), one ring per iteration, only into ``allowed`` pixels (default: all).
    With a ``guide`` image, only between neighbours whose guide values differ by at most
    ``guide_tol`` (max over channels): values do not cross color edges.
    Returns the values and the new known mask; pixels no known pixel reaches stay unknown."""
    values = torch.where(known[None], values, torch.zeros_like(values))
    known = known.clone()
    todo = ~known if allowed is None else allowed & ~known
    H, W = known.shape
    pad_z = F.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    pad_g = None if guide is None else F.pad(guide[None], (1, 1, 1, 1), mode="replicate")[0]
    for _ in range(iterations):
        if not bool(todo.any()):
            break
        pad_v = F.pad(values[None], (1, 1, 1, 1), mode="replicate")[0]
        pad_k = F.pad(known[None, None].to(values.dtype), (1, 1, 1, 1))[0, 0]
        num = torch.zeros_like(values)
        den = torch.zeros_like(depth)
        for dy in range(3):
            for dx in range(3):
                if dy == 1 and dx == 1:
                    continue
                k = pad_k[dy : dy + H, dx : dx + W]
                z = pad_z[dy : dy + H, dx : dx + W]
                w = k * ((z - depth).abs() <= rel_tol * depth.clamp_min(1e-6))
                if pad_g is not None:
                    g = pad_g[:, dy : dy + H, dx : dx + W]
                    w = w * ((g - guide).abs().amax(0) <= guide_tol)
                num += pad_v[:, dy : dy + H, dx : dx + W] * w
                den += w
        new = todo & (den > 0)
        if not bool(new.any()):
            break
        values = torch.where(new[None], num / den.clamp_min(1e-12), values)
        known = known | new
        todo = todo & ~new
    return values, known
