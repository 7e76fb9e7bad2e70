"""File formats: grids (format v1), videos and image sequences, previews.

I/O lives here and nowhere else; the rest of fourreal works on tensors.
"""

from fourreal.io.gaussian_ply import read_ply, write_ply
from fourreal.io.grid import load_grid, save_grid
from fourreal.io.preview import (
    contact_sheet,
    write_contact_sheet,
    write_mosaic_video,
    write_previews,
)
from fourreal.io.video import (
    grid_from_rig,
    grid_from_videos,
    read_video,
    resize_frames,
    write_video,
)

__all__ = [
    "contact_sheet",
    "grid_from_rig",
    "grid_from_videos",
    "load_grid",
    "read_ply",
    "read_video",
    "resize_frames",
    "save_grid",
    "write_contact_sheet",
    "write_mosaic_video",
    "write_ply",
    "write_previews",
    "write_video",
]
