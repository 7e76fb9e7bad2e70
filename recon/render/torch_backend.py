"""The reference rasterizer in pure PyTorch: tile-based, batched over cameras, differentiable by
autograd (design.md §6).

1. Project every Gaussian into every camera (``project.py``).
2. Bin: one (tile, Gaussian) pair per tile a Gaussian's footprint touches, sorted by tile, then by
   camera depth, then by index.
3. Composite front to back, per chunk of tiles, in depth slices of ``SLICE`` Gaussians: each
   slice evaluates its Gaussians at the tile's pixels at once, carries the transmittance to the
   next slice, and tiles whose pixels have all stopped drop out. With gradients on, each slice
   runs under activation checkpointing, so memory stays bounded by one slice per chunk
   instead of growing with the number of Gaussians.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from fourreal.recon.render.project import (
    ALPHA_MAX,
    ALPHA_MIN,
    MAHALANOBIS_MAX,
    T_MIN,
    Projected,
    footprint_tiles,
    project,
    tiles_per_axis,
)

SLICE = 64
"""Gaussians per depth slice of a tile."""
MAX_TILES = 1024
"""Tiles composited together; bounds memory to MAX_TILES · tile² · SLICE values per tensor."""


def rasterize_torch(
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
    C, N = T_cam_world.shape[0], means.shape[0]
    proj = project(means, scales, opacities, T_cam_world, K, width, height)
    tiles_x, tiles_y = tiles_per_axis(width, height, tile_size)
    num_tiles = C * tiles_x * tiles_y
    pair_gauss, tile_start, tile_count = _bin(proj, width, height, tile_size)

    # Per-(camera, Gaussian) values, flat so that a pair's Gaussian id indexes them directly.
    flat_mean2d = proj.mean2d.reshape(C * N, 2)
    flat_conic = proj.conic.reshape(C * N, 3)
    flat_depth = proj.depth.reshape(C * N)
    flat_opacity = opacities[None].expand(C, N).reshape(C * N)
    flat_color = colors[None].expand(C, N, 3).reshape(C * N, 3)
    params = (flat_mean2d, flat_conic, flat_opacity, flat_color, flat_depth)

    P = tile_size * tile_size
    dtype, device = means.dtype, means.device
    out_rgb = background.to(dtype).expand(num_tiles, P, 3)
    out_alpha = torch.zeros(num_tiles, P, dtype=dtype, device=device)
    out_depth = torch.zeros(num_tiles, P, dtype=dtype, device=device)

    busy = torch.nonzero(tile_count > 0).squeeze(1)
    for chunk in busy.split(MAX_TILES):
        rgb, alpha, depth = _composite_tiles(
            chunk, pair_gauss, tile_start, tile_count, params, background,
            tile_size, tiles_x, tiles_y,
        )  # fmt: skip
        out_rgb = out_rgb.index_copy(0, chunk, rgb)
        out_alpha = out_alpha.index_copy(0, chunk, alpha)
        out_depth = out_depth.index_copy(0, chunk, depth)

    def to_image(x: Tensor) -> Tensor:
        x = x.reshape(C, tiles_y, tiles_x, tile_size, tile_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(C, tiles_y * tile_size, tiles_x * tile_size, -1)
        return x[:, :height, :width]

    return to_image(out_rgb), to_image(out_alpha[..., None]), to_image(out_depth[..., None])


def _bin(proj: Projected, width: int, height: int, tile: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted (tile, Gaussian) pairs: the Gaussian id of each pair (``c·N + n``), and the
    start and count of each tile's run."""
    with torch.no_grad():
        C, N = proj.depth.shape
        tiles_x, tiles_y = tiles_per_axis(width, height, tile)
        lo, hi, hit = footprint_tiles(proj, width, height, tile)
        span = (hi - lo + 1).clamp_min(0)
        count = torch.where(hit, span[..., 0] * span[..., 1], torch.zeros_like(span[..., 0]))
        count = count.reshape(C * N)
        gauss = torch.repeat_interleave(torch.arange(C * N, device=count.device), count)
        first = torch.cumsum(count, 0) - count
        local = torch.arange(gauss.numel(), device=count.device) - first[gauss]
        lo_f, span_f = lo.reshape(C * N, 2)[gauss], span.reshape(C * N, 2)[gauss]
        tx = lo_f[:, 0] + local % span_f[:, 0]
        ty = lo_f[:, 1] + local // span_f[:, 0]
        tile_id = (gauss // N) * (tiles_x * tiles_y) + ty * tiles_x + tx
        # depth order with ties by index: pairs are generated in index order and both sorts
        # are stable
        order = torch.argsort(proj.depth.detach().reshape(C * N)[gauss], stable=True)
        order = order[torch.argsort(tile_id[order], stable=True)]
        gauss, tile_id = gauss[order], tile_id[order]
        tile_count = torch.bincount(tile_id, minlength=C * tiles_x * tiles_y)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
        return gauss, tile_start, tile_count


def _composite_tiles(
    tiles: Tensor,
    pair_gauss: Tensor,
    tile_start: Tensor,
    tile_count: Tensor,
    params: tuple[Tensor, ...],
    background: Tensor,
    tile: int,
    tiles_x: int,
    tiles_y: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite a chunk of tiles front to back: ``[n, P, 3]``, ``[n, P]``, ``[n, P]``."""
    n, P = tiles.numel(), tile * tile
    dtype, device = params[0].dtype, params[0].device
    within = tiles % (tiles_x * tiles_y)
    offs = torch.arange(tile, device=device, dtype=dtype) + 0.5
    py, px = torch.meshgrid(offs, offs, indexing="ij")
    pix = torch.stack([px.reshape(-1), py.reshape(-1)], dim=-1)  # [P, 2]
    origin = torch.stack([(within % tiles_x) * tile, (within // tiles_x) * tile], dim=-1)
    pix = pix[None] + origin[:, None].to(dtype)  # [n, P, 2]

    T = torch.ones(n, P, dtype=dtype, device=device)
    stopped = torch.zeros(n, P, dtype=torch.bool, device=device)
    rgb = torch.zeros(n, P, 3, dtype=dtype, device=device)
    alpha = torch.zeros(n, P, dtype=dtype, device=device)
    depth = torch.zeros(n, P, dtype=dtype, device=device)
    counts = tile_count[tiles]
    starts = tile_start[tiles]
    lane = torch.arange(SLICE, device=device)
    needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    k = 0
    while True:
        rows = torch.nonzero((counts > k * SLICE) & ~stopped.all(dim=1)).squeeze(1)
        if rows.numel() == 0:
            break
        index = starts[rows, None] + k * SLICE + lane  # [r, SLICE]
        valid = index < (starts + counts)[rows, None]
        gauss = pair_gauss[torch.where(valid, index, starts[rows, None])]
        gathered = [p[gauss] for p in params]
        args = (pix[rows], *gathered, valid, T[rows], stopped[rows])
        if needs_grad:
            d_rgb, d_alpha, d_depth, T_out, stop_out = checkpoint(
                _composite_slice, *args, use_reentrant=False
            )
        else:
            d_rgb, d_alpha, d_depth, T_out, stop_out = _composite_slice(*args)
        rgb = rgb.index_add(0, rows, d_rgb)
        alpha = alpha.index_add(0, rows, d_alpha)
        depth = depth.index_add(0, rows, d_depth)
        T = T.index_copy(0, rows, T_out)
        stopped = stopped.index_copy(0, rows, stop_out)
        k += 1
    rgb = rgb + T[..., None] * background.to(dtype)
    return rgb, alpha, depth


def _composite_slice(
    pix: Tensor,  # [r, P, 2]
    mean2d: Tensor,  # [r, S, 2]
    conic: Tensor,  # [r, S, 3]
    opacity: Tensor,  # [r, S]
    color: Tensor,  # [r, S, 3]
    depth: Tensor,  # [r, S]
    valid: Tensor,  # [r, S]
    T_in: Tensor,  # [r, P]
    stopped_in: Tensor,  # [r, P]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    d = pix[:, :, None, :] - mean2d[:, None, :, :]  # [r, P, S, 2]
    dx, dy = d[..., 0], d[..., 1]
    a, b, c = (conic[:, None, :, i] for i in range(3))
    m = a * dx * dx + 2 * b * dx * dy + c * dy * dy
    # exp of very negative float32 arguments is slow here; those entries are masked anyway
    alpha = torch.clamp(opacity[:, None] * torch.exp((-0.5 * m).clamp_min(-87.0)), max=ALPHA_MAX)
    use = valid[:, None] & (m <= MAHALANOBIS_MAX) & (alpha >= ALPHA_MIN)
    alpha = torch.where(use, alpha, torch.zeros_like(alpha))
    # A pixel stops before the first Gaussian that would take T below T_MIN. T only falls, so
    # the Gaussians it adds are a prefix: those whose inclusive product stays ≥ T_MIN.
    T_raw = T_in[..., None] * torch.cumprod(1 - alpha, dim=-1)
    add = (T_raw >= T_MIN) & ~stopped_in[..., None]
    alpha = torch.where(add, alpha, torch.zeros_like(alpha))
    T_incl = T_in[..., None] * torch.cumprod(1 - alpha, dim=-1)
    T_excl = torch.cat([T_in[..., None], T_incl[..., :-1]], dim=-1)
    w = alpha * T_excl  # [r, P, S]
    d_rgb = torch.einsum("rps,rsk->rpk", w, color)
    d_alpha = w.sum(dim=-1)
    d_depth = torch.einsum("rps,rs->rp", w, depth)
    stopped = stopped_in | (T_raw[..., -1] < T_MIN)
    return d_rgb, d_alpha, d_depth, T_incl[..., -1], stopped
