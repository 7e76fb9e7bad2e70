"""fourreal: 4D video grids, dynamic Gaussian reconstruction and viewing (4Real-Video).

Conventions (design.md §3): a grid is ``frames[v, t]`` with ``V`` views and ``T`` times; row
``v = 0`` is the fixed-view video, column ``t = 0`` the freeze-time video. Cameras follow OpenCV
(x right, y down, z forward); poses are named by what they map (``T_world_cam``).
"""

from fourreal.errors import FourrealError, GridFormatError, ShapeError, VideoError
from fourreal.types import Cameras, GaussianParams, Grid

__version__ = "0.1.0"

__all__ = [
    "Cameras",
    "FourrealError",
    "GaussianParams",
    "Grid",
    "GridFormatError",
    "ShapeError",
    "VideoError",
    "__version__",
]
