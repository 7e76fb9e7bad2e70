"""The weight-free ``warp`` method (design.md §4): depth and poses from the freeze-time column,
motion from the fixed-view row, forward warping with z-buffers, hole filling."""

from fourreal.diffusion.warp.method import WarpConfig, warp_fill

__all__ = ["WarpConfig", "warp_fill"]
