"""Previews of a grid for people: a contact sheet of all frames, and one video per row/column.

The contact sheet shows view ``v`` as row ``v`` and time ``t`` as column ``t``, labelled
``v0, v1, ...`` on the left and ``t0, t1, ...`` on top; input frames (``known``) have a colored
border, so generated and given frames are told apart at a glance.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fourreal.errors import ShapeError
from fourreal.io.atomic import atomic_dir, atomic_file
from fourreal.io.grid import to_uint8
from fourreal.io.video import resize_frames, write_video
from fourreal.types import Grid

BACKGROUND = (24, 24, 24)
KNOWN_BORDER = (255, 160, 0)  # orange: stands out against most footage
LABEL_COLOR = (230, 230, 230)
GAP = 4  # pixels between cells
BORDER = 2  # width of the known-frame outline, drawn in the gap around the thumbnail
_LABEL_PAD = 4
_MIN_MAX_WIDTH = 64
ROW_PATTERN = "v{v:03d}.mp4"
COL_PATTERN = "t{t:03d}.mp4"
_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@dataclass(frozen=True)
class SheetLayout:
    """Where things are on a contact sheet, in pixels (``y`` down, ``x`` right)."""

    views: int
    times: int
    thumb_h: int
    thumb_w: int
    left: int  # width of the row-label column
    top: int  # height of the column-label band
    label_step_v: int  # label every ``label_step_v``-th row (labels must not overlap)
    label_step_t: int

    @property
    def pitch_y(self) -> int:
        return self.thumb_h + 2 * BORDER + GAP

    @property
    def pitch_x(self) -> int:
        return self.thumb_w + 2 * BORDER + GAP

    @property
    def height(self) -> int:
        return self.top + GAP + self.views * self.pitch_y

    @property
    def width(self) -> int:
        return self.left + GAP + self.times * self.pitch_x

    def thumb_box(self, v: int, t: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of frame ``[v, t]``'s thumbnail (end-exclusive)."""
        y0 = self.top + GAP + v * self.pitch_y + BORDER
        x0 = self.left + GAP + t * self.pitch_x + BORDER
        return y0, x0, y0 + self.thumb_h, x0 + self.thumb_w

    def border_box(self, v: int, t: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of the thumbnail with its border ring (end-exclusive)."""
        y0, x0, y1, x1 = self.thumb_box(v, t)
        return y0 - BORDER, x0 - BORDER, y1 + BORDER, x1 + BORDER


def sheet_layout(grid: Grid, *, max_width: int = 2048) -> SheetLayout:
    """The layout :func:`contact_sheet` uses for ``grid``: thumbnails shrink to fit ``max_width``.

    Thumbnails are never enlarged and keep the frames' aspect ratio. A grid with so many times
    that a thumbnail would be narrower than one pixel gets one-pixel thumbnails and a sheet wider
    than ``max_width``.
    """
    if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < _MIN_MAX_WIDTH:
        raise ShapeError(f"max_width must be an integer >= {_MIN_MAX_WIDTH}, got {max_width!r}")
    font = _font()
    label_w = _text_size(font, f"v{grid.views - 1}")[0]
    label_h = _text_size(font, f"t{grid.times - 1}")[1]
    left = label_w + 2 * _LABEL_PAD
    top = label_h + 2 * _LABEL_PAD
    usable = max_width - left - GAP - grid.times * (2 * BORDER + GAP)
    thumb_w = max(1, min(grid.width, usable // grid.times))
    thumb_h = max(1, round(grid.height * thumb_w / grid.width))
    col_label_w = _text_size(font, f"t{grid.times - 1}")[0]
    return SheetLayout(
        views=grid.views,
        times=grid.times,
        thumb_h=thumb_h,
        thumb_w=thumb_w,
        left=left,
        top=top,
        label_step_v=math.ceil((label_h + 2) / (thumb_h + 2 * BORDER + GAP)),
        label_step_t=math.ceil((col_label_w + 4) / (thumb_w + 2 * BORDER + GAP)),
    )


def contact_sheet(grid: Grid, *, max_width: int = 2048) -> np.ndarray:
    """All frames of ``grid`` on one image: ``[h, w, 3]`` uint8, at most ``max_width`` wide.

    Row ``v`` holds view ``v`` over time, column ``t`` all views at time ``t``. Known (input)
    frames are outlined in :data:`KNOWN_BORDER` (all of them when ``grid.known`` is None).
    Labels that would overlap are thinned out (every k-th row or column is labelled).
    """
    layout = sheet_layout(grid, max_width=max_width)
    sheet = np.empty((layout.height, layout.width, 3), dtype=np.uint8)
    sheet[:] = BACKGROUND
    thumbs = _thumbnails(grid, layout)
    known = None if grid.known is None else grid.known.detach().cpu().numpy()
    for v in range(grid.views):
        for t in range(grid.times):
            if known is None or known[v, t]:
                y0, x0, y1, x1 = layout.border_box(v, t)
                sheet[y0:y1, x0:x1] = KNOWN_BORDER
            y0, x0, y1, x1 = layout.thumb_box(v, t)
            sheet[y0:y1, x0:x1] = thumbs[v, t]
    return _draw_labels(sheet, layout)


def _thumbnails(grid: Grid, layout: SheetLayout) -> np.ndarray:
    """``[V, T, thumb_h, thumb_w, 3]`` uint8, antialiased so thin detail stays visible."""
    flat = grid.frames.detach().cpu().float().reshape(-1, 3, grid.height, grid.width)
    small = resize_frames(flat, layout.thumb_h, layout.thumb_w)
    return to_uint8(small).reshape(grid.views, grid.times, layout.thumb_h, layout.thumb_w, 3)


def _draw_labels(sheet: np.ndarray, layout: SheetLayout) -> np.ndarray:
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    font = _font()
    for v in range(0, layout.views, layout.label_step_v):
        y0, _, y1, _ = layout.thumb_box(v, 0)
        _draw_text(draw, font, f"v{v}", right=layout.left - _LABEL_PAD, middle=(y0 + y1) / 2)
    for t in range(0, layout.times, layout.label_step_t):
        _, x0, _, x1 = layout.thumb_box(0, t)
        _draw_text(draw, font, f"t{t}", center=(x0 + x1) / 2, bottom=layout.top - _LABEL_PAD)
    return np.asarray(image).copy()


def _draw_text(
    draw: ImageDraw.ImageDraw,
    font: _Font,
    text: str,
    *,
    right: float | None = None,
    center: float | None = None,
    middle: float | None = None,
    bottom: float | None = None,
) -> None:
    """Draw ``text`` aligned by its ink box (text anchors need FreeType; this works without)."""
    left, top, right_, bottom_ = draw.textbbox((0, 0), text, font=font)
    width, height = right_ - left, bottom_ - top
    x = right - width if right is not None else (center or 0) - width / 2
    y = bottom - height if bottom is not None else (middle or 0) - height / 2
    draw.text((round(x - left), round(y - top)), text, fill=LABEL_COLOR, font=font)


def _font() -> _Font:
    return ImageFont.load_default()


def _text_size(font: _Font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return math.ceil(right - left), math.ceil(bottom - top)


def write_contact_sheet(grid: Grid, path: str | os.PathLike[str], **kw: int) -> Path:
    """Write :func:`contact_sheet` of ``grid`` as a PNG at ``path`` (atomically); returns it.

    Keyword arguments go to :func:`contact_sheet` (``max_width``).
    """
    path = Path(path)
    sheet = contact_sheet(grid, **kw)
    with atomic_file(path) as tmp:
        # The temporary name ends in ".tmp", so Pillow is told the format.
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path


def write_previews(grid: Grid, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the contact sheet and one video per row and per column of ``grid`` into ``folder``.

    * ``contact_sheet.png``: :func:`contact_sheet`;
    * ``rows/v000.mp4``, ...: view ``v`` over time (``T`` frames);
    * ``cols/t000.mp4``, ...: the freeze-time sweep over views at time ``t`` (``V`` frames).

    Videos play at ``grid.fps``; unknown frames show as they are in the grid (black for an
    imported grid). ``rows/`` and ``cols/`` are each replaced as a whole, so videos left from
    an earlier, larger grid do not linger. Returns ``{"contact_sheet.png": path,
    "rows/v000.mp4": path, ...}`` (keys are paths relative to ``folder``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"contact_sheet.png": write_contact_sheet(grid, folder / "contact_sheet.png")}
    with atomic_dir(folder / "rows", marker=ROW_PATTERN.format(v=0)) as tmp:
        for v in range(grid.views):
            name = ROW_PATTERN.format(v=v)
            write_video(grid.frames[v], tmp / name, fps=grid.fps)
            written[f"rows/{name}"] = folder / "rows" / name
    with atomic_dir(folder / "cols", marker=COL_PATTERN.format(t=0)) as tmp:
        for t in range(grid.times):
            name = COL_PATTERN.format(t=t)
            write_video(grid.frames[:, t], tmp / name, fps=grid.fps)
            written[f"cols/{name}"] = folder / "cols" / name
    return written


def mosaic_frames(grid: Grid, *, loops: int = 2) -> torch.Tensor:
    """The whole grid as one video: every view tiled side by side, time playing forward and
    back ``loops`` times (a ping-pong loop, so short grids are still watchable).

    Returns ``[N, 3, h, w]`` floats with ``N = loops · (2T - 2)`` (``T`` frames when T < 3).
    """
    V, T, _, H, W = grid.frames.shape
    cols = math.ceil(math.sqrt(V * H / W))  # close to a square mosaic
    rows = math.ceil(V / cols)
    tiles = torch.zeros(rows * cols, T, 3, H, W, dtype=grid.frames.dtype)
    tiles[:V] = grid.frames
    mosaic = tiles.reshape(rows, cols, T, 3, H, W).permute(2, 3, 0, 4, 1, 5)
    mosaic = mosaic.reshape(T, 3, rows * H, cols * W)
    if T < 3:
        return mosaic
    order = list(range(T)) + list(range(T - 2, 0, -1))
    return mosaic[order * loops]


def write_mosaic_video(grid: Grid, path: str | os.PathLike[str], *, loops: int = 2) -> Path:
    """Write :func:`mosaic_frames` as an mp4 at ``grid.fps``."""
    return write_video(mosaic_frames(grid, loops=loops), path, fps=grid.fps)
