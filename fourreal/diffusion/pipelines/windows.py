"""Sliding windows over grids larger than the model's window (paper §3.3, "extending to a
wider view and longer time").

Windows are ``window = (views, times)`` sub-grids. Along each axis the starts are
``0, step, 2·step, ...`` with ``step = window − overlap``, plus a last window flush with the end
of the axis. They are generated in raster order: view blocks outer, time blocks inner. The first
window holds the input row and column; every later one overlaps frames generated before (and
the known row or column where it reaches them), which it takes as conditions, so content
spreads autoregressively along ``t`` and then along ``v``.
"""

from __future__ import annotations

from fourreal.errors import FourrealError


def axis_starts(size: int, window: int, overlap: int) -> list[int]:
    """Start indices of windows of ``window`` frames covering ``size`` frames."""
    if window < 1 or not 0 <= overlap < window:
        raise FourrealError(
            f"a window of {window} frames needs an overlap in [0, {window - 1}], got {overlap}"
        )
    if size <= window:
        return [0]
    starts = list(range(0, size - window, window - overlap))
    return [*starts, size - window]


def grid_windows(
    views: int, times: int, window: tuple[int, int], overlap: tuple[int, int]
) -> list[tuple[slice, slice]]:
    """The ``(view slice, time slice)`` of every window over a ``views × times`` grid."""
    wv, wt = min(window[0], views), min(window[1], times)
    ov, ot = min(overlap[0], wv - 1), min(overlap[1], wt - 1)
    return [
        (slice(v, v + wv), slice(t, t + wt))
        for v in axis_starts(views, wv, ov)
        for t in axis_starts(times, wt, ot)
    ]
