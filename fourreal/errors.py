"""One exception type per domain. Messages name the file and say what to do."""

from __future__ import annotations


class FourrealError(Exception):
    """Base class of every error fourreal raises on purpose."""


class GridFormatError(FourrealError):
    """A grid folder (grid.json, frames, depth, cameras) is missing or malformed."""


class VideoError(FourrealError):
    """A video or image sequence could not be read or written."""


class ShapeError(FourrealError, ValueError):
    """A tensor handed to fourreal has the wrong shape, dtype or values."""


class ResourceError(FourrealError, MemoryError):
    """A job would need more memory (or other resources) than the machine has; raised before
    anything large is allocated, with the option that makes the job smaller."""
