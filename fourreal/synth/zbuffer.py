"""A small z-buffer: depth and triangle id per pixel of triangle meshes seen by cameras.

Panda3D's software renderer (tinydisplay) cannot read its depth buffer back, so asset grids get
their depth from this rasterizer run over the same posed triangles. Vectorized over triangles and
pixels: each triangle's pixel bounding box is expanded into candidate pixels, the pixel center
``(i + 0.5, j + 0.5)`` is tested against the triangle's edges, camera z is interpolated
perspective-correctly (``1/z`` is linear on the screen) and the nearest surface wins.

It runs in NumPy, single-threaded: the arrays are small (about 10^5 candidate pixels per
image), and PyTorch's intra-op threads cost more than they save here, up to 10x more when
another process is busy on the same cores.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

# candidate pixels processed at once; bounds the memory of triangles with large bounding boxes
CHUNK = 1 << 21


def rasterize_depth(
    points_cam: Float[Tensor, "B N 3"],
    faces: Int[Tensor, "F 3"],
    K: Float[Tensor, "B 3 3"],
    height: int,
    width: int,
    near: float = 1e-3,
) -> tuple[Float[Tensor, "B H W"], Int[Tensor, "B H W"]]:
    """Camera z of the nearest triangle at each pixel center, and that triangle's index, for a
    batch of ``B`` images of meshes that share their triangles (one mesh per camera).

    ``points_cam`` are vertices in OpenCV camera coordinates (x right, y down, z forward).
    Returns ``depth`` (float64, 0 where no triangle covers the pixel center) and ``face`` (-1
    there). Triangles with a vertex closer than ``near`` are dropped (no clipping), and both
    sides of a triangle are drawn (no back-face culling). Ties go to the higher triangle index.
    """
    p = points_cam.detach().cpu().double().numpy()
    K_ = K.detach().cpu().double().numpy()
    tris = faces.detach().cpu().long().numpy()
    B, N, _ = p.shape
    F = len(tris)
    z = p[..., 2]
    u = (K_[:, 0, 0, None] * p[..., 0] + K_[:, 0, 1, None] * p[..., 1]) / z + K_[:, 0, 2, None]
    v = K_[:, 1, 1, None] * p[..., 1] / z + K_[:, 1, 2, None]
    # all triangles of all images, as indices into the flattened vertices
    flat = (tris[None] + N * np.arange(B)[:, None, None]).reshape(-1, 3)
    z, u, v = z.reshape(-1), u.reshape(-1), v.reshape(-1)
    ids = np.flatnonzero((z[flat] > near).all(axis=1))
    tri_u, tri_v, tri_z = u[flat[ids]], v[flat[ids]], z[flat[ids]]
    # pixel i's center i + 0.5 lies in [lo, hi] for i in [ceil(lo - 0.5), floor(hi - 0.5)]
    x0 = np.maximum(np.ceil(tri_u.min(1) - 0.5), 0)
    x1 = np.minimum(np.floor(tri_u.max(1) - 0.5), width - 1)
    y0 = np.maximum(np.ceil(tri_v.min(1) - 0.5), 0)
    y1 = np.minimum(np.floor(tri_v.max(1) - 0.5), height - 1)
    nx = np.maximum(x1 - x0 + 1, 0).astype(np.int64)
    counts = nx * np.maximum(y1 - y0 + 1, 0).astype(np.int64)

    zbuf = np.full(B * height * width, np.inf)
    fbuf = np.full(B * height * width, -1, dtype=np.int64)
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        # a run of triangles whose candidate pixels fit in one chunk (at least one triangle)
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + CHUNK, side="right")))
        sel = slice(start, stop)
        pixel, tri, depth = _fragments(
            tri_u[sel], tri_v[sel], tri_z[sel], x0[sel], y0[sel], nx[sel], counts[sel], width
        )
        face_id = ids[sel][tri]
        pixel += (face_id // F) * (height * width)
        np.minimum.at(zbuf, pixel, depth)
        won = depth <= zbuf[pixel]  # at the nearest depth so far: earlier chunks' faces lose
        fbuf[pixel[won]] = -1
        np.maximum.at(fbuf, pixel[won], face_id[won] % F)
        start = stop
    depth_img = np.where(np.isfinite(zbuf), zbuf, 0.0).reshape(B, height, width)
    return torch.from_numpy(depth_img), torch.from_numpy(fbuf.reshape(B, height, width))


def _fragments(
    tu: np.ndarray,
    tv: np.ndarray,
    tz: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    nx: np.ndarray,
    counts: np.ndarray,
    W: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by each triangle: (pixel index, triangle index, camera z)."""
    tri = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    local = np.arange(len(tri)) - first[tri]
    px = x0[tri] + local % nx[tri] + 0.5
    py = y0[tri] + local // nx[tri] + 0.5
    a_u, b_u, c_u = tu[tri].T
    a_v, b_v, c_v = tv[tri].T
    area = (b_u - a_u) * (c_v - a_v) - (b_v - a_v) * (c_u - a_u)
    keep = np.abs(area) > 1e-12
    tri, px, py, area = tri[keep], px[keep], py[keep], area[keep]
    a_u, b_u, c_u, a_v, b_v, c_v = (x[keep] for x in (a_u, b_u, c_u, a_v, b_v, c_v))
    # barycentric weights of the pixel center (edge functions over twice the signed area)
    w_a = ((b_u - px) * (c_v - py) - (b_v - py) * (c_u - px)) / area
    w_b = ((c_u - px) * (a_v - py) - (c_v - py) * (a_u - px)) / area
    w_c = 1 - w_a - w_b
    inside = (w_a >= 0) & (w_b >= 0) & (w_c >= 0)
    za, zb, zc = tz[tri[inside]].T
    depth = 1 / (w_a[inside] / za + w_b[inside] / zb + w_c[inside] / zc)
    pixel = py[inside].astype(np.int64) * W + px[inside].astype(np.int64)
    return pixel, tri[inside], depth
