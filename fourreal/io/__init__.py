"""File formats: grids (format v1), videos and image sequences, previews.

I/O lives here and nowhere else; the rest of fourreal works on tensors.
"""

from fourreal.io.grid import load_grid, save_grid

__all__ = ["load_grid", "save_grid"]
