"""Procedural solid textures, evaluated at canonical (object) coordinates so they move with it.

Rich texture matters: flow and tracking downstream need detail at several scales, so materials
mix a coarse 3D checker with two octaves of smooth value noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

_LATTICE = 32
# Checker cells are shifted by this fraction of a cell. Box faces lie at coordinates that are
# often whole multiples of the cell size; without a shift the face sits exactly on a checker
# edge and rounding in the hit point picks the color per pixel (speckle that differs by view).
_CHECKER_SHIFT = 0.5773


def noise_lattice(generator: torch.Generator) -> Float[Tensor, "32 32 32"]:
    return torch.rand(_LATTICE, _LATTICE, _LATTICE, generator=generator, dtype=torch.float64)


def value_noise(lattice: Float[Tensor, "L L L"], p: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
    """Smooth periodic value noise in [0, 1]: trilinear interpolation of a random lattice with a
    smoothstep fade."""
    n = lattice.shape[0]
    base = torch.floor(p)
    f = p - base
    f = f * f * (3 - 2 * f)
    i0 = base.long() % n
    i1 = (i0 + 1) % n
    out = torch.zeros(p.shape[0], dtype=p.dtype)
    for dx in (0, 1):
        ix = i1[:, 0] if dx else i0[:, 0]
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            iy = i1[:, 1] if dy else i0[:, 1]
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                iz = i1[:, 2] if dz else i0[:, 2]
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out += wx * wy * wz * lattice[ix, iy, iz]
    return out


@dataclass
class Material:
    """Lambertian albedo: base color × checker × noise, all in canonical coordinates."""

    color: tuple[float, float, float]
    checker: float = 0.2
    """Checker cell size in world units (0 disables the checker)."""
    noise_scale: float = 8.0
    """Noise frequency: lattice cells per world unit (first octave)."""
    lattice: Tensor | None = None

    def albedo(self, p: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        color = torch.tensor(self.color, dtype=p.dtype)
        shade = torch.ones(p.shape[0], dtype=p.dtype)
        if self.checker > 0:
            cells = torch.floor(p / self.checker + _CHECKER_SHIFT).long().sum(dim=1) % 2
            shade = shade * (0.6 + 0.4 * cells.to(p.dtype))
        if self.lattice is not None:
            detail = 0.65 * value_noise(self.lattice, p * self.noise_scale) + 0.35 * value_noise(
                self.lattice, p * self.noise_scale * 3.1 + 7.3
            )
            shade = shade * (0.55 + 0.7 * detail)
        return (color * shade[:, None]).clamp(0, 1)
