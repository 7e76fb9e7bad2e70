"""The reference rasterizer in pure PyTorch: tile-based, batched over cameras, differentiable by
autograd (design.md §6).

1. Project every Gaussian into every camera (``project.py``).
2. Bin: one (tile, Gaussian) pair per tile a Gaussian's footprint touches, sorted by tile, then by
   camera depth, then by index.
3. Composite front to back, per chunk of tiles, in depth slices of ``SLICE`` Gaussians: each
   slice evaluates its Gaussians at the tile's pixels at once, carries the transmittance to the
   next slice, and tiles whose pixels have all stopped drop out.

The exponent of every (pixel, Gaussian) pair is one small matrix product: with pixel
coordinates relative to the tile's corner, ``dᵀΣ⁻¹d = φ(pixel)·ψ(Gaussian)`` for
``φ = (x², xy, y², x, y, 1)``. Compositing is one autograd function with a hand-written
backward that replays the slices front to back (recomputing, not storing, each slice), so memory
does not grow with the number of Gaussians. Everything before it (projection, the per-pair
coefficients ψ) is plain autograd, which carries gradients on to the means, scales and pose.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
MAX_TILES = 512
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
    pair_gauss, pair_tile, tile_start, tile_count = _bin(proj, width, height, tile_size)

    # per (tile, Gaussian) pair: ψ (6), opacity, color (3), depth; one gather for all of them
    within = pair_tile % (tiles_x * tiles_y)
    origin = torch.stack([(within % tiles_x) * tile_size, (within // tiles_x) * tile_size], -1)
    mean = proj.mean2d.reshape(C * N, 2)[pair_gauss] - origin.to(means.dtype)
    a, b, c = proj.conic.reshape(C * N, 3)[pair_gauss].unbind(-1)
    mx, my = mean.unbind(-1)
    psi = torch.stack(
        [
            a,
            2 * b,
            c,
            -2 * (a * mx + b * my),
            -2 * (b * mx + c * my),
            a * mx * mx + 2 * b * mx * my + c * my * my,
        ],
        dim=-1,
    )
    per_gauss = torch.cat(
        [
            opacities[None, :, None].expand(C, N, 1),
            colors[None].expand(C, N, 3),
            proj.depth[..., None],
        ],
        dim=-1,
    ).reshape(C * N, 5)
    feats = torch.cat([psi, per_gauss[pair_gauss]], dim=-1)  # [pairs, 11]

    tables = _Tables(tile_start, tile_count, num_tiles, tile_size)
    rgb, alpha, depth = _Composite.apply(feats, background, tables)

    def to_image(x: Tensor) -> Tensor:
        x = x.reshape(C, tiles_y, tiles_x, tile_size, tile_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(C, tiles_y * tile_size, tiles_x * tile_size, -1)
        return x[:, :height, :width]

    return to_image(rgb), to_image(alpha[..., None]), to_image(depth[..., None])


def _bin(
    proj: Projected, width: int, height: int, tile: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sorted (tile, Gaussian) pairs: each pair's Gaussian id (``c·N + n``) and tile id, and the
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
        return gauss, tile_id, tile_start, tile_count


class _Tables:
    """The binning result the compositing function needs (not differentiable)."""

    def __init__(self, start: Tensor, count: Tensor, num_tiles: int, tile: int) -> None:
        self.start, self.count, self.num_tiles, self.tile = start, count, num_tiles, tile

    def pixel_features(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """φ = (x², xy, y², x, y, 1) of the pixel centers of a tile, relative to its corner."""
        offs = torch.arange(self.tile, dtype=dtype, device=device) + 0.5
        y, x = torch.meshgrid(offs, offs, indexing="ij")
        x, y = x.reshape(-1), y.reshape(-1)
        return torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], dim=-1)  # [P, 6]

    def slices(self, tiles: Tensor, stopped: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Rows of ``tiles`` with Gaussians left in slice ``k`` and pixels still running, their
        pair indices ``[r, SLICE]`` and which of those are real (not padding)."""
        counts = self.count[tiles]
        rows = torch.nonzero((counts > k * SLICE) & ~stopped.all(dim=1)).squeeze(1)
        starts = self.start[tiles[rows], None]
        index = starts + k * SLICE + torch.arange(SLICE, device=tiles.device)
        valid = index < starts + counts[rows, None]
        return rows, torch.where(valid, index, starts), valid


def _slice_weights(
    phi: Tensor, f: Tensor, valid: Tensor, T_in: Tensor, stopped_in: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weights of one depth slice. ``f`` is ``[r, S, 11]`` pair features, ``T_in`` and
    ``stopped_in`` are ``[r, P]``. Returns ``α [r,S,P]`` (0 where skipped or not added),
    ``w = α·T_excl``, ``T_excl``, whether α hit its 0.99 clamp, ``T_out`` and ``stopped_out``."""
    m = torch.matmul(f[..., :6], phi.T)  # [r, S, P]
    opacity = f[..., 6:7]
    # exp of very negative float32 arguments is slow here; those entries are masked anyway
    raw = opacity * torch.exp((-0.5 * m).clamp_min(-87.0))
    clamped = raw > ALPHA_MAX
    alpha = torch.clamp(raw, max=ALPHA_MAX)
    use = valid[..., None] & (m <= MAHALANOBIS_MAX) & (alpha >= ALPHA_MIN)
    alpha = torch.where(use, alpha, torch.zeros_like(alpha))
    # A pixel stops before the first Gaussian that would take T below T_MIN. T only falls, so
    # the Gaussians it adds are a prefix: those whose inclusive product stays >= T_MIN.
    # Over that prefix the raw product is the true transmittance, so one cumprod serves.
    T_raw = T_in[:, None] * torch.cumprod(1 - alpha, dim=1)
    add = (T_raw >= T_MIN) & ~stopped_in[:, None]
    alpha = torch.where(add, alpha, torch.zeros_like(alpha))
    T_excl = torch.cat([T_in[:, None], T_raw[:, :-1]], dim=1)  # used only where α > 0
    T_out = torch.minimum(torch.where(add, T_raw, T_in[:, None]).amin(dim=1), T_in)
    stopped = stopped_in | (T_raw[:, -1] < T_MIN)
    return alpha, alpha * T_excl, T_excl, clamped, T_out, stopped


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of the binned pairs with a replaying backward."""

    @staticmethod
    def forward(ctx, feats: Tensor, background: Tensor, tables: _Tables):  # type: ignore[override]
        P = tables.tile * tables.tile
        dtype, device = feats.dtype, feats.device
        phi = tables.pixel_features(dtype, device)
        rgb = torch.zeros(tables.num_tiles, P, 3, dtype=dtype, device=device)
        alpha = torch.zeros(tables.num_tiles, P, dtype=dtype, device=device)
        depth = torch.zeros(tables.num_tiles, P, dtype=dtype, device=device)
        T_final = torch.ones(tables.num_tiles, P, dtype=dtype, device=device)
        busy = torch.nonzero(tables.count > 0).squeeze(1)
        for tiles in busy.split(MAX_TILES):
            n = tiles.numel()
            T = torch.ones(n, P, dtype=dtype, device=device)
            stopped = torch.zeros(n, P, dtype=torch.bool, device=device)
            acc = torch.zeros(n, P, 5, dtype=dtype, device=device)  # rgb, alpha, depth
            k = 0
            while True:
                rows, index, valid = tables.slices(tiles, stopped, k)
                if rows.numel() == 0:
                    break
                f = feats[index]
                _, w, _, _, T_out, stop_out = _slice_weights(phi, f, valid, T[rows], stopped[rows])
                values = torch.cat([f[..., 7:10], torch.ones_like(f[..., :1]), f[..., 10:11]], -1)
                acc[rows] += torch.einsum("rsp,rsk->rpk", w, values)
                T[rows] = T_out
                stopped[rows] = stop_out
                k += 1
            rgb[tiles] = acc[..., :3]
            alpha[tiles] = acc[..., 3]
            depth[tiles] = acc[..., 4]
            T_final[tiles] = T
        rgb = rgb + T_final[..., None] * background
        ctx.save_for_backward(feats, rgb, alpha, depth, T_final)
        ctx.tables = tables
        return rgb, alpha, depth

    @staticmethod
    def backward(ctx, g_rgb: Tensor, g_alpha: Tensor, g_depth: Tensor):  # type: ignore[override]
        feats, rgb, alpha, depth, T_final = ctx.saved_tensors
        tables: _Tables = ctx.tables
        P = tables.tile * tables.tile
        dtype, device = feats.dtype, feats.device
        phi = tables.pixel_features(dtype, device)
        G = torch.cat([g_rgb, g_alpha[..., None], g_depth[..., None]], dim=-1)  # [tiles, P, 5]
        # Σ_j w_j g_j + T_N (g_rgb · bg): the total the remaining Gaussians must account for
        total = (g_rgb * rgb).sum(-1) + g_alpha * alpha + g_depth * depth
        grad = torch.zeros_like(feats)
        busy = torch.nonzero(tables.count > 0).squeeze(1)
        for tiles in busy.split(MAX_TILES):
            n = tiles.numel()
            T = torch.ones(n, P, dtype=dtype, device=device)
            stopped = torch.zeros(n, P, dtype=torch.bool, device=device)
            done = torch.zeros(n, P, dtype=dtype, device=device)  # Σ_{j ≤ s} w_j g_j so far
            G_t, total_t = G[tiles], total[tiles]
            k = 0
            while True:
                rows, index, valid = tables.slices(tiles, stopped, k)
                if rows.numel() == 0:
                    break
                f = feats[index]
                a, w, T_excl, clamped, T_out, stop_out = _slice_weights(
                    phi, f, valid, T[rows], stopped[rows]
                )
                values = torch.cat([f[..., 7:10], torch.ones_like(f[..., :1]), f[..., 10:11]], -1)
                Gr = G_t[rows]  # [r, P, 5]
                g = torch.einsum("rsk,rpk->rsp", values, Gr)  # dL/d(w) per pair and pixel
                wg = w * g
                prefix = done[rows][:, None] + torch.cumsum(wg, dim=1)
                rest = total_t[rows][:, None] - prefix  # Σ_{j > s} w_j g_j + T_N (g·bg)
                d_alpha = T_excl * g - rest / (1 - a)
                d_alpha = torch.where(a > 0, d_alpha, torch.zeros_like(d_alpha))
                d_raw = torch.where(clamped, torch.zeros_like(d_alpha), d_alpha)
                # α = o·exp(-m/2): dα/do = α/o, dα/dm = -α/2
                d_m = d_raw * (-0.5 * a)
                d_opacity = (d_raw * a).sum(-1, keepdim=True) / f[..., 6:7].clamp_min(1e-30)
                d_psi = torch.matmul(d_m, phi)  # [r, S, 6]
                d_values = torch.einsum("rsp,rpk->rsk", w, Gr)  # [r, S, 5]
                d_pair = torch.cat(
                    [d_psi, d_opacity, d_values[..., :3], d_values[..., 4:5]], dim=-1
                )
                grad[index[valid]] = d_pair[valid]
                done[rows] = prefix[:, -1]
                T[rows] = T_out
                stopped[rows] = stop_out
                k += 1
        g_background = None
        if ctx.needs_input_grad[1]:
            g_background = (g_rgb * T_final[..., None]).reshape(-1, 3).sum(0)
        return grad, g_background, None
