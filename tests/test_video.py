"""Video and image-sequence I/O, and the grid importers (fourreal.io.video)."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from fourreal.errors import VideoError
from fourreal.io import (
    grid_from_rig,
    grid_from_videos,
    read_video,
    resize_frames,
    write_video,
)
from fourreal.io import video as video_module

H, W = 32, 48


def smooth_frames(n: int, height: int = H, width: int = W, phase: float = 0.0) -> torch.Tensor:
    """``[n, 3, height, width]`` slowly varying colors in [0.15, 0.85] (codec friendly)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    frames = [
        torch.stack(
            [
                0.5 + 0.35 * torch.sin(2 * x + 0.3 * i + phase),
                0.5 + 0.35 * torch.cos(2 * y + 0.2 * i + phase),
                0.5 + 0.3 * torch.sin(x + y + 0.1 * i + phase),
            ]
        )
        for i in range(n)
    ]
    return torch.stack(frames)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def solid(value: int, height: int = H, width: int = W) -> Image.Image:
    """A gray image whose level encodes a frame index."""
    return Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8))


def write_numbered_pngs(folder: Path, count: int) -> None:
    """``1.png`` .. ``count.png``; frame ``i`` (1-based) has gray level ``10 * i``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        solid(10 * i).save(folder / f"{i}.png")


def frame_levels(frames: torch.Tensor) -> list[int]:
    return [round(float(f.mean()) * 255) for f in frames]


def temp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------ round trips


def test_write_read_round_trip(tmp_path: Path) -> None:
    frames = smooth_frames(6)
    path = write_video(frames, tmp_path / "clip.mp4", fps=12)
    assert path == tmp_path / "clip.mp4"
    back = read_video(path)
    assert back.shape == frames.shape
    assert back.dtype == torch.float32
    assert 0 <= float(back.min()) and float(back.max()) <= 1
    assert psnr(back, frames) > 30
    assert video_module.video_fps(path) == pytest.approx(12)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert temp_leftovers(tmp_path) == []


def test_odd_size_is_padded_by_edge_replication(tmp_path: Path) -> None:
    frames = smooth_frames(3, height=31, width=47)
    frames[:, :, -1, :] = 1.0  # white last row: the padded row must repeat it
    back = read_video(write_video(frames, tmp_path / "odd.mp4"))
    assert back.shape == (3, 3, 32, 48)
    assert psnr(back[:, :, :31, :47], frames) > 30
    assert float(back[:, :, -1, :47].mean()) > 0.9  # padding copied the white edge
    assert psnr(back[:, :, :, 47], back[:, :, :, 46]) > 30  # last column repeats its neighbour


def test_write_video_other_containers_and_bad_suffix(tmp_path: Path) -> None:
    frames = smooth_frames(2)
    assert read_video(write_video(frames, tmp_path / "clip.mkv")).shape == frames.shape
    with pytest.raises(VideoError, match=r"clip\.gif"):
        write_video(frames, tmp_path / "clip.gif")
    with pytest.raises(VideoError, match=r"clip\.mp4"):
        write_video(frames, tmp_path / "clip.mp4", fps=0)


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.mp4"
    write_video(smooth_frames(3), path)
    before = path.read_bytes()
    real = video_module._rgb_frames

    def fail_midway(frames: torch.Tensor):
        for i, array in enumerate(real(frames)):
            if i == 2:
                raise RuntimeError("disk pulled out")
            yield array

    monkeypatch.setattr(video_module, "_rgb_frames", fail_midway)
    with pytest.raises(RuntimeError, match="disk pulled out"):
        write_video(smooth_frames(5, phase=1.0), path)
    assert path.read_bytes() == before
    assert temp_leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_resize_frames() -> None:
    frames = smooth_frames(2)
    small = resize_frames(frames, 16, 24)
    assert small.shape == (2, 3, 16, 24)
    # A constant image stays constant; a smooth one keeps its mean.
    assert torch.allclose(resize_frames(torch.full((1, 3, 8, 8), 0.25), 3, 5), torch.tensor(0.25))
    assert torch.allclose(small.mean(dim=(2, 3)), frames.mean(dim=(2, 3)), atol=0.01)
    assert resize_frames(frames, H, W) is frames
    # Antialiasing: a one-pixel checkerboard shrinks to flat gray, not to aliased stripes.
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float()
    shrunk = resize_frames(checker.expand(1, 3, 32, 32), 8, 8)
    assert float((shrunk - 0.5).abs().max()) < 0.05


# ---------------------------------------------------------------------------- image folders


def test_folder_natural_order_and_content(tmp_path: Path) -> None:
    write_numbered_pngs(tmp_path / "seq", 12)  # lexicographic order would be 1, 10, 11, 12, 2
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    frames = read_video(tmp_path / "seq")
    assert frames.shape == (12, 3, H, W)
    assert frame_levels(frames) == [10 * i for i in range(1, 13)]


def test_folder_gray_and_rgba_become_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((H, W), 100, dtype=np.uint8), mode="L").save(folder / "a1.png")
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 50
    Image.fromarray(rgba, mode="RGBA").save(folder / "a2.png")
    frames = read_video(folder)
    assert frames.shape == (2, 3, H, W)
    assert torch.allclose(frames[0], torch.tensor(100 / 255))
    assert torch.allclose(frames[1, 0], torch.tensor(200 / 255))
    assert float(frames[1, 1:].abs().max()) == 0


def test_max_frames_and_stride(tmp_path: Path) -> None:
    write_numbered_pngs(tmp_path / "seq", 12)
    assert frame_levels(read_video(tmp_path / "seq", max_frames=3)) == [10, 20, 30]
    assert frame_levels(read_video(tmp_path / "seq", stride=5)) == [10, 60, 110]
    assert frame_levels(read_video(tmp_path / "seq", stride=4, max_frames=2)) == [10, 50]

    frames = smooth_frames(9)
    path = write_video(frames, tmp_path / "clip.mp4")
    full = read_video(path)
    assert torch.equal(read_video(path, max_frames=4), full[:4])
    assert torch.equal(read_video(path, stride=3), full[::3])
    assert torch.equal(read_video(path, stride=2, max_frames=3), full[0:6:2])


# ------------------------------------------------------------------------------------ errors


def make_zero_frame_avi(path: Path) -> None:
    """An AVI with a video stream but no frames (mp4 would have no stream at all)."""
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()


def test_error_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"nothing_here\.mp4 does not exist"):
        read_video(tmp_path / "nothing_here.mp4")


def test_error_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match=r"broken\.mp4 is not a readable video"):
        read_video(path)


def test_error_truncated_video(tmp_path: Path) -> None:
    path = write_video(smooth_frames(4), tmp_path / "cut.mp4")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        read_video(path)


def test_error_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    make_zero_frame_avi(path)
    with pytest.raises(VideoError, match=r"empty\.avi has no video frames"):
        read_video(path)


def test_error_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        container.add_stream("aac", rate=8000)
        container.start_encoding()
    with pytest.raises(VideoError, match=r"silent\.mp4 has no video stream"):
        read_video(path)


def test_error_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "no_frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match=r"no_frames holds no images"):
        read_video(folder)


def test_error_mixed_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    write_numbered_pngs(folder, 3)
    solid(40, height=H + 2).save(folder / "4.png")
    with pytest.raises(VideoError, match=r"4\.png is 48x34 but 1\.png is 48x32"):
        read_video(folder)


def test_error_unreadable_image(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    write_numbered_pngs(folder, 2)
    (folder / "3.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match=r"3\.png is not a readable image"):
        read_video(folder)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"stride": 0}, "stride"),
        ({"stride": 1.5}, "stride"),
        ({"max_frames": 0}, "max_frames"),
        ({"max_frames": True}, "max_frames"),
    ],
)
def test_error_bad_sampling(tmp_path: Path, kwargs: dict, what: str) -> None:
    write_numbered_pngs(tmp_path / "frames_dir", 2)
    with pytest.raises(VideoError, match=rf"frames_dir: {what} must be"):
        read_video(tmp_path / "frames_dir", **kwargs)


# ------------------------------------------------------------------------------------- grids


def test_grid_from_videos(tmp_path: Path) -> None:
    fixed = smooth_frames(5)  # T = 5
    freeze = smooth_frames(4, phase=0.0)  # V = 4, same first frame
    freeze[1:] = smooth_frames(3, phase=2.0)
    write_video(fixed, tmp_path / "fixed.mp4", fps=10)
    write_video(freeze, tmp_path / "freeze.mp4", fps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shared first frame, same size: no warning
        grid = grid_from_videos(tmp_path / "fixed.mp4", tmp_path / "freeze.mp4")
    assert (grid.views, grid.times, grid.height, grid.width) == (4, 5, H, W)
    assert grid.fps == pytest.approx(10)
    expected_known = torch.zeros(4, 5, dtype=torch.bool)
    expected_known[0, :] = expected_known[:, 0] = True
    assert torch.equal(grid.known, expected_known)
    assert torch.equal(grid.frames[0], read_video(tmp_path / "fixed.mp4"))
    assert torch.equal(grid.frames[1:, 0], read_video(tmp_path / "freeze.mp4")[1:])
    assert psnr(grid.frames[1:, 0], freeze[1:]) > 30
    assert float(grid.frames[1:, 1:].abs().max()) == 0
    assert grid.source["fixed_view"].endswith("fixed.mp4")
    assert grid.source["freeze_time"].endswith("freeze.mp4")


def test_grid_from_videos_resizes_and_warns(tmp_path: Path) -> None:
    write_numbered_pngs(tmp_path / "fixed", 3)
    freeze = tmp_path / "freeze"
    freeze.mkdir()
    for i in range(4):  # twice the size, and starting from a very different image
        solid(250 - 10 * i, height=2 * H, width=2 * W).save(freeze / f"{i}.png")
    with pytest.warns(UserWarning) as record:
        grid = grid_from_videos(tmp_path / "fixed", freeze, fps=5)
    messages = [str(w.message) for w in record]
    assert any("resizing the freeze-time video" in m and "96x64" in m for m in messages)
    assert any("first frames" in m and "fixed" in m and "freeze" in m for m in messages)
    assert (grid.views, grid.times, grid.height, grid.width) == (4, 3, H, W)
    assert grid.fps == 5
    assert frame_levels(grid.frames[0]) == [10, 20, 30]  # [0, 0] from the fixed view
    assert frame_levels(grid.frames[1:, 0]) == [240, 230, 220]


def test_grid_from_videos_explicit_size_and_max_frames(tmp_path: Path) -> None:
    write_numbered_pngs(tmp_path / "fixed", 6)
    write_numbered_pngs(tmp_path / "freeze", 5)
    grid = grid_from_videos(tmp_path / "fixed", tmp_path / "freeze", height=16, max_frames=4)
    assert (grid.views, grid.times, grid.height, grid.width) == (4, 4, 16, 24)
    assert grid.fps == 8  # image folders have no frame rate
    assert frame_levels(grid.frames[1:, 0]) == [20, 30, 40]


def test_grid_from_rig(tmp_path: Path) -> None:
    rig = tmp_path / "rig"
    for view, count in ((1, 5), (2, 4), (10, 6)):  # natural order: cam1, cam2, cam10
        folder = rig / f"cam{view}"
        folder.mkdir(parents=True)
        for t in range(count):
            solid(20 * view + t).save(folder / f"{t}.png")
    with pytest.warns(UserWarning, match=r"cam2: 4.*keeping the first 4 frames"):
        grid = grid_from_rig(rig)
    assert (grid.views, grid.times) == (3, 4)
    assert bool(grid.known.all())
    assert grid.source["views"] == ["cam1", "cam2", "cam10"]
    assert [frame_levels(grid.frames[v]) for v in range(3)] == [
        [20, 21, 22, 23],
        [40, 41, 42, 43],
        [200, 201, 202, 203],
    ]


def test_grid_from_rig_videos_and_errors(tmp_path: Path) -> None:
    rig = tmp_path / "rig"
    rig.mkdir()
    write_video(smooth_frames(3), rig / "b.mp4", fps=24)
    write_video(smooth_frames(3, phase=1.0), rig / "a.mp4", fps=24)
    grid = grid_from_rig(rig, width=24)
    assert (grid.views, grid.times, grid.height, grid.width) == (2, 3, 16, 24)
    assert grid.fps == pytest.approx(24)
    assert grid.source["views"] == ["a.mp4", "b.mp4"]

    empty = tmp_path / "empty_rig"
    empty.mkdir()
    with pytest.raises(VideoError, match=r"empty_rig has no views"):
        grid_from_rig(empty)
    with pytest.raises(VideoError, match=r"not_a_rig is not a folder"):
        grid_from_rig(tmp_path / "not_a_rig")


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[:8, :8] = 255  # white top-left corner
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_rotation(90)  # players turn it 90° counter-clockwise
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    frames = read_video(path)
    assert frames.shape == (1, 3, W, H)
    # Counter-clockwise: the top-left corner ends up bottom-left.
    assert float(frames[0, :, -8:, :8].mean()) > 0.9
    assert float(frames[0, :, :8, :8].mean()) < 0.1
