"""A brute-force dense implementation of the renderer contract (design.md §6), for tests only.

Every pixel against every Gaussian, one camera at a time, following the contract's sentences
one by one with no tiles, footprints or slices. Tiny scenes only.
"""

import torch


def render_dense(means, scales, opacities, colors, T_cam_world, K, width, height, background):
    p = means @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    x, y, z = p.unbind(-1)
    keep = z >= 0.01  # cull Gaussians with camera z < 0.01
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    zs = torch.where(keep, z, torch.ones_like(z))
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    tan_x, tan_y = width / (2 * fx), height / (2 * fy)
    xc = torch.clamp(x / zs, -1.3 * tan_x, 1.3 * tan_x)
    yc = torch.clamp(y / zs, -1.3 * tan_y, 1.3 * tan_y)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [
            torch.stack([fx / zs, zero, -fx * xc / zs], -1),
            torch.stack([zero, fy / zs, -fy * yc / zs], -1),
        ],
        -2,
    )  # [N, 2, 3]
    cov = scales[:, None, None] ** 2 * J @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=means.dtype)
    inv = torch.linalg.inv(cov)  # [N, 2, 2]

    j, i = torch.meshgrid(
        torch.arange(height, dtype=means.dtype),
        torch.arange(width, dtype=means.dtype),
        indexing="ij",
    )
    pix = torch.stack([i + 0.5, j + 0.5], -1).reshape(-1, 2)  # [P, 2]
    d = pix[:, None, :] - torch.stack([u, v], -1)[None]  # [P, N, 2]
    m = torch.einsum("pni,nij,pnj->pn", d, inv, d)
    alpha = torch.clamp(opacities[None] * torch.exp(-0.5 * m), max=0.99)
    touch = keep[None] & (m <= 9) & (alpha >= 1 / 255)
    alpha = torch.where(touch, alpha, torch.zeros_like(alpha))

    # sort by camera z, ties by index
    order = sorted(range(means.shape[0]), key=lambda n: (float(z[n]), n))
    order = torch.tensor(order, dtype=torch.long)
    alpha, c_sorted, z_sorted = alpha[:, order], colors[order], z[order]

    P = pix.shape[0]
    T = torch.ones(P, dtype=means.dtype)
    running = torch.ones(P, dtype=torch.bool)
    rgb = torch.zeros(P, 3, dtype=means.dtype)
    acc = torch.zeros(P, dtype=means.dtype)
    depth = torch.zeros(P, dtype=means.dtype)
    for k in range(alpha.shape[1]):  # the contract, one Gaussian at a time
        a = alpha[:, k]
        running = running & ~((a > 0) & (T * (1 - a) < 1e-4))
        a = torch.where(running, a, torch.zeros_like(a))
        w = a * T
        rgb = rgb + w[:, None] * c_sorted[k]
        acc = acc + w
        depth = depth + w * z_sorted[k]
        T = T * (1 - a)
    rgb = rgb + T[:, None] * background
    shape = (height, width)
    return rgb.reshape(*shape, 3), acc.reshape(*shape, 1), depth.reshape(*shape, 1)
