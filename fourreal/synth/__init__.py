"""Procedural dynamic scenes with exact ground truth (design.md §8).

An analytic ray caster renders textured spheres, boxes, bending capsules and a ground disk under
rigid and non-rigid motion, seen by cameras on a circular arc. World frame: z up, ground z = 0.
"""

from fourreal.synth.cameras import ArcConfig, arc_cameras
from fourreal.synth.render import synth_grid, time_values
from fourreal.synth.scenes import SCENES, build_scene

__all__ = ["SCENES", "ArcConfig", "arc_cameras", "build_scene", "synth_grid", "time_values"]
