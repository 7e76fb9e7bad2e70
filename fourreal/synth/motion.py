"""Rigid motions of scene objects over normalized time ``s`` in [0, 1] (the whole clip).

A motion gives the pose of the object's local frame in the world at time ``s``:
``x_world = R(s) @ x_local + c(s)``. Time is normalized so that a scene shows the same motion
whatever the number of time steps: more steps sample it more finely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def rot_z(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rot_x(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


class Motion:
    dynamic = True

    def pose(self, s: float) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@dataclass
class Static(Motion):
    position: tuple[float, float, float]
    yaw: float = 0.0
    dynamic = False

    def pose(self, s: float) -> tuple[Tensor, Tensor]:
        return rot_z(self.yaw), torch.tensor(self.position, dtype=torch.float64)


@dataclass
class Orbit(Motion):
    """Circles around ``center`` at ``height``, spinning about a tilted axis as it goes."""

    center: tuple[float, float]
    radius: float
    height: float
    sweep: float = math.pi / 2
    """Angle travelled over the clip, radians."""
    phase: float = 0.0
    spin: float = 2.0
    """Turns of the object about its own axis per radian of orbit."""
    bounce: float = 0.0
    """Height of a vertical hop (0: none), world units."""

    def pose(self, s: float) -> tuple[Tensor, Tensor]:
        angle = self.phase + self.sweep * s
        c = torch.tensor(
            [
                self.center[0] + self.radius * math.cos(angle),
                self.center[1] + self.radius * math.sin(angle),
                self.height + self.bounce * abs(math.sin(2 * math.pi * s)),
            ],
            dtype=torch.float64,
        )
        return rot_z(self.spin * angle) @ rot_x(0.4), c


@dataclass
class Spin(Motion):
    """Turns in place about the vertical axis; optionally hops."""

    position: tuple[float, float, float]
    sweep: float = math.pi / 2
    phase: float = 0.0
    hop: float = 0.0

    def pose(self, s: float) -> tuple[Tensor, Tensor]:
        x, y, z = self.position
        c = torch.tensor([x, y, z + self.hop * math.sin(math.pi * s)], dtype=torch.float64)
        return rot_z(self.phase + self.sweep * s), c
