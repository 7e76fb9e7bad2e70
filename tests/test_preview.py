"""Contact sheets and preview videos (fourreal.io.preview)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fourreal.errors import ShapeError
from fourreal.io import contact_sheet, read_video, write_contact_sheet, write_previews
from fourreal.io.preview import BACKGROUND, BORDER, KNOWN_BORDER, sheet_layout
from fourreal.types import Grid

V, T, H, W = 3, 4, 32, 48
RED = torch.tensor([1.0, 0.0, 0.0])


def imported_grid() -> Grid:
    """Gray frames, one pure red at ``[2, 3]``; known on row 0 and column 0 like an import."""
    frames = torch.full((V, T, 3, H, W), 0.5)
    frames[2, 3] = RED[:, None, None]
    known = torch.zeros(V, T, dtype=torch.bool)
    known[0, :] = known[:, 0] = True
    return Grid(frames=frames, known=known, fps=6)


def ring(sheet: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of the ``BORDER``-wide ring just inside ``box`` (y0, x0, y1, x1)."""
    y0, x0, y1, x1 = box
    mask = np.zeros(sheet.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = True
    mask[y0 + BORDER : y1 - BORDER, x0 + BORDER : x1 - BORDER] = False
    return sheet[mask]


def test_contact_sheet_layout_and_size() -> None:
    grid = imported_grid()
    sheet = contact_sheet(grid)
    layout = sheet_layout(grid)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (layout.height, layout.width, 3)
    # Small frames are not enlarged; the sheet holds V x T full-size thumbnails plus margins.
    assert (layout.thumb_h, layout.thumb_w) == (H, W)
    assert sheet.shape[1] > T * W and sheet.shape[0] > V * H
    assert sheet.shape[1] <= 2048


def test_contact_sheet_known_borders() -> None:
    grid = imported_grid()
    sheet = contact_sheet(grid)
    layout = sheet_layout(grid)
    for v in range(V):
        for t in range(T):
            pixels = ring(sheet, layout.border_box(v, t))
            expected = KNOWN_BORDER if bool(grid.known[v, t]) else BACKGROUND
            assert (pixels == expected).all(), (v, t)


def test_contact_sheet_puts_each_frame_in_its_cell() -> None:
    grid = imported_grid()
    sheet = contact_sheet(grid)
    layout = sheet_layout(grid)
    for v in range(V):
        for t in range(T):
            y0, x0, y1, x1 = layout.thumb_box(v, t)
            cell = sheet[y0:y1, x0:x1].reshape(-1, 3)
            expected = (255, 0, 0) if (v, t) == (2, 3) else (128, 128, 128)
            assert (cell == expected).all(), (v, t)
    # Red appears nowhere else.
    red = (sheet == (255, 0, 0)).all(axis=-1)
    assert int(red.sum()) == H * W


def test_contact_sheet_labels_are_drawn() -> None:
    grid = imported_grid()
    sheet = contact_sheet(grid)
    layout = sheet_layout(grid)
    label_band = sheet[: layout.top, layout.left :]
    label_column = sheet[layout.top :, : layout.left]
    for area in (label_band, label_column):
        assert (area != BACKGROUND).any(axis=-1).sum() > 20  # text ink is there
    # One label per row: ink in the label column at each row's height.
    for v in range(V):
        y0, _, y1, _ = layout.thumb_box(v, 0)
        assert (sheet[y0:y1, : layout.left] != BACKGROUND).any()


def test_contact_sheet_shrinks_to_max_width() -> None:
    grid = Grid(frames=torch.rand(2, 30, 3, 40, 60))
    sheet = contact_sheet(grid, max_width=600)
    layout = sheet_layout(grid, max_width=600)
    assert sheet.shape[1] <= 600
    assert layout.thumb_w < 60
    assert layout.thumb_h == round(40 * layout.thumb_w / 60)  # aspect ratio kept
    assert layout.label_step_t >= 1
    with pytest.raises(ShapeError, match="max_width"):
        contact_sheet(grid, max_width=10)


def test_all_frames_known_when_known_is_none() -> None:
    grid = Grid(frames=torch.zeros(2, 2, 3, 8, 8))
    sheet = contact_sheet(grid)
    layout = sheet_layout(grid)
    for v in range(2):
        for t in range(2):
            assert (ring(sheet, layout.border_box(v, t)) == KNOWN_BORDER).all()


def test_write_contact_sheet(tmp_path: Path) -> None:
    grid = imported_grid()
    path = write_contact_sheet(grid, tmp_path / "sheet.png", max_width=300)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image), contact_sheet(grid, max_width=300))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_write_previews(tmp_path: Path) -> None:
    grid = imported_grid()
    out = tmp_path / "previews"
    written = write_previews(grid, out)
    expected = (
        ["contact_sheet.png"]
        + [f"rows/v{v:03d}.mp4" for v in range(V)]
        + [f"cols/t{t:03d}.mp4" for t in range(T)]
    )
    assert sorted(written) == sorted(expected)
    for name, path in written.items():
        assert path == out / name
        assert path.is_file() and path.stat().st_size > 0
    row = read_video(written["rows/v002.mp4"])
    assert row.shape == (T, 3, H, W)
    assert float(row[3, 0].mean()) > 0.8 > float(row[2, 0].mean())  # the red frame is last
    col = read_video(written["cols/t003.mp4"])
    assert col.shape == (V, 3, H, W)
    assert float(col[2, 0].mean()) > 0.8


def test_write_previews_replaces_stale_videos(tmp_path: Path) -> None:
    out = tmp_path / "previews"
    write_previews(imported_grid(), out)
    small = Grid(frames=torch.rand(2, 2, 3, 16, 16), fps=4)
    written = write_previews(small, out)
    assert sorted(p.name for p in (out / "rows").iterdir()) == ["v000.mp4", "v001.mp4"]
    assert sorted(p.name for p in (out / "cols").iterdir()) == ["t000.mp4", "t001.mp4"]
    assert len(written) == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
