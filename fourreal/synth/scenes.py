"""Named procedural dynamic scenes. A scene is fully determined by its name and a seed."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.synth.motion import Motion, Orbit, Spin, Static
from fourreal.synth.shapes import BendingCapsule, Box, Disk, Shape, Sphere
from fourreal.synth.texture import Material, noise_lattice


@dataclass
class SceneObject:
    name: str
    shape: Shape
    motion: Motion
    material: Material

    @property
    def dynamic(self) -> bool:
        return self.motion.dynamic or self.shape.dynamic

    def world_points(self, canonical: Tensor, s: float) -> Tensor:
        """World positions at time ``s`` of canonical surface points ``[n, 3]``."""
        R, c = self.motion.pose(s)
        return self.shape.deform(canonical, s) @ R.T + c


@dataclass
class Scene:
    name: str
    seed: int
    objects: list[SceneObject]
    light_dir: tuple[float, float, float] = (0.4, -0.5, 1.0)
    ambient: float = 0.35
    background: tuple[float, float, float] = (0.06, 0.07, 0.09)
    description: str = ""
    info: dict = field(default_factory=dict)


class _Palette:
    """Seeded colors, textures and jitter for one scene."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.lattice = noise_lattice(self.generator)
        self.hue = self.uniform(0, 1)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def material(self, checker: float, saturation: float = 0.7) -> Material:
        # golden-ratio steps around the color wheel keep the objects of a scene apart
        self.hue = (self.hue + 0.618034) % 1.0
        rgb = colorsys.hsv_to_rgb(self.hue, saturation, 0.95)
        return Material(color=rgb, checker=checker, lattice=self.lattice)

    def ground(self) -> SceneObject:
        gray = self.uniform(0.65, 0.8)
        material = Material(
            (gray, gray, gray * 0.92), checker=0.4, noise_scale=4.0, lattice=self.lattice
        )
        return SceneObject("ground", Disk(2.6), Static((0.0, 0.0, 0.0)), material)


def _orbit(p: _Palette) -> list[SceneObject]:
    r = p.uniform(0.24, 0.3)
    return [
        p.ground(),
        SceneObject(
            "ball",
            Sphere(r),
            Orbit(
                (0.0, 0.0),
                p.uniform(0.75, 0.9),
                r + 0.02,
                sweep=math.pi / 2,
                phase=p.uniform(-2.8, -2.2),
            ),
            p.material(0.12),
        ),
        SceneObject(
            "pillar",
            Box((0.18, 0.18, 0.45)),
            Static((p.uniform(-0.1, 0.1), 0.25, 0.45), 0.3),
            p.material(0.15),
        ),
        SceneObject("stone", Sphere(0.2), Static((0.6, 0.55, 0.2)), p.material(0.1)),
    ]


def _wave(p: _Palette) -> list[SceneObject]:
    return [
        p.ground(),
        SceneObject(
            "stalk",
            BendingCapsule(
                0.11, 0.95, amplitude=p.uniform(1.4, 1.7), cycles=0.75, phase=p.uniform(0.05, 0.15)
            ),
            Static((-0.35, 0.0, 0.0), yaw=p.uniform(-0.5, 0.5)),
            p.material(0.1),
        ),
        SceneObject(
            "reed",
            BendingCapsule(
                0.08, 0.7, amplitude=p.uniform(1.8, 2.2), cycles=1.25, phase=p.uniform(0.05, 0.15)
            ),
            Static((0.45, 0.2, 0.0), yaw=p.uniform(0.6, 0.9)),
            p.material(0.08),
        ),
        SceneObject("stone", Sphere(0.22), Static((0.1, 0.55, 0.2)), p.material(0.1)),
    ]


def _spin(p: _Palette) -> list[SceneObject]:
    return [
        p.ground(),
        SceneObject(
            "crate",
            Box((0.32, 0.24, 0.24)),
            Spin((0.0, 0.1, 0.26), sweep=p.uniform(1.2, 1.6), phase=p.uniform(0, math.pi)),
            p.material(0.12),
        ),
        SceneObject(
            "ball",
            Sphere(0.18),
            Spin((0.7, -0.3, 0.2), sweep=2.0, hop=0.35),
            p.material(0.09),
        ),
        SceneObject(
            "post", Box((0.12, 0.12, 0.4)), Static((-0.7, 0.4, 0.4), 0.5), p.material(0.12)
        ),
    ]


def _default(p: _Palette) -> list[SceneObject]:
    r = 0.22
    return [
        p.ground(),
        SceneObject(
            "ball",
            Sphere(r),
            Orbit(
                (0.0, 0.0),
                0.95,
                r + 0.02,
                sweep=math.pi / 2,
                phase=p.uniform(-2.6, -2.2),
                bounce=0.15,
            ),
            p.material(0.1),
        ),
        SceneObject(
            "crate",
            Box((0.26, 0.2, 0.2)),
            Spin((0.35, 0.35, 0.22), sweep=p.uniform(1.0, 1.4), phase=p.uniform(0, math.pi)),
            p.material(0.12),
        ),
        SceneObject(
            "stalk",
            BendingCapsule(
                0.1, 0.85, amplitude=p.uniform(1.4, 1.7), cycles=0.75, phase=p.uniform(0.05, 0.15)
            ),
            Static((-0.4, 0.2, 0.0), yaw=p.uniform(-0.4, 0.4)),
            p.material(0.1),
        ),
    ]


SCENES: dict[str, tuple[Callable[[_Palette], list[SceneObject]], str]] = {
    "default": (_default, "an orbiting, hopping ball, a turning crate and a waving stalk"),
    "orbit": (_orbit, "a ball orbiting a pillar and a stone (rigid motion)"),
    "wave": (_wave, "two bending, waving stalks beside a stone (non-rigid motion)"),
    "spin": (_spin, "a crate turning in place and a spinning, hopping ball"),
}


def build_scene(name: str, seed: int = 0) -> Scene:
    """The scene ``name`` (one of :data:`SCENES`) with its seeded colors, textures and jitter."""
    if name not in SCENES:
        raise FourrealError(f"unknown scene {name!r}; choose one of: {', '.join(SCENES)}")
    build, description = SCENES[name]
    return Scene(name=name, seed=seed, objects=build(_Palette(seed)), description=description)
