"""What moves in the fixed-view video, and where it went.

The fixed-view row has one camera, so a per-pixel background plate (the temporal median)
separates moving objects from the static scene. Where an object went between two times is
found by block matching of the foreground masks and blurred colors, coarse to fine: unlike
optical flow this follows objects whose texture turns or blurs between frames far apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass(frozen=True)
class MotionConfig:
    foreground_threshold: float = 0.06
    """A pixel is foreground at a time where its color differs from the background plate by
    more than this (max over channels, 3×3 mean, colors in [0, 1])."""
    search_radius: int = 96
    """Largest displacement searched, in pixels."""
    coarse_factor: int = 4
    """The exhaustive search runs at 1/factor resolution, then refines at full resolution."""
    window: int = 5
    """Matching window at the coarse level (pixels of that level); 2·window+1 when refining."""
    mask_weight: float = 2.0
    """Weight of the foreground mask against the colors in the matching cost."""
    blur_sigma: float = 2.0
    """Gaussian blur of the colors before matching (pixels), so turning textures still match."""


def foreground_masks(
    row: Float[Tensor, "T 3 H W"], threshold: float = 0.06, fill_holes: bool = False
) -> Bool[Tensor, "T H W"]:
    """Pixels of each frame of a fixed-view video that differ from its background plate (the
    per-pixel temporal median), cleaned by a 3×3 opening and closing."""
    plate = row.median(dim=0).values
    diff = F.avg_pool2d((row - plate).abs().amax(1, keepdim=True), 3, 1, 1)
    mask = (diff > threshold).to(row.dtype)
    mask = -F.max_pool2d(-mask, 3, 1, 1)  # opening removes specks
    mask = F.max_pool2d(mask, 3, 1, 1)
    mask = F.max_pool2d(mask, 3, 1, 1)  # closing fills pinholes
    mask = -F.max_pool2d(-mask, 3, 1, 1)
    mask = mask[:, 0] > 0.5
    if fill_holes:
        mask = torch.stack([_fill_holes(m) for m in mask])
    return mask


def _fill_holes(mask: Bool[Tensor, "H W"]) -> Bool[Tensor, "H W"]:
    """``mask`` with the background regions it encloses (those not connected to the image
    border) filled."""
    import cv2

    _, labels = cv2.connectedComponents((~mask).numpy().astype("uint8"), connectivity=4)
    labels = torch.from_numpy(labels)
    border = torch.cat([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).unique()
    outside = torch.isin(labels, border[border > 0])
    return mask | ~outside


def displacement(
    target: Float[Tensor, "3 H W"],
    target_fg: Bool[Tensor, "H W"],
    source: Float[Tensor, "3 H W"],
    source_fg: Bool[Tensor, "H W"],
    config: MotionConfig = MotionConfig(),
) -> Float[Tensor, "2 H W"]:
    """Displacement ``d`` (x, y) per pixel such that ``target[q]`` shows what ``source``
    shows at ``q − d``: exhaustive block matching at 1/``coarse_factor`` resolution, refined at
    full resolution. Meaningful on the foreground of ``target``."""
    H, W = target_fg.shape
    f_t = _features(target, target_fg, config)
    f_s = _features(source, source_fg, config)
    k = config.coarse_factor
    c_t = F.avg_pool2d(f_t[None], k, ceil_mode=True)[0]
    c_s = F.avg_pool2d(f_s[None], k, ceil_mode=True)[0]
    r = config.search_radius // k
    offsets = _offsets(r)
    cost = _all_shifts_cost(c_t, c_s, r, config.window)  # [K, h, w]
    # a slight preference for small displacements settles ties in flat regions
    cost = cost + 1e-3 * offsets.to(cost.dtype).norm(dim=-1)[:, None, None]
    arg = cost.argmin(0)
    d = offsets[arg].permute(2, 0, 1).to(torch.float32) * k
    d = F.interpolate(d[None], size=(H, W), mode="nearest")[0]
    return _refine(f_t, f_s, d, _offsets(k // 2 + 1), 2 * config.window + 1).to(target.dtype)


def _features(image: Tensor, fg: Tensor, config: MotionConfig) -> Tensor:
    import cv2

    size = int(3 * config.blur_sigma) * 2 + 1
    array = image.permute(1, 2, 0).float().contiguous().numpy()
    blurred = torch.from_numpy(cv2.GaussianBlur(array, (size, size), config.blur_sigma))
    # float32 is plenty for matching costs and halves the memory of the shifted copies
    return torch.cat([blurred.permute(2, 0, 1), config.mask_weight * fg[None].float()])


def _offsets(radius: int) -> Tensor:
    r = torch.arange(-radius, radius + 1)
    return torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)


def _all_shifts_cost(target: Tensor, source: Tensor, radius: int, window: int) -> Tensor:
    """``[K, h, w]``: for every offset ``d_k`` of :func:`_offsets` (``radius``), the
    window-averaged ``|target(q) − source(q − d_k)|`` summed over channels; outside the image
    the source counts as 1 per channel."""
    C, h, w = target.shape
    size = 2 * radius + 1
    padded = F.pad(source[None], (radius,) * 4, value=1.0)
    # unfold gives source(q + e) for e in the window; d = -e, and _offsets runs x fastest
    patches = F.unfold(padded, size).reshape(C, size, size, h, w).flip(1, 2)
    cost = (patches - target[:, None, None]).abs().sum(0).reshape(size * size, 1, h, w)
    return F.avg_pool2d(cost, window, 1, window // 2, count_include_pad=False)[:, 0]


def _refine(target: Tensor, source: Tensor, d: Tensor, deltas: Tensor, window: int) -> Tensor:
    """Per pixel, the best of ``d + delta`` for small ``delta`` (window-averaged cost)."""
    _, H, W = target.shape
    y, x = torch.meshgrid(
        torch.arange(H, dtype=d.dtype), torch.arange(W, dtype=d.dtype), indexing="ij"
    )
    costs = []
    for dx, dy in deltas.tolist():
        sx, sy = (x - d[0] - dx).round().long(), (y - d[1] - dy).round().long()
        inside = (sx >= 0) & (sx < W) & (sy >= 0) & (sy < H)
        sampled = source[:, sy.clamp(0, H - 1), sx.clamp(0, W - 1)]
        sampled = torch.where(inside[None], sampled, torch.ones_like(sampled))
        costs.append((target - sampled).abs().sum(0))
    cost = F.avg_pool2d(
        torch.stack(costs)[:, None], window, 1, window // 2, count_include_pad=False
    )
    best = cost[:, 0].argmin(0)
    return d + deltas.to(d.dtype)[best].permute(2, 0, 1)
