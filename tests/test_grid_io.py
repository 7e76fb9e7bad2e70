import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import fourreal.io.grid as grid_io
from fourreal.errors import FourrealError, GridFormatError, ShapeError
from fourreal.io import load_grid, save_grid
from fourreal.types import Cameras, Grid


@pytest.fixture
def saved(small_grid, tmp_path):
    return save_grid(small_grid, tmp_path / "grid")


def edit_json(path, **changes):
    meta = json.loads((path / "grid.json").read_text())
    meta.update(changes)
    (path / "grid.json").write_text(json.dumps(meta))


def test_round_trip_with_known_mask_and_intrinsics_only(tmp_path):
    frames = torch.rand(2, 3, 3, 8, 10)
    frames = torch.round(frames * 255) / 255
    known = torch.zeros(2, 3, dtype=torch.bool)
    known[0] = True
    known[:, 0] = True
    K = torch.tensor([[10.0, 0, 5], [0, 10.0, 4], [0, 0, 1]], dtype=torch.float64)
    grid = Grid(frames, known=known, cameras=Cameras(K.expand(2, 3, 3).clone()), fps=12.5)
    back = load_grid(save_grid(grid, tmp_path / "g"))
    assert torch.equal(back.frames, frames)
    assert torch.equal(back.known, known)
    assert back.cameras.T_world_cam is None
    assert torch.equal(back.cameras.K, grid.cameras.K)
    assert back.depth is None and back.fps == 12.5
    meta = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert meta["format"] == "fourreal-grid" and meta["version"] == 1
    assert meta["frame_pattern"] == "frames/v{v:03d}_t{t:03d}.png"
    assert (tmp_path / "g" / "frames" / "v001_t002.png").is_file()


def test_one_shared_K_is_accepted(saved):
    meta = json.loads((saved / "grid.json").read_text())
    edit_json(saved, cameras={"K": meta["cameras"]["K"][0], "T_world_cam": None})
    grid = load_grid(saved / "grid.json")
    assert grid.cameras.K.shape == (4, 3, 3) and grid.cameras.T_world_cam is None


def expect_error(path, *fragments):
    with pytest.raises(GridFormatError) as info:
        load_grid(path)
    for fragment in fragments:
        assert str(fragment) in str(info.value)
    return info.value


def test_missing_frame(saved):
    frame = saved / "frames" / "v002_t003.png"
    frame.unlink()
    expect_error(saved, frame, "missing")


def test_wrong_frame_size(saved):
    frame = saved / "frames" / "v001_t000.png"
    Image.new("RGB", (81, 48)).save(frame)
    expect_error(saved, frame, "81x48", "80x48")


def test_unreadable_png(saved):
    frame = saved / "frames" / "v000_t004.png"
    frame.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    expect_error(saved, frame, "not a readable image")


def test_truncated_png(saved):
    frame = saved / "frames" / "v003_t001.png"
    frame.write_bytes(frame.read_bytes()[:200])
    expect_error(saved, frame)


def test_bad_json(saved):
    (saved / "grid.json").write_text('{"format": "fourreal-grid", "version": 1,')
    expect_error(saved, saved / "grid.json", "not valid JSON")


def test_missing_grid_json(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "grid.json", "not a fourreal grid")


def test_unknown_version(saved):
    edit_json(saved, version=7)
    expect_error(saved, saved / "grid.json", "unknown version 7")


def test_wrong_format(saved):
    edit_json(saved, format="something-else")
    expect_error(saved, "grid.json", '"format"')


@pytest.mark.parametrize("key", ["views", "times"])
def test_zero_views_or_times(saved, key):
    edit_json(saved, **{key: 0})
    expect_error(saved, "grid.json", f'"{key}" is 0')


@pytest.mark.parametrize(
    "cameras",
    [
        {"K": [[1, 0], [0, 1]], "T_world_cam": None},
        {"K": [[[100, 0, 40], [0, 100, 24], [0, 0, 1]]] * 3, "T_world_cam": None},
        {"K": [[100, 0, 40], [0, 100, 24], [0, 0, 1]], "T_world_cam": [[[1, 0, 0, 0]] * 3] * 4},
        {"K": [[100, 0, 40], [0, 100, 24], [0, 0, 1]], "T_world_cam": [np.eye(4).tolist()] * 2},
        {"K": [[100, 0, 40], [0, "x", 24], [0, 0, 1]], "T_world_cam": None},
        {"K": [[0, 0, 40], [0, 100, 24], [0, 0, 1]], "T_world_cam": None},
        {"T_world_cam": None},
    ],
)
def test_camera_arrays_of_the_wrong_shape(saved, cameras):
    edit_json(saved, cameras=cameras)
    expect_error(saved, "grid.json", '"cameras')


def test_nan_in_depth(saved):
    path = saved / "depth" / "v001_t001.npy"
    depth = np.load(path)
    depth[3, 4] = np.nan
    np.save(path, depth)
    expect_error(saved, path, "NaN")


def test_depth_of_wrong_shape(saved):
    path = saved / "depth" / "v000_t000.npy"
    np.save(path, np.zeros((3, 3), np.float32))
    expect_error(saved, path, "shape")


def test_pickled_depth_is_refused(saved):
    path = saved / "depth" / "v000_t000.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect_error(saved, path)


def test_known_mask_of_wrong_shape(saved):
    edit_json(saved, known=[[True, False]])
    expect_error(saved, '"known"')


def test_pattern_outside_the_folder_is_refused(saved):
    edit_json(saved, frame_pattern="../../v{v}_t{t}.png")
    expect_error(saved, "outside the grid folder")


def test_failure_in_the_middle_of_save_keeps_the_old_grid(small_grid, saved, monkeypatch):
    before = sorted(p.name for p in saved.parent.iterdir())
    old_frame = (saved / "frames" / "v000_t000.png").read_bytes()
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way
        return real_save(*args, **kwargs)

    monkeypatch.setattr(grid_io.np, "save", failing_save)
    changed = small_grid.replace(frames=1 - small_grid.frames)
    with pytest.raises(KeyboardInterrupt):
        save_grid(changed, saved)
    monkeypatch.undo()
    # no temporary folder left behind, and the previous grid is complete and unchanged
    assert sorted(p.name for p in saved.parent.iterdir()) == before
    assert (saved / "frames" / "v000_t000.png").read_bytes() == old_frame
    assert torch.equal(load_grid(saved).frames, small_grid.frames)


def test_failure_during_a_first_save_leaves_no_grid(small_grid, tmp_path, monkeypatch):
    def failing_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(grid_io.json, "dumps", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        save_grid(small_grid, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_replace_a_folder_that_is_not_a_grid(small_grid, tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FourrealError, match="not empty"):
        save_grid(small_grid, target)
    assert (target / "holiday.jpg").read_bytes() == b"precious"


def test_save_replaces_an_earlier_grid(small_grid, saved):
    shutil.rmtree(saved / "depth")  # damage it; a new save must replace it whole
    save_grid(small_grid, saved)
    assert torch.equal(load_grid(saved).depth, small_grid.depth)


def test_types_check_shapes():
    with pytest.raises(ShapeError, match=r"Grid.frames must have shape \[V, T, 3, H, W\]"):
        Grid(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"Grid\.known"):
        Grid(torch.zeros(2, 3, 3, 8, 8), known=torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ShapeError, match="2 views but 3 cameras"):
        Grid(torch.zeros(2, 3, 3, 8, 8), cameras=Cameras(torch.eye(3).expand(3, 3, 3)))
    with pytest.raises(ShapeError, match="NaN"):
        Grid(torch.full((1, 1, 3, 2, 2), float("nan")))
    with pytest.raises(ShapeError, match="empty axis"):
        Grid(torch.zeros(0, 3, 3, 8, 8))
