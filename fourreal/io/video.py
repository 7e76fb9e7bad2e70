"""Videos and image sequences in and out, and the two ways to turn them into a grid.

Frames are ``[N, 3, H, W]`` float32 tensors in [0, 1] (RGB). Video files are decoded and
encoded with PyAV (FFmpeg); image folders are read with Pillow.

* :func:`grid_from_videos`: a fixed-view video (row ``v = 0``) and a freeze-time video (column
  ``t = 0``) become a grid whose other frames are unknown (zeros, ``known`` False).
* :func:`grid_from_rig`: a folder with one video (or image folder) per view becomes a grid whose
  frames are all known.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from fourreal.errors import ShapeError, VideoError
from fourreal.io.atomic import atomic_file
from fourreal.io.grid import to_uint8
from fourreal.types import Grid, check_shape, row_and_column

if TYPE_CHECKING:  # PyAV is imported where a video file is read or written
    import av

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".gif", ".wmv", ".flv"}
)
DEFAULT_FPS = 8.0
# Mean absolute difference (in [0, 1] units) above which the two input videos are judged not to
# share their first frame. Re-encoding moves a shared frame by ~0.01; a different shot by far more.
FIRST_FRAME_TOLERANCE = 0.1
# write_video picks the FFmpeg muxer from the suffix because atomic_file's temporary name ends
# in ".tmp", from which FFmpeg could not guess the container.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_CRF = 18  # visually lossless for previews, still small


# ----------------------------------------------------------------------------------- reading


def read_video(
    path: str | os.PathLike[str], *, max_frames: int | None = None, stride: int = 1
) -> Tensor:
    """Read a video file or a folder of images as ``[N, 3, H, W]`` float32 in [0, 1].

    ``path`` is a video file (anything FFmpeg decodes: mp4, mov, avi, mkv, webm, ...) or a folder
    of png/jpg/jpeg/bmp/webp images taken in natural order (``frame2`` before ``frame10``; hidden
    and other files are ignored). Frames ``0, stride, 2*stride, ...`` are kept, at most
    ``max_frames`` of them; decoding stops as soon as that many are read. Grayscale, palette and
    RGBA frames become RGB (alpha is dropped). Video rotation metadata (phone videos) and EXIF
    orientation (photos) are applied, so frames come out the way players show them.

    Raises :class:`VideoError` naming the file and the fix: missing path, unreadable or corrupt
    file, no frames, images of different sizes, invalid ``stride`` or ``max_frames``.
    """
    path = Path(path)
    _check_sampling(path, max_frames, stride)
    if path.is_dir():
        arrays = _read_image_folder(path, max_frames, stride)
    elif path.is_file():
        arrays = _read_video_file(path, max_frames, stride)
    else:
        raise VideoError(f"{path} does not exist; pass a video file or a folder of images")
    return _to_tensor(arrays)


def video_fps(path: str | os.PathLike[str]) -> float | None:
    """Frame rate of a video file in frames per second, or None for folders and unknown rates."""
    path = Path(path)
    if not path.is_file():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.FFmpegError, OSError, ValueError):
        return None
    if rate is None or not rate > 0:
        return None
    return float(rate)


def _check_sampling(path: Path, max_frames: int | None, stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise VideoError(f"reading {path}: stride must be an integer >= 1, got {stride!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise VideoError(
            f"reading {path}: max_frames must be None (all frames) or an integer >= 1, "
            f"got {max_frames!r}"
        )


def _read_video_file(path: Path, max_frames: int | None, stride: int) -> list[np.ndarray]:
    import av

    arrays: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(
                    f"{path} has no video stream (audio only, or an empty file); "
                    "pass a file that contains video"
                )
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame threading: several times faster on long videos
            for index, frame in enumerate(container.decode(stream)):
                if index % stride:
                    continue
                arrays.append(_frame_rgb(frame))
                if max_frames is not None and len(arrays) >= max_frames:
                    break
    except (av.FFmpegError, OSError, ValueError) as err:  # ValueError: undecodable metadata
        raise VideoError(
            f"{path} is not a readable video ({err}); check that the file is complete, or "
            "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)"
        ) from err
    if not arrays:
        raise VideoError(f"{path} has no video frames; pass a video with at least one frame")
    return arrays


def _frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """One decoded frame as ``[H, W, 3]`` uint8, rotated upright as players would show it."""
    array = frame.to_ndarray(format="rgb24")
    # rotation is the counter-clockwise angle the display matrix applies; np.rot90 turns
    # counter-clockwise for positive k. Odd angles do not occur in practice.
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    if quarter_turns:
        array = np.ascontiguousarray(np.rot90(array, k=quarter_turns))
    return array


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of ``folder`` in natural order (``2.png`` before ``10.png``)."""
    folder = Path(folder)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=natural_key)


def natural_key(path: str | os.PathLike[str]) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers: ``frame2`` < ``frame10``."""
    parts = re.split(r"(\d+)", Path(path).name)
    # (0, number) and (1, text) never compare an int with a str.
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p)


def _read_image_folder(folder: Path, max_frames: int | None, stride: int) -> list[np.ndarray]:
    files = image_files(folder)
    if not files:
        raise VideoError(
            f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "put the frames there or pass a video file"
        )
    files = files[::stride][:max_frames]
    arrays = [_read_image(files[0])]
    height, width = arrays[0].shape[:2]
    for file in files[1:]:
        array = _read_image(file)
        if array.shape[:2] != (height, width):
            raise VideoError(
                f"{file} is {array.shape[1]}x{array.shape[0]} but {files[0].name} is "
                f"{width}x{height}; all images in {folder} must have the same size"
            )
        arrays.append(array)
    return arrays


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as err:  # fmt: skip
        raise VideoError(f"{path} is not a readable image ({err}); replace or remove it") from err


def _to_tensor(arrays: list[np.ndarray]) -> Tensor:
    """``N`` arrays ``[H, W, 3]`` uint8 to ``[N, 3, H, W]`` float32 in [0, 1]."""
    frames = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return frames.to(torch.float32).div_(255).contiguous()


# ----------------------------------------------------------------------------------- writing


def write_video(frames: Tensor, path: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> Path:
    """Encode ``frames`` ``[N, 3, H, W]`` (RGB in [0, 1]) as H.264 at ``fps`` frames per second.

    The file is libx264, yuv420p, CRF 18 (visually lossless), playable everywhere. yuv420p needs
    an even width and height, so an odd size is padded by one row at the bottom and/or one column
    at the right, repeating the edge pixels: the video is then up to one pixel larger than the
    frames. The container follows the suffix (.mp4, .m4v, .mov, .mkv). The file is written to a
    temporary sibling and renamed at the end, so a failure leaves any earlier file unchanged.

    Raises :class:`ShapeError` for frames that are not ``[N, 3, H, W]``, and :class:`VideoError`
    for no frames, a bad ``fps`` or suffix, or a failed encode.
    """
    path = Path(path)
    check_shape("write_video frames", frames, "N 3 H W", {})
    if frames.shape[0] == 0:
        raise VideoError(f"cannot write {path}: no frames given")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not (0 < fps < math.inf):
        raise VideoError(f"cannot write {path}: fps must be a positive number, got {fps!r}")
    muxer = _MUXERS.get(path.suffix.lower())
    if muxer is None:
        raise VideoError(
            f"cannot write {path}: unknown video suffix {path.suffix!r}; use "
            f"{', '.join(sorted(_MUXERS))}"
        )
    height, width = frames.shape[-2:]
    even_height, even_width = height + height % 2, width + width % 2
    import av

    with atomic_file(path) as tmp:
        try:
            with av.open(str(tmp), mode="w", format=muxer) as container:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = even_width, even_height
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(_CRF), "preset": "medium"}
                for array in _rgb_frames(frames):
                    frame = av.VideoFrame.from_ndarray(_pad_even(array), format="rgb24")
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))  # flush the encoder's delayed frames
        except (av.FFmpegError, OSError) as err:
            raise VideoError(
                f"could not write {path} ({err}); check free space and rights"
            ) from err
    return path


def _rgb_frames(frames: Tensor) -> Iterator[np.ndarray]:
    """``[N, 3, H, W]`` floats to ``N`` arrays ``[H, W, 3]`` uint8, one at a time (low memory)."""
    for frame in frames:
        yield to_uint8(frame)


def _pad_even(array: np.ndarray) -> np.ndarray:
    """Pad ``[H, W, 3]`` to even H and W by repeating the last row/column (yuv420p needs it)."""
    height, width = array.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return array
    return np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


# ---------------------------------------------------------------------------------- resizing


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Resize ``[N, 3, H, W]`` frames to ``[N, 3, height, width]`` (bilinear, antialiased).

    Antialiasing averages over the whole footprint when shrinking, so fine texture does not
    alias into moiré. Frames already at the target size are returned as they are.
    """
    check_shape("resize_frames frames", frames, "N 3 H W", {})
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ShapeError(f"resize_frames {name} must be an integer >= 1, got {value!r}")
    if frames.shape[-2:] == (height, width):
        return frames
    if not frames.is_floating_point():
        frames = frames.to(torch.float32)
    resized = F.interpolate(
        frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.clamp_(0, 1)


def _target_size(
    height: int | None, width: int | None, natural: tuple[int, int]
) -> tuple[int, int]:
    """Output ``(height, width)``: the given ones; a missing one keeps the aspect ratio."""
    nat_h, nat_w = natural
    if height is None and width is None:
        return nat_h, nat_w
    if height is None:
        assert width is not None
        return max(1, round(nat_h * width / nat_w)), width
    if width is None:
        return height, max(1, round(nat_w * height / nat_h))
    return height, width


# ------------------------------------------------------------------------------------- grids


def grid_from_videos(
    fixed_view: str | os.PathLike[str],
    freeze_time: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    max_frames: int | None = None,
    fps: float | None = None,
) -> Grid:
    """A grid whose row ``v = 0`` is ``fixed_view`` and column ``t = 0`` is ``freeze_time``.

    ``fixed_view`` (one camera, time running, ``T`` frames) and ``freeze_time`` (time stopped,
    camera moving, ``V`` frames) are video files or image folders that share their first frame;
    frame ``[0, 0]`` is taken from ``fixed_view``, and a warning is given if the freeze-time
    video starts with a clearly different image. The other ``(V-1) x (T-1)`` frames are unknown:
    zeros, with ``known`` False; ``known`` is True on row 0 and column 0.

    Frames are ``height x width`` (one of them alone keeps the aspect ratio), by default the
    fixed-view size; a freeze-time video of another size is resized to it, with a warning.
    ``max_frames`` caps the frames read from each video. ``fps`` defaults to the fixed-view
    video's frame rate (8 for an image folder).
    """
    fixed = read_video(fixed_view, max_frames=max_frames)
    freeze = read_video(freeze_time, max_frames=max_frames)
    size = _target_size(height, width, tuple(fixed.shape[-2:]))
    if height is None and width is None and freeze.shape[-2:] != fixed.shape[-2:]:
        warnings.warn(
            f"{freeze_time} is {freeze.shape[-1]}x{freeze.shape[-2]} but {fixed_view} is "
            f"{fixed.shape[-1]}x{fixed.shape[-2]}; resizing the freeze-time video to match "
            "(pass height/width to choose the size)",
            stacklevel=2,
        )
    fixed = resize_frames(fixed, *size)
    freeze = resize_frames(freeze, *size)
    _warn_if_first_frames_differ(fixed[0], freeze[0], fixed_view, freeze_time)

    views, times = freeze.shape[0], fixed.shape[0]
    frames = torch.zeros(views, times, 3, *size, dtype=torch.float32)
    frames[0] = fixed
    frames[1:, 0] = freeze[1:]
    return Grid(
        frames=frames,
        known=row_and_column(views, times),
        fps=_grid_fps(fps, fixed_view),
        source={
            "kind": "videos",
            "fixed_view": str(Path(fixed_view).resolve()),
            "freeze_time": str(Path(freeze_time).resolve()),
        },
    )


def _warn_if_first_frames_differ(
    fixed_first: Tensor,
    freeze_first: Tensor,
    fixed_view: str | os.PathLike[str],
    freeze_time: str | os.PathLike[str],
) -> None:
    difference = float((fixed_first - freeze_first).abs().mean())
    if difference > FIRST_FRAME_TOLERANCE:
        warnings.warn(
            f"the first frames of {fixed_view} and {freeze_time} differ (mean absolute "
            f"difference {difference:.3f} > {FIRST_FRAME_TOLERANCE}); the two videos should "
            f"start from the same image. Using the one of {fixed_view} for frame [0, 0]",
            stacklevel=3,
        )


def _grid_fps(fps: float | None, reference: str | os.PathLike[str]) -> float:
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
            raise VideoError(f"fps must be a positive number, got {fps!r}")
        return float(fps)
    return video_fps(reference) or DEFAULT_FPS


def grid_from_rig(
    folder: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    max_frames: int | None = None,
    fps: float | None = None,
) -> Grid:
    """A grid from a multi-camera rig: one video file or image folder per view in ``folder``.

    Views are the video files and sub-folders of ``folder`` in natural order (``cam2`` before
    ``cam10``); every frame is known. Views with fewer frames truncate the others to the
    shortest, with a warning. Frames are ``height x width`` (one of them alone keeps the aspect
    ratio), by default the size of the first view; views of another size are resized to it, with
    a warning. ``fps`` defaults to the first view's frame rate (8 for an image folder).
    """
    folder = Path(folder)
    sources = _rig_views(folder)
    videos = [read_video(p, max_frames=max_frames) for p in sources]
    size = _target_size(height, width, tuple(videos[0].shape[-2:]))
    odd_sizes = [p.name for p, x in zip(sources, videos, strict=True) if x.shape[-2:] != size]
    if height is None and width is None and odd_sizes:
        warnings.warn(
            f"views {', '.join(odd_sizes)} in {folder} differ in size from {sources[0].name} "
            f"({size[1]}x{size[0]}); resizing them to it (pass height/width to choose the size)",
            stacklevel=2,
        )
    times = min(x.shape[0] for x in videos)
    if any(x.shape[0] != times for x in videos):
        counts = ", ".join(f"{p.name}: {x.shape[0]}" for p, x in zip(sources, videos, strict=True))
        warnings.warn(
            f"the views in {folder} have different frame counts ({counts}); "
            f"keeping the first {times} frames of each",
            stacklevel=2,
        )
    frames = torch.stack([resize_frames(x[:times], *size) for x in videos])
    return Grid(
        frames=frames,
        known=torch.ones(len(videos), times, dtype=torch.bool),
        fps=_grid_fps(fps, sources[0]),
        source={"kind": "rig", "folder": str(folder.resolve()), "views": [p.name for p in sources]},
    )


def _rig_views(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise VideoError(
            f"{folder} is not a folder; a rig is a folder with one video or image folder per view"
        )
    views = [
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and (p.is_dir() or (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES))
    ]
    if not views:
        hint = (
            " (it holds images: that is one video, read it with read_video)"
            if image_files(folder)
            else ""
        )
        raise VideoError(
            f"{folder} has no views{hint}; put one video file "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) or one image folder per camera in it"
        )
    return sorted(views, key=natural_key)
