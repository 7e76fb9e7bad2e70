"""Noise schedules and samplers of the generator."""

from fourreal.diffusion.schedulers.rectified_flow import RectifiedFlow, Solver

__all__ = ["RectifiedFlow", "Solver"]
