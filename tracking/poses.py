"""Camera poses of the freeze-time column: chained essential matrices, then bundle adjustment.

1. The central view and its neighbour get a relative pose from flow correspondences (essential
   matrix with RANSAC, OpenCV); the other views are registered one by one outward by PnP
   (RANSAC) against the points triangulated so far, each followed by a bundle adjustment.
2. A final bundle adjustment (Levenberg–Marquardt, Huber loss, one outlier pass) refines all
   poses, the track points and, when the intrinsics are unknown, one focal length
   (square pixels, principal point at the image center).

Poses are returned as ``T_cam_world`` with the world frame = view ``fixed``'s camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.tracking.geometry import triangulate


@dataclass
class PoseResult:
    K: Tensor  # [V, 3, 3]
    T_cam_world: Tensor  # [V, 4, 4]
    points: Tensor  # [M, 3] triangulated track points
    points_ok: Tensor  # [M]
    rms_px: float  # reprojection RMS of the inlier observations
    inlier_fraction: float


def relative_pose(uv_a: Tensor, uv_b: Tensor, K: Tensor) -> tuple[Tensor, Tensor, int]:
    """``R, t`` with ``x_b = R x_a + t`` (``|t| = 1``) from pixel correspondences, and the
    number of RANSAC inliers."""
    import cv2

    a = uv_a.double().numpy()
    b = uv_b.double().numpy()
    Kn = K.double().numpy()
    E, mask = cv2.findEssentialMat(a, b, Kn, method=cv2.RANSAC, prob=0.999, threshold=0.75)
    if E is None or E.shape[0] < 3:
        raise FourrealError("could not estimate the camera motion between two views")
    _, R, t, mask = cv2.recoverPose(E[:3], a, b, Kn, mask=mask)
    return torch.from_numpy(R), torch.from_numpy(t[:, 0]), int(mask.astype(bool).sum())


def incremental_poses(K: Tensor, uv: Tensor, visible: Tensor, fixed: int) -> Tensor:
    """Initial ``T_cam_world [V, 4, 4]`` with world = view ``fixed``: the essential matrix of
    ``fixed`` and its neighbour, then each next view outward registered by PnP (RANSAC) against
    the points triangulated so far, with a bundle adjustment of the registered views after each.
    ``uv [V, M, 2]`` are camera pixel positions of tracks."""
    import cv2

    V = uv.shape[0]
    T = torch.eye(4, dtype=torch.float64).repeat(V, 1, 1)
    second = fixed + 1 if fixed + 1 < V else fixed - 1
    both = visible[fixed] & visible[second]
    if both.sum() < 30:
        raise FourrealError(
            f"views {fixed} and {second} share only {int(both.sum())} tracked points; the "
            "freeze-time column needs overlapping neighbouring frames"
        )
    R, t, _ = relative_pose(uv[fixed, both], uv[second, both], K[fixed])
    T[second, :3, :3], T[second, :3, 3] = R, t
    done = [fixed, second]
    order = sorted((v for v in range(V) if v not in done), key=lambda v: abs(v - fixed))
    for v in order:
        sub = torch.tensor(sorted(done))
        points, ok = triangulate(K[sub], T[sub], uv[sub], visible[sub])
        use = ok & visible[v]
        if use.sum() < 12:
            raise FourrealError(f"view {v} shares too few tracked points with its neighbours")
        found, rvec, tvec, _ = cv2.solvePnPRansac(
            points[use].numpy(), uv[v, use].double().numpy(), K[v].double().numpy(), None,
            reprojectionError=2.0, iterationsCount=200, flags=cv2.SOLVEPNP_ITERATIVE,
        )  # fmt: skip
        if not found:
            raise FourrealError(f"could not register view {v} of the freeze-time column")
        T[v, :3, :3] = torch.from_numpy(cv2.Rodrigues(rvec)[0])
        T[v, :3, 3] = torch.from_numpy(tvec[:, 0])
        done.append(v)
        sub = torch.tensor(sorted(done))
        points, ok = triangulate(K[sub], T[sub], uv[sub], visible[sub])
        vis = visible[sub] & ok[None]
        local = int((sub == fixed).nonzero())
        points = torch.where(ok[:, None], points, torch.zeros_like(points))
        refined = bundle_adjust(K[sub], T[sub], points, uv[sub], vis, local, refine_focal=False)
        T[sub] = refined.T_cam_world
    return T


def _skew(w: Tensor) -> Tensor:
    zero = torch.zeros_like(w[..., 0])
    return torch.stack(
        [
            torch.stack([zero, -w[..., 2], w[..., 1]], -1),
            torch.stack([w[..., 2], zero, -w[..., 0]], -1),
            torch.stack([-w[..., 1], w[..., 0], zero], -1),
        ],
        -2,
    )


def bundle_adjust(
    K: Tensor,
    T_cam_world: Tensor,
    points: Tensor,
    uv: Tensor,
    visible: Tensor,
    fixed: int,
    refine_focal: bool,
    iterations: int = 30,
    huber_px: float = 1.0,
) -> PoseResult:
    """Levenberg–Marquardt over poses (all but ``fixed``), points and optionally one shared focal
    length, with analytic Jacobians, the Schur complement on the points, a Huber loss by
    iteratively reweighted least squares, and one pass that drops observations off by > 3 px.
    The free scale is fixed after every step: median depth of the points in view ``fixed`` = 1.
    """
    dtype = torch.float64
    V, M = visible.shape
    R = T_cam_world[:, :3, :3].to(dtype).clone()
    t = T_cam_world[:, :3, 3].to(dtype).clone()
    X = points.to(dtype).clone()
    Kd = K.to(dtype).clone()
    obs_v, obs_m = torch.nonzero(visible, as_tuple=True)
    target = uv[obs_v, obs_m].to(dtype)
    cams = [v for v in range(V) if v != fixed]
    slot = torch.full((V,), -1, dtype=torch.long)
    slot[cams] = torch.arange(len(cams))
    nc = 6 * len(cams) + int(refine_focal)
    keep = torch.ones(obs_v.numel(), dtype=torch.bool)

    def residual(R, t, X, Kd, ov, om, tg):
        Xc = torch.einsum("oij,oj->oi", R[ov], X[om]) + t[ov]
        z = Xc[:, 2].clamp_min(1e-9)
        u = Kd[ov, 0, 0] * Xc[:, 0] / z + Kd[ov, 0, 2]
        v = Kd[ov, 1, 1] * Xc[:, 1] / z + Kd[ov, 1, 2]
        proj = torch.stack([u, v], -1)
        return proj - tg, Xc

    def robust_cost(r: Tensor) -> Tensor:
        n = r.norm(dim=-1)
        return torch.where(n <= huber_px, 0.5 * n * n, huber_px * (n - 0.5 * huber_px)).sum()

    def normalize(R, t, X):
        d = (X @ R[fixed].T + t[fixed])[:, 2]
        seen = torch.zeros(M, dtype=torch.bool)
        seen[obs_m[keep]] = True
        front = seen & (d > 0)
        s = d[front].median() if bool(front.any()) else torch.ones((), dtype=dtype)
        return t / s, X / s

    t, X = normalize(R, t, X)
    lam = 1e-3
    for round_ in range(2):
        ov, om, tg = obs_v[keep], obs_m[keep], target[keep]
        r, Xc = residual(R, t, X, Kd, ov, om, tg)
        cost = robust_cost(r)
        for _ in range(iterations):
            n = r.norm(dim=-1)
            w = torch.where(n <= huber_px, torch.ones_like(n), huber_px / n.clamp_min(1e-12))
            x, y, z = Xc.unbind(-1)
            fx, fy = Kd[ov, 0, 0], Kd[ov, 1, 1]
            Jp = torch.zeros(ov.numel(), 2, 3, dtype=dtype)
            Jp[:, 0, 0], Jp[:, 0, 2] = fx / z, -fx * x / z**2
            Jp[:, 1, 1], Jp[:, 1, 2] = fy / z, -fy * y / z**2
            J_pt = Jp @ R[ov]  # [O, 2, 3]
            wr = w[:, None] * r
            ncam = len(cams)
            cam_obs = torch.nonzero(slot[ov] >= 0).squeeze(1)
            cs = slot[ov][cam_obs]
            # camera blocks: each observation touches one camera's 6 parameters (+ the focal)
            J6 = torch.cat([Jp @ -_skew(Xc - t[ov]), Jp], dim=-1)[cam_obs]  # [Oc, 2, 6]
            wJ6 = J6 * w[cam_obs, None, None]
            U = torch.zeros(nc, nc, dtype=dtype)
            blocks = torch.zeros(ncam, 6, 6, dtype=dtype).index_add_(
                0, cs, torch.einsum("oki,okj->oij", wJ6, J6)
            )
            for c in range(ncam):
                U[6 * c : 6 * c + 6, 6 * c : 6 * c + 6] = blocks[c]
            g_c = (
                torch.zeros(ncam, 6, dtype=dtype)
                .index_add_(0, cs, torch.einsum("oki,ok->oi", J6, wr[cam_obs]))
                .reshape(-1)
            )
            cross = torch.zeros(M * max(ncam, 1), 6, 3, dtype=dtype).index_add_(
                0, om[cam_obs] * ncam + cs, torch.einsum("oki,okj->oij", wJ6, J_pt[cam_obs])
            )
            Wb = cross.reshape(M, ncam * 6, 3)
            if refine_focal:  # log f: du/dlog f = f x / z
                Jf = torch.stack([fx * x / z, fy * y / z], -1)  # [O, 2]
                wJf = Jf * w[:, None]
                Uf = torch.zeros(ncam, 6, dtype=dtype).index_add_(
                    0, cs, torch.einsum("oki,ok->oi", wJ6, Jf[cam_obs])
                )
                U[:-1, -1] = U[-1, :-1] = Uf.reshape(-1)
                U[-1, -1] = (wJf * Jf).sum()
                g_c = torch.cat([g_c, (Jf * wr).sum().reshape(1)])
                Wf = torch.zeros(M, 1, 3, dtype=dtype).index_add_(
                    0, om, torch.einsum("ok,okj->oj", wJf, J_pt)[:, None]
                )
                Wb = torch.cat([Wb, Wf], dim=1)
            Vb = torch.zeros(M, 3, 3, dtype=dtype).index_add_(
                0, om, torch.einsum("oki,okj->oij", J_pt * w[:, None, None], J_pt)
            )
            g_p = torch.zeros(M, 3, dtype=dtype).index_add_(
                0, om, torch.einsum("oki,ok->oi", J_pt, wr)
            )
            while True:
                Ud = U + lam * torch.diag(U.diagonal() + 1e-9)
                Vd = Vb + lam * torch.diag_embed(Vb.diagonal(dim1=-2, dim2=-1) + 1e-9)
                Vinv = torch.linalg.inv(Vd + 1e-12 * torch.eye(3, dtype=dtype))
                WVi = Wb @ Vinv  # [M, nc, 3]
                S = Ud - torch.einsum("mij,mkj->ik", WVi, Wb)
                rhs = -g_c + torch.einsum("mij,mj->i", WVi, g_p)
                dc = torch.linalg.solve(S, rhs)
                dp = -(Vinv @ (g_p + torch.einsum("mji,j->mi", Wb, dc))[..., None])[..., 0]
                R_new, t_new, K_new = R.clone(), t.clone(), Kd.clone()
                if cams:
                    d6 = dc[: 6 * len(cams)].reshape(-1, 6)
                    R_new[cams] = torch.linalg.matrix_exp(_skew(d6[:, :3])) @ R[cams]
                    t_new[cams] = t[cams] + d6[:, 3:]
                if refine_focal:
                    K_new[:, 0, 0] = Kd[:, 0, 0] * torch.exp(dc[-1])
                    K_new[:, 1, 1] = Kd[:, 1, 1] * torch.exp(dc[-1])
                X_new = X + dp
                t_new, X_new = normalize(R_new, t_new, X_new)
                r_new, Xc_new = residual(R_new, t_new, X_new, K_new, ov, om, tg)
                cost_new = robust_cost(r_new)
                if cost_new < cost:
                    improvement = float((cost - cost_new) / cost)
                    R, t, X, Kd, r, Xc, cost = R_new, t_new, X_new, K_new, r_new, Xc_new, cost_new
                    lam = max(lam / 3, 1e-9)
                    break
                lam *= 5
                if lam > 1e8:
                    improvement = 0.0
                    break
            if improvement < 1e-6:
                break
        if round_ == 0:
            full, _ = residual(R, t, X, Kd, obs_v, obs_m, target)
            err = full.norm(dim=-1)
            keep = err < max(1.0, 3 * float(err.median()))
    ov, om, tg = obs_v[keep], obs_m[keep], target[keep]
    r, _ = residual(R, t, X, Kd, ov, om, tg)
    T = torch.eye(4, dtype=dtype).repeat(V, 1, 1)
    T[:, :3, :3], T[:, :3, 3] = R, t
    used = torch.zeros(M, dtype=torch.bool)
    used[om] = True
    return PoseResult(
        K=Kd,
        T_cam_world=T,
        points=X,
        points_ok=used,
        rms_px=float(r.pow(2).sum(-1).mean().sqrt()),
        inlier_fraction=float(keep.float().mean()),
    )


def estimate_poses(
    K: Tensor | None,
    uv: Tensor,
    visible: Tensor,
    width: int,
    height: int,
    fixed: int,
    fov_candidates_deg: tuple[float, ...] = (40.0, 55.0, 70.0),
) -> PoseResult:
    """Poses of every view with ``fixed`` at the identity. With ``K`` None the focal length is
    estimated too: bundle adjustment from each candidate field of view, the lowest error wins."""
    V = uv.shape[0]
    if K is not None:
        candidates = [(K.double(), False)]
    else:
        candidates = []
        for fov in fov_candidates_deg:
            f = 0.5 * width / math.tan(math.radians(fov) / 2)
            Kc = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
            Kc = Kc.to(torch.float64)
            candidates.append((Kc.expand(V, 3, 3).clone(), True))
    best = None
    for Kc, refine in candidates:
        T0 = incremental_poses(Kc, uv, visible, fixed)
        points, ok = triangulate(Kc, T0, uv, visible)
        points = torch.where(ok[:, None], points, torch.zeros_like(points))
        vis = visible & ok[None]
        result = bundle_adjust(Kc, T0, points, uv, vis, fixed, refine)
        if best is None or result.rms_px < best.rms_px:
            best = result
    assert best is not None
    return best
