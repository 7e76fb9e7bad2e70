"""Pipelines: models + schedulers + codecs, from inputs to filled grids."""

from fourreal.diffusion.pipelines.codec import PixelCodec
from fourreal.diffusion.pipelines.grid import GridPipeline
from fourreal.diffusion.pipelines.windows import grid_windows

__all__ = ["GridPipeline", "PixelCodec", "grid_windows"]
