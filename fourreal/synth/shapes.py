"""Shapes in their own local frame: exact ray intersection, surface sampling, deformation.

Every shape answers, for rays ``o + t·d`` in its local frame (``d`` need not be unit length):
the first hit ``t > near`` (``inf`` where the ray misses), the local normal and the
*canonical* coordinates of the hit (where texture lives). Rigid shapes have canonical = local;
the bending capsule maps local hits back through its exact inverse deformation, so texture and
ground-truth tracks follow the surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

INF = math.inf


@dataclass
class Hit:
    t: Float[Tensor, " R"]
    normal: Float[Tensor, "R 3"]
    canonical: Float[Tensor, "R 3"]


def _no_hit(o: Tensor) -> Hit:
    return Hit(
        torch.full(o.shape[:1], INF, dtype=o.dtype), torch.zeros_like(o), torch.zeros_like(o)
    )


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Shape:
    """Interface of a local-frame shape. Rigid shapes keep the default ``deform``."""

    dynamic = False

    def intersect(self, o: Tensor, d: Tensor, s: float, near: float) -> Hit:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Float[Tensor, "n 3"]:
        """``n`` canonical surface points, uniform over the area."""
        raise NotImplementedError

    def area(self) -> float:
        raise NotImplementedError

    def deform(self, canonical: Float[Tensor, "n 3"], s: float) -> Float[Tensor, "n 3"]:
        """Local position at normalized time ``s`` of canonical surface points."""
        return canonical


@dataclass
class Sphere(Shape):
    radius: float

    def intersect(self, o: Tensor, d: Tensor, s: float, near: float) -> Hit:
        a = (d * d).sum(-1)
        b = (o * d).sum(-1)
        c = (o * o).sum(-1) - self.radius**2
        disc = b * b - a * c
        root = torch.sqrt(disc.clamp_min(0))
        t = (-b - root) / a
        t = torch.where(t > near, t, (-b + root) / a)  # camera inside the sphere: far side
        t = torch.where((disc >= 0) & (t > near), t, INF)
        p = o + torch.nan_to_num(t, posinf=0.0)[:, None] * d
        return Hit(t, _unit(p), p)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return _unit(x) * self.radius

    def area(self) -> float:
        return 4 * math.pi * self.radius**2


@dataclass
class Box(Shape):
    half: tuple[float, float, float]

    def intersect(self, o: Tensor, d: Tensor, s: float, near: float) -> Hit:
        half = torch.tensor(self.half, dtype=o.dtype)
        safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1 = (-half - o) / safe
        t2 = (half - o) / safe
        t_lo = torch.minimum(t1, t2)
        t_hi = torch.maximum(t1, t2)
        t_enter, axis = t_lo.max(dim=-1)
        t_exit = t_hi.min(dim=-1).values
        t = torch.where((t_exit >= t_enter) & (t_enter > near), t_enter, INF)
        normal = torch.zeros_like(o)
        sign = -torch.sign(d.gather(1, axis[:, None]))
        normal.scatter_(1, axis[:, None], sign)
        p = o + torch.nan_to_num(t, posinf=0.0)[:, None] * d
        return Hit(t, normal, p)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        hx, hy, hz = self.half
        faces = torch.tensor([hy * hz, hx * hz, hx * hy], dtype=torch.float64).repeat(2)
        face = torch.multinomial(faces, n, replacement=True, generator=generator)
        u = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1
        p = u * torch.tensor(self.half, dtype=torch.float64)
        axis = face % 3
        side = torch.where(face < 3, 1.0, -1.0).to(torch.float64)
        p[torch.arange(n), axis] = side * torch.tensor(self.half, dtype=torch.float64)[axis]
        return p

    def area(self) -> float:
        hx, hy, hz = self.half
        return 8 * (hx * hy + hy * hz + hx * hz)


@dataclass
class Disk(Shape):
    """A flat disk in the local plane z = 0 (the ground), seen from above."""

    radius: float

    def intersect(self, o: Tensor, d: Tensor, s: float, near: float) -> Hit:
        safe = torch.where(d[:, 2].abs() < 1e-12, torch.full_like(d[:, 2], 1e-12), d[:, 2])
        t = -o[:, 2] / safe
        p = o + torch.nan_to_num(t, posinf=0.0, neginf=0.0)[:, None] * d
        inside = (p[:, :2] ** 2).sum(-1) <= self.radius**2
        t = torch.where((t > near) & inside, t, INF)
        normal = torch.zeros_like(o)
        normal[:, 2] = torch.where(o[:, 2] >= 0, 1.0, -1.0)
        p = p.clone()
        p[:, 2] = 0
        return Hit(t, normal, p)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        r = self.radius * torch.sqrt(torch.rand(n, generator=generator, dtype=torch.float64))
        phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.zeros_like(r)], dim=1)

    def area(self) -> float:
        return math.pi * self.radius**2


@dataclass
class BendingCapsule(Shape):
    """A capsule standing on local z = 0 that bends in the local x-z plane over time (non-rigid).

    Canonical shape: segment from ``(0, 0, 0)`` to ``(0, 0, length)`` with ``radius``. At
    normalized time ``s`` the bend has curvature ``κ(s) = amplitude · sin(2π(cycles·s + phase))``:
    the axis becomes a circular arc of that curvature and each cross-section stays orthogonal to
    it. The deformation and its inverse are exact, so ground-truth tracks are exact; rays are
    intersected by sphere tracing the deformed signed distance (to 1e-6 units).
    """

    radius: float
    length: float
    amplitude: float = 1.5
    cycles: float = 0.75
    phase: float = 0.0
    dynamic = True

    def curvature(self, s: float) -> float:
        k = self.amplitude * math.sin(2 * math.pi * (self.cycles * s + self.phase))
        # The exact formulas divide by κ; below 1e-3 the bend is under 1e-4 units anyway.
        return math.copysign(max(abs(k), 1e-3), k)

    def deform(self, canonical: Tensor, s: float) -> Tensor:
        k = self.curvature(s)
        x, y, z = canonical.unbind(-1)
        a = k * z
        return torch.stack(
            [(1 - torch.cos(a)) / k + x * torch.cos(a), y, torch.sin(a) / k - x * torch.sin(a)],
            dim=-1,
        )

    def undeform(self, local: Tensor, s: float) -> Tensor:
        k = self.curvature(s)
        r = 1 / k
        x, y, z = local.unbind(-1)
        sgn = math.copysign(1.0, r)
        rho = torch.sqrt((r - x) ** 2 + z**2)
        a = torch.atan2(sgn * z, sgn * (r - x))
        return torch.stack([r - sgn * rho, y, a / k], dim=-1)

    def _canonical_sdf(self, p: Tensor) -> Tensor:
        z = p[:, 2].clamp(0, self.length)
        axis = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], dim=-1)
        return (p - axis).norm(dim=-1) - self.radius

    def sdf(self, local: Tensor, s: float) -> Tensor:
        return self._canonical_sdf(self.undeform(local, s))

    def bounding_sphere(self) -> tuple[Tensor, float]:
        # The arc never leaves the sphere around the canonical segment's midpoint of radius
        # length/2 + radius, lengths being preserved along the axis.
        center = torch.tensor([0.0, 0.0, self.length / 2], dtype=torch.float64)
        return center, self.length / 2 + self.radius

    def intersect(self, o: Tensor, d: Tensor, s: float, near: float) -> Hit:
        hit = _no_hit(o)
        center, bound = self.bounding_sphere()
        enter = Sphere(bound).intersect(o - center, d, s, near=-INF)
        candidates = torch.nonzero(torch.isfinite(enter.t)).squeeze(1)
        if candidates.numel() == 0:
            return hit
        oc, dc = o[candidates], d[candidates]
        speed = dc.norm(dim=-1)
        t = enter.t[candidates].clamp_min(near)
        # exit of the bounding sphere, to stop marching rays that pass it
        a = (dc * dc).sum(-1)
        b = ((oc - center) * dc).sum(-1)
        c = ((oc - center) ** 2).sum(-1) - bound**2
        t_exit = (-b + torch.sqrt((b * b - a * c).clamp_min(0))) / a
        # The deformation stretches distances by at most 1/(1 - |κ| r): step by a safe fraction.
        step_scale = 0.8 * (1 - abs(self.curvature(s)) * self.radius)
        active = torch.ones_like(t, dtype=torch.bool)
        done = torch.zeros_like(active)
        for _ in range(200):
            idx = torch.nonzero(active).squeeze(1)
            if idx.numel() == 0:
                break
            dist = self.sdf(oc[idx] + t[idx, None] * dc[idx], s)
            converged = dist < 1e-7
            done[idx[converged]] = True
            t[idx] = t[idx] + torch.where(converged, 0.0, dist * step_scale / speed[idx])
            gone = t[idx] > t_exit[idx]
            active[idx[converged | gone]] = False
        t = torch.where(done & (t > near), t, INF)
        p = oc + torch.nan_to_num(t, posinf=0.0)[:, None] * dc
        hit.t[candidates] = t
        hit.normal[candidates] = self._normal(p, s)
        hit.canonical[candidates] = self.undeform(p, s)
        return hit

    def _normal(self, p: Tensor, s: float) -> Tensor:
        eps = 1e-5
        grads = []
        for axis in range(3):
            offset = torch.zeros(3, dtype=p.dtype)
            offset[axis] = eps
            grads.append(self.sdf(p + offset, s) - self.sdf(p - offset, s))
        return _unit(torch.stack(grads, dim=-1))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        side = 2 * math.pi * self.radius * self.length
        caps = 4 * math.pi * self.radius**2
        on_side = torch.rand(n, generator=generator, dtype=torch.float64) < side / (side + caps)
        phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        z = self.length * torch.rand(n, generator=generator, dtype=torch.float64)
        cyl = torch.stack([self.radius * torch.cos(phi), self.radius * torch.sin(phi), z], dim=-1)
        sph = _unit(torch.randn(n, 3, generator=generator, dtype=torch.float64)) * self.radius
        sph[:, 2] = torch.where(sph[:, 2] > 0, sph[:, 2] + self.length, sph[:, 2])
        return torch.where(on_side[:, None], cyl, sph)

    def area(self) -> float:
        return 2 * math.pi * self.radius * self.length + 4 * math.pi * self.radius**2
