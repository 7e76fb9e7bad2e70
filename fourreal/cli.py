"""The ``fourreal`` command line. Subcommands only: each one parses its options (tyro reads the
types and docstrings below) and calls into the library."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import tyro

from fourreal.errors import FourrealError

SceneName = Literal["default", "orbit", "wave", "spin"]
Output = Annotated[Path, tyro.conf.arg(aliases=("-o",))]


def synth(
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None,
    scene: SceneName = "default",
    seed: int = 0,
    views: int = 8,
    times: int = 8,
    height: int = 144,
    width: int = 256,
    arc_deg: float = 60.0,
    radius: float = 3.4,
    camera_height: float = 1.5,
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.3),
    fov_deg: float = 50.0,
    azimuth_deg: float = -90.0,
    fps: float | None = None,
    num_tracks: int = 4096,
    asset: str | None = None,
    clip: str | None = None,
    list_clips: bool = False,
    elevation_deg: float = 20.0,
    distance: float | None = None,
    frame_step: float | None = None,
    start_frame: float = 0.0,
    background: tuple[float, float, float] = (0.55, 0.62, 0.7),
    ground: bool = False,
    supersample: int = 4,
    previews: bool = False,
    quiet: bool = False,
) -> None:
    """Render a procedural dynamic scene, or an animated 3D asset, into a grid with ground truth.

    Writes grid format v1 (frames, cameras in grid.json, depth maps) and gt/ (3D tracks of surface
    points, their visibility, per-pixel object ids). The grid is fully determined by --scene,
    --seed and the sizes. Scenes: default (orbiting ball, turning crate, waving stalk), orbit
    (rigid), wave (non-rigid bending), spin (turning and hopping).

    With --asset, renders an animated asset instead (needs pip install 'fourreal[assets]'): the
    panda bundled with Panda3D (--asset panda) or a .glb/.gltf/.egg/.bam file, posed along one of
    its clips, normalized to a unit bounding sphere standing on z = 0, seen by cameras on an arc
    around it. The gt/ tracks are posed mesh vertices.

    Args:
        output: Folder to write the grid into (replaced if it is an earlier grid).
        scene: Which scene to render.
        seed: Seed of the scene's colors, textures, phases and placement.
        views: Number of views V (cameras on the arc; view 0 at one end).
        times: Number of time steps T, sampling one clip of motion.
        height: Frame height in pixels.
        width: Frame width in pixels.
        arc_deg: Angle covered by the camera arc, in degrees (--asset: 360 is a full circle).
        radius: Horizontal distance of the cameras from the look-at point (scenes).
        camera_height: Height of the cameras above the ground (scenes).
        look_at: The point all cameras look at (world, z up; scenes).
        fov_deg: Horizontal field of view, in degrees.
        azimuth_deg: Azimuth of the middle of the arc, degrees from +x (-90: facing assets).
        fps: Frame rate of the grid (default 8; --asset: steps per clip second, default: 1 pass).
        num_tracks: Number of ground-truth surface points (asset: mesh vertices) tracked over time.
        asset: Render this animated asset: 'panda', or a .glb/.gltf/.egg/.bam file.
        clip: The asset's clip to play (default: its first), or an egg/bam animation file for it.
        list_clips: Print the asset's clips (frames, frame rate) and exit.
        elevation_deg: Camera elevation above the asset's center, in degrees (--asset).
        distance: Camera distance in bounding-sphere radii (--asset; default: the sphere fits).
        frame_step: Clip frames per grid step (--asset; instead of --fps).
        start_frame: Clip frame of the first column (--asset).
        background: Background color, RGB in [0, 1] (--asset).
        ground: Put a checkered ground disk under the asset (--asset).
        supersample: Anti-aliasing: render this many times larger and average (--asset).
        previews: Also write previews (contact sheet, mp4 per row and column) into OUTPUT/previews.
        quiet: No progress bar.
    """
    from fourreal.io import save_grid, write_previews
    from fourreal.synth import ArcConfig, synth_grid

    _check_sizes(views=views, times=times, height=height, width=width)
    if list_clips:
        if asset is None:
            raise FourrealError("--list-clips lists the clips of an --asset; give one")
        from fourreal.synth.assets import describe_clips

        print(describe_clips(asset, clip))
        return
    if output is None:
        raise FourrealError("give the output folder: -o/--output")
    if asset is not None:
        from fourreal.synth.assets import AssetCameras, AssetStage, asset_grid

        cameras = AssetCameras(arc_deg, elevation_deg, distance, azimuth_deg, fov_deg)
        stage = AssetStage(background=background, ground=ground)
        grid = asset_grid(
            asset, clip, views, times, height, width, cameras, stage, fps, frame_step,
            start_frame, num_tracks, supersample, progress=not quiet,
        )  # fmt: skip
        what = f"asset '{asset}' (clip {grid.source['clip']})"
    else:
        arc = ArcConfig(arc_deg, radius, camera_height, look_at, azimuth_deg, fov_deg)
        fps = 8.0 if fps is None else fps
        grid = synth_grid(
            scene, seed, views, times, height, width, arc, fps, num_tracks, progress=not quiet
        )
        what = f"scene '{scene}' (seed {seed})"
    save_grid(grid, output)
    if previews:
        write_previews(grid, output / "previews")
    _say(quiet, f"wrote {views}x{times} grid of {what} to {output}")


def demo(
    output: Output = Path("demo_out"),
    scene: SceneName = "default",
    iterations: int | None = None,
    quiet: bool = False,
) -> None:
    """Run the whole chain on a built-in synthetic dynamic scene and write a report.

    Synthesizes an 8x8 grid at 144x256 with ground truth (OUTPUT/grid, previews in
    OUTPUT/previews, the whole grid as OUTPUT/grid.mp4), reconstructs it from its frames and
    intrinsics alone (camera poses and depth are estimated by tracking; OUTPUT/scene), exports
    per-time PLYs (OUTPUT/scene/export) and writes OUTPUT/report.html: held-out comparisons,
    loss curve and metrics.

    Args:
        output: Folder for the demo's results.
        scene: Which synthetic scene to use.
        iterations: Reconstruction steps (default: the fast preset's 1200).
        quiet: No progress bars.
    """
    from fourreal.io import save_grid, write_mosaic_video, write_previews
    from fourreal.recon.config import PRESETS
    from fourreal.recon.export import export_ply_sequence
    from fourreal.recon.report import write_report
    from fourreal.recon.run import run_reconstruction
    from fourreal.synth import synth_grid
    from fourreal.types import Cameras

    grid = synth_grid(scene, seed=0, views=8, times=8, height=144, width=256, progress=not quiet)
    save_grid(grid, output / "grid")
    written = write_previews(grid, output / "previews")
    write_mosaic_video(grid, output / "grid.mp4")
    # the reconstruction sees what a user would have: frames and the lens, no poses, no depth
    blind = grid.replace(cameras=Cameras(grid.cameras.K), depth=None, gt={})
    save_grid(blind, output / "input_grid")
    config = PRESETS["fast"]
    if iterations is not None:
        config = config.replace(iterations=iterations)
    metrics = run_reconstruction(
        output / "input_grid", output / "scene", config, progress=not quiet
    )
    export_ply_sequence(output / "scene", output / "scene" / "export")
    report = write_report(
        output / "report.html", output / "scene", written["contact_sheet.png"],
        title=f"fourreal demo: scene '{scene}'",
    )  # fmt: skip
    _say(
        quiet,
        f"grid:          {output / 'grid'} (8 views x 8 times, 144x256, with ground truth)\n"
        f"contact sheet: {written['contact_sheet.png']}\n"
        f"scene:         {output / 'scene'} (held-out PSNR {metrics['psnr']:.2f} dB, "
        f"SSIM {metrics['ssim']:.3f}, {metrics['seconds']:.0f} s)\n"
        f"per-time PLYs: {output / 'scene' / 'export'}\n"
        f"report:        {report}",
    )


def import_(
    output: Output,
    fixed_view: Path | None = None,
    freeze_time: Path | None = None,
    rig: Path | None = None,
    height: int | None = None,
    width: int | None = None,
    max_frames: int | None = None,
    fps: float | None = None,
    previews: bool = False,
    quiet: bool = False,
) -> None:
    """Make a grid from videos: a fixed-view and a freeze-time video, or a camera rig.

    With --fixed-view and --freeze-time, the fixed-view video becomes row v=0 and the freeze-time
    video column t=0 (they share their first frame); the other frames are unknown, to be filled by
    `fourreal generate`. With --rig, each video (or image folder) in the folder is one view, in
    natural name order, and every frame is known. Videos are mp4/mov/avi/mkv/webm or folders of
    images.

    Args:
        output: Folder to write the grid into.
        fixed_view: Video of one view over time (row v=0).
        freeze_time: Video sweeping the views at time 0 (column t=0).
        rig: Folder with one video or image folder per view.
        height: Resize frames to this height (default: keep; with only one of height/width the
            aspect ratio is kept).
        width: Resize frames to this width.
        max_frames: Read at most this many frames of each video.
        fps: Frame rate of the grid (default: that of the videos, else 8).
        previews: Also write previews into OUTPUT/previews.
        quiet: Print nothing.
    """
    from fourreal.io import grid_from_rig, grid_from_videos, save_grid, write_previews

    sizes = {"height": height, "width": width, "max_frames": max_frames, "fps": fps}
    if rig is not None and fixed_view is None and freeze_time is None:
        grid = grid_from_rig(rig, **sizes)
    elif rig is None and fixed_view is not None and freeze_time is not None:
        grid = grid_from_videos(fixed_view, freeze_time, **sizes)
    else:
        raise FourrealError("give either --fixed-view and --freeze-time, or --rig (not both)")
    save_grid(grid, output)
    if previews:
        write_previews(grid, output / "previews")
    _say(quiet, f"wrote {grid.views}x{grid.times} grid ({grid.height}x{grid.width}) to {output}")


def preview(
    grid: tyro.conf.Positional[Path],
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None,
) -> None:
    """Write previews of a grid: contact sheet, the whole grid as one mp4, one mp4 per row and
    per column.

    Args:
        grid: The grid folder.
        output: Where to write the previews (default: GRID/previews).
    """
    from fourreal.io import load_grid, write_mosaic_video, write_previews

    loaded = load_grid(grid)
    folder = output or grid / "previews"
    write_previews(loaded, folder)
    write_mosaic_video(loaded, folder / "grid.mp4")
    print(f"wrote previews of {grid} to {folder}")


def reconstruct(
    grid: tyro.conf.Positional[Path],
    output: Output,
    preset: Literal["fast", "quality"] = "fast",
    iterations: int | None = None,
    holdout: float = 0.1,
    resume: bool = False,
    use_grid_cameras: bool = False,
    estimate_intrinsics: bool = False,
    no_prune: bool = False,
    no_view_offsets: bool = False,
    no_tracking_init: bool = False,
    no_time_seeds: bool = False,
    keep_view_offsets: bool = False,
    backend: Literal["auto", "torch", "cpu", "gsplat"] = "auto",
    seed: int = 0,
    quiet: bool = False,
) -> None:
    """Reconstruct a grid as dynamic 3D Gaussians (4D reconstruction, paper supplement 6).

    Tracks the freeze-time column (cameras, depth, canonical points), makes one isotropic
    Gaussian per point, prunes floaters by optimizing opacities against the column, then fits a
    temporal deformation MLP (plus the per-view offsets from tracking) to all grid frames. About
    10% of the frames outside row 0 and column 0 are held out and scored. Writes OUTPUT/scene.ply
    (standard 3DGS PLY), scene.json, deform.safetensors, metrics.json, config.yaml, log.txt,
    renders/ and checkpoint.safetensors (for --resume after an interruption).

    Args:
        grid: The grid folder.
        output: The scene folder to write.
        preset: fast (minutes on a laptop CPU) or quality (longer).
        iterations: Override the preset's number of optimization steps.
        holdout: Fraction of the frames outside row 0 and column 0 held out for evaluation.
        resume: Continue from OUTPUT/checkpoint.safetensors (with the saved settings, unless
            --iterations asks for more steps).
        use_grid_cameras: Use the camera poses in grid.json instead of the tracked ones.
        estimate_intrinsics: Ignore the intrinsics in grid.json and estimate the focal length.
        no_prune: Ablation: skip floater pruning.
        no_view_offsets: Ablation: drop the view-dependent offsets from tracking.
        no_tracking_init: Ablation: start from random Gaussians instead of tracked points.
        no_time_seeds: Ablation: no Gaussians seeded from later columns; all motion is left to
            the deformation field.
        keep_view_offsets: Keep the view offsets to the end of training, as in the paper
            (default: they fade out by 60% of the steps, so the final model needs none and
            exports, which drop them, match the scores).
        backend: Rasterizer backend.
        seed: Seed of the held-out choice and the optimization.
        quiet: No progress bars.
    """
    from fourreal.recon.config import PRESETS
    from fourreal.recon.run import run_reconstruction

    config = None
    if not resume:
        config = PRESETS[preset].replace(
            holdout_fraction=holdout,
            use_grid_cameras=use_grid_cameras,
            estimate_intrinsics=estimate_intrinsics,
            prune=not no_prune,
            view_offsets=not no_view_offsets,
            tracking_init=not no_tracking_init,
            time_seeds=not no_time_seeds,
            view_offset_fade=0.0 if keep_view_offsets else PRESETS[preset].view_offset_fade,
            backend=backend,
            seed=seed,
        )
        if iterations is not None:
            config = config.replace(iterations=iterations)
    elif iterations is not None:
        from fourreal.recon.run import _config_from_dict
        from fourreal.recon.scene import load_checkpoint

        config = _config_from_dict(load_checkpoint(output)[2]).replace(iterations=iterations)
    metrics = run_reconstruction(grid, output, config, resume=resume, progress=not quiet)
    _say(
        quiet,
        f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, "
        f"{metrics['num_gaussians']} Gaussians ({metrics['num_pruned']} pruned), "
        f"{metrics['seconds']:.0f} s -> {output}",
    )


def export(
    scene: tyro.conf.Positional[Path],
    format: Literal["ply-sequence", "zip", "splatv"] = "ply-sequence",
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None,
) -> None:
    """Export a reconstructed scene: per-time 3DGS PLYs, their zip, or .splatv.

    Gaussians are placed at their deformed positions at each grid time (view offsets, which only
    compensate inconsistencies between generated frames, are left out).

    Args:
        scene: The scene folder (or its scene.ply).
        format: ply-sequence (t000.ply, ...), zip (of those), or splatv (cubic trajectories).
        output: Where to write (default: SCENE/export/, SCENE/export.zip, SCENE/scene.splatv).
    """
    from fourreal.recon import export as exporters

    folder = scene.parent if scene.name == "scene.ply" else scene
    if format == "ply-sequence":
        path = exporters.export_ply_sequence(folder, output or folder / "export")
        print(f"wrote per-time PLYs to {path}")
    elif format == "zip":
        path = exporters.export_zip(folder, output or folder / "export.zip")
        print(f"wrote {path}")
    else:
        path, rms = exporters.export_splatv(folder, output or folder / "scene.splatv")
        print(f"wrote {path} (cubic trajectory fit RMS {rms:.2e} world units)")


def eval_(
    scene: tyro.conf.Positional[Path],
    grid: Path,
    align_to: Path | None = None,
    holdout_only: bool = False,
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None,
    backend: Literal["auto", "torch", "cpu", "gsplat"] = "auto",
    quiet: bool = False,
) -> None:
    """Render a scene at another grid's cameras and times and compare (PSNR, SSIM).

    Use it to score a reconstruction against ground truth, e.g. the full grid the scene's input
    was made from, or a grid of other views of the same scene. Times are matched by position
    (the first and last time of each span the same interval). The grid's cameras are brought
    into the scene's frame by a similarity fitted between the camera centers of a reference grid
    and the scene's cameras, view by view: --align-to, or the grid itself when it has as many
    views as the scene. A grid without poses is taken to be seen by the scene's cameras.

    To score grid generators on held-out grids instead: fourreal eval generate --help.

    Args:
        scene: The scene folder (or its scene.ply).
        grid: The grid folder to render and compare against.
        align_to: Grid with camera poses for the scene's own views (e.g. the one it was made
            from), used to align the cameras when GRID has other views.
        holdout_only: Score only the scene's held-out frames (grid with the same views and times).
        output: JSON file for the per-frame results (default: SCENE/eval.json).
        backend: Rasterizer backend.
        quiet: No progress bar.
    """
    from fourreal.io.atomic import write_json
    from fourreal.recon.evaluate import evaluate_scene
    from fourreal.recon.scene import load_scene

    folder = scene.parent if scene.name == "scene.ply" else scene
    frames = None
    if holdout_only:
        frames = [(int(v), int(t)) for v, t in load_scene(folder)[0].get("holdout", [])]
        if not frames:
            raise FourrealError(f"{folder / 'scene.json'} lists no held-out frames")
    result = evaluate_scene(folder, grid, align_to, frames, backend, progress=not quiet)
    path = output or folder / "eval.json"
    write_json(path, result)
    print(f"PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f} over "
          f"{len(result['frames'])} frames -> {path}")  # fmt: skip


def eval_generate(
    models: list[str] | None = None,
    baselines: bool = True,
    grids: int = 6,
    first: int = 0,
    steps: int | None = None,
    samples: int | None = None,
    seed: int = 0,
    window: tuple[int, int] | None = None,
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path(
        "bench/results/generator_ablation.json"
    ),
    quiet: bool = False,
) -> None:
    """Score grid generators on held-out synthetic 8x8 grids at 64x64 (fourreal eval generate).

    Each method fills the grids from their row 0 and column 0. Printed and written per method:
    PSNR and SSIM of the generated frames against the ground truth, and a multi-view
    consistency score: the reprojection error (8-bit levels) between neighbouring views using
    the ground-truth depth and cameras (the ground truth's own value is the floor). The
    held-out grids are random scenes on random arcs from a data seed no training run uses.
    Models sample with Euler in fp32, so a checkpoint gives the same figures on every run.

    Args:
        models: Checkpoints to score, as LABEL=PATH.safetensors[@SYNC][,steps=N][,samples=K]
            (SYNC overrides the checkpoint's sync: average and weighted are the training-free
            Eq. 12/13 and run any checkpoint's blocks; steps and samples override --steps and
            --samples for that model). Default: the bundled tiny checkpoint.
        baselines: Also score copy-row, copy-column, the warp method and the untrained model
            (the first checkpoint's architecture with random weights).
        grids: Number of held-out grids.
        first: Index of the first held-out grid (grid i is the same whatever --grids is).
        steps: Sampling steps of the models (default: what each checkpoint records, else 20).
        samples: Samples averaged per grid, the posterior-mean estimate (default: what each
            checkpoint records, else 1: one sample).
        seed: Seed of the sampling noise.
        window: Sliding window (views, times) for every model (default: each checkpoint's
            training grid size).
        output: JSON file for the table and the per-grid values.
        quiet: No progress bar.
    """
    from fourreal.diffusion import evaluate as ev
    from fourreal.diffusion.models.checkpoint import bundled_checkpoint
    from fourreal.io.atomic import write_json
    from fourreal.recon.render.benchmark import machine

    _check_sizes(grids=grids, steps=steps, samples=samples)
    specs = (
        [ev.parse_model(m) for m in models]
        if models
        else [ev.ModelSpec("tiny (bundled)", bundled_checkpoint())]
    )
    methods = ev.build_methods(specs, steps, seed, window, baselines, samples)
    spec = ev.HeldOut(count=grids, first=first)
    held_out = ev.held_out_grids(spec)
    start = time.perf_counter()
    rows = ev.evaluate(methods, held_out, progress=not quiet)
    result = {
        "what": "grid generators on held-out synthetic grids, filled from row 0 and column 0: "
        "PSNR/SSIM of the generated frames vs ground truth, reprojection error (8-bit levels) "
        "between neighbouring views with ground-truth depth and cameras",
        "held_out": dataclasses.asdict(spec) | {"data_seed": ev.HELD_OUT_SEED},
        "sampling": {
            "solver": "euler",
            "steps": steps,
            "samples": samples,
            "seed": seed,
            "precision": "fp32",
            "note": "per model in rows[].info; null steps or "
            "samples: each checkpoint's recorded sampling",
        },
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }
    write_json(output, result)
    print(ev.format_table(rows))
    print(f"-> {output}")


def track(
    grid: tyro.conf.Positional[Path],
    output: Output,
    depth: Literal["triangulate", "gt", "mono"] = "triangulate",
    mono_model: Path | None = None,
    estimate_intrinsics: bool = False,
    keyframe_stride: int = 2,
    point_stride: int = 2,
    quiet: bool = False,
) -> None:
    """Dense 3D tracking of a grid's freeze-time column (t = 0): cameras, depth, canonical points.

    Estimates the column's cameras from optical flow (OpenCV DIS) by bundle adjustment,
    triangulates dense depth for every view, and lifts points from keyframes into the central
    view's camera frame (the canonical frame), with each point's position in every view and the
    views' residual offsets. Intrinsics come from grid.json when it has them, else one focal
    length is estimated (principal point at the image center). Writes OUTPUT/tracks.safetensors,
    canonical.ply (colored points), cameras.json (T_world_cam per view, identity at the central
    view) and tracks.png.

    Args:
        grid: The grid folder.
        output: Folder to write the tracks into.
        depth: triangulate (from the frames), gt (the grid's depth maps; fixes the scale too), or
            mono (triangulation, with the gaps filled by a monocular depth model aligned to it).
        mono_model: Local folder of a transformers depth model (e.g. Depth Anything) for
            --depth mono; loaded from disk only, safetensors weights only.
        estimate_intrinsics: Ignore the intrinsics in grid.json and estimate the focal length.
        keyframe_stride: Every this many views is a keyframe contributing points.
        point_stride: Spacing in pixels of the points taken from each keyframe.
        quiet: Print nothing.
    """
    from fourreal.io import load_grid
    from fourreal.tracking.io import save_tracks
    from fourreal.tracking.pipeline import TrackConfig, track_column

    loaded = load_grid(grid)
    K = None
    if loaded.cameras is not None and not estimate_intrinsics:
        K = loaded.cameras.K
    gt_depth = None if loaded.depth is None else loaded.depth[:, 0]
    config = TrackConfig(
        depth=depth,
        mono_model=None if mono_model is None else str(mono_model),
        keyframe_stride=keyframe_stride,
        point_stride=point_stride,
    )
    column = loaded.frames[:, 0]
    result = track_column(column, K, gt_depth, config)
    save_tracks(result, column, output)
    stats = result.stats
    _say(
        quiet,
        f"tracked {loaded.views} views: {int(stats['num_points'])} canonical points, "
        f"focal {stats['focal_px']:.1f} px, reprojection RMS {stats['ba_rms_px']:.2f} px, "
        f"{stats['seconds']:.1f} s -> {output}",
    )


def generate(
    output: Output,
    fixed_view: Path | None = None,
    freeze_time: Path | None = None,
    grid: Path | None = None,
    method: Literal["warp", "model"] = "warp",
    checkpoint: Path | None = None,
    sync: Literal["soft", "hard", "average", "weighted", "sequential"] | None = None,
    steps: int | None = None,
    samples: int | None = None,
    solver: Literal["euler", "heun"] = "euler",
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    max_frames: int | None = None,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    device: str = "auto",
    previews: bool = True,
    quiet: bool = False,
) -> None:
    """Generate a 4D grid from a fixed-view and a freeze-time video (or fill a partial grid).

    The grid is len(freeze-time) views x len(fixed-view) times: row v=0 is the fixed-view video,
    column t=0 the freeze-time video, and both must start from the same frame. The other frames
    are generated. Writes grid format v1 with `known` set, and previews in OUTPUT/previews.

    Methods: warp (default, weight-free) fills the grid geometrically: cameras and depth from the
    freeze-time video, object motion from the fixed-view video, forward warping and hole
    filling. model runs a two-stream diffusion model: the bundled tiny checkpoint (8x8 grids at
    64x64; inputs are resized to it) or your own --checkpoint (.safetensors, its config in the
    metadata).

    Args:
        output: Folder to write the grid into.
        fixed_view: Video (mp4, ...) or image folder of one view over time: row v=0.
        freeze_time: Video or image folder sweeping the views at time 0: column t=0.
        grid: Instead of the videos: a grid folder whose known frames are the conditions.
        method: warp (weight-free) or model (a diffusion checkpoint).
        checkpoint: Generator checkpoint (.safetensors) for --method model (default: the
            bundled tiny one; frames are resized to the resolution a checkpoint records).
        sync: Override the checkpoint's sync layer (model): soft/hard need trained weights;
            average, weighted and sequential are training-free.
        steps: Sampling steps (model; default: what the checkpoint records, for the bundled
            one 2, else 20).
        samples: Draw this many samples and write their mean (model): closer to the truth
            on average and more consistent across views, smoother than one sample; costs
            samples x steps model calls (default: what the checkpoint records, for the bundled
            one 8, else 1).
        solver: euler (one model call per step) or heun (two).
        seed: Seed of the sampling noise (model).
        height: Resize the videos to this height (one of height/width keeps the aspect ratio).
        width: Resize the videos to this width.
        max_frames: Read at most this many frames of each video.
        precision: Model arithmetic: auto (bf16 autocast on CUDA and on CPUs with native bf16,
            about 2x faster there; fp32 elsewhere, where emulated bf16 is about 8x slower).
        device: Device of the model (auto: cuda when available, else cpu).
        previews: Write previews (contact sheet, mp4 per row and column) into OUTPUT/previews.
        quiet: No progress bars or messages.
    """
    from fourreal.diffusion.generate import (
        GenerateOptions,
        check_output,
        fill_grid,
        grid_from_inputs,
    )
    from fourreal.io import save_grid, write_previews

    _check_sizes(steps=steps, samples=samples)
    check_output(output, fixed_view, freeze_time, grid)
    if method == "model" and checkpoint is None:
        from fourreal.diffusion.models.checkpoint import bundled_note

        note = bundled_note()
        if note and not quiet:
            print(f"fourreal: note: {note}", file=sys.stderr)
    loaded = grid_from_inputs(fixed_view, freeze_time, grid, height, width, max_frames)
    options = GenerateOptions(
        method=method, checkpoint=checkpoint, sync=sync, steps=steps, solver=solver, seed=seed,
        samples=samples, precision=precision, device=device, progress=not quiet,
    )  # fmt: skip
    filled = fill_grid(loaded, options)
    save_grid(filled, output)
    if previews:
        write_previews(filled, output / "previews")
    seconds = filled.source["generate"]["seconds"]
    _say(
        quiet,
        f"generated {int((~filled.known).sum())} frames of a {filled.views}x{filled.times} grid "
        f"({filled.height}x{filled.width}) with {method} in {seconds:.1f} s -> {output}",
    )


def train(
    output: Output,
    stage: Literal[0, 1, 2] = 0,
    model: Literal["tiny", "small", "base"] = "tiny",
    dit_width: int | None = None,
    dit_depth: int | None = None,
    dit_heads: int | None = None,
    dit_patch: int | None = None,
    sync: Literal["soft", "hard", "average", "weighted", "sequential"] = "soft",
    init: Path | None = None,
    views: int = 4,
    times: int = 4,
    height: int = 32,
    width: int = 32,
    videos: Path | None = None,
    assets: tuple[str, ...] = (),
    asset_share: float = 0.5,
    data_seed: int = 0,
    batch_size: int = 2,
    steps: int = 1000,
    max_minutes: float | None = None,
    train_all: bool = False,
    workers: int = 0,
    reuse: int = 1,
    lr: float = 2e-4,
    weight_decay: float = 0.01,
    warmup: int = 50,
    ema_decay: float = 0.999,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    grad_checkpoint: bool = False,
    device: str = "auto",
    save_every: int = 200,
    resume: bool = False,
    quiet: bool = False,
) -> None:
    """Train the grid generator: stage 0 (base model on single videos), 1 (two-stream model on
    pseudo-4D grids) or 2 (only the sync layers on multi-view synthetic grids).

    Data are made on the fly and fixed by --data-seed. Writes OUTPUT/state.safetensors (resume
    with --resume), OUTPUT/model.safetensors (EMA weights, for fourreal generate --checkpoint),
    train.log, config.yaml, loss.png and, when done, train.json. Runs under
    torchrun --nproc-per-node N as N DDP processes (gloo on CPU, nccl on CUDA). See docs/train.md.

    Args:
        output: Run folder.
        stage: 0, 1 or 2 (see above).
        model: Model size preset; --dit-width/--dit-depth/--dit-heads/--dit-patch override
            its fields.
        dit_width: Transformer width (channels).
        dit_depth: Number of blocks.
        dit_heads: Attention heads.
        dit_patch: Patch size in pixels.
        sync: Sync layer of the two-stream model (stage 2 needs soft or hard).
        init: Generator checkpoint of the previous stage (its model.safetensors): stages 0-1 take
            its block stack, stage 2 everything.
        views: Views of a training grid (V).
        times: Times of a training grid (T).
        height: Frame height in pixels (a multiple of the patch size).
        width: Frame width in pixels (a multiple of the patch size).
        videos: Folder of your own videos to use as dynamic videos (stages 0-1) instead of
            synthetic fixed-view renders.
        assets: Animated 3D assets for the multi-view grids of stage 2: panda (bundled with
            panda3d) or .glb/.gltf/.egg/.bam files; needs pip install 'fourreal[assets]'.
        asset_share: Fraction of the stage-2 grids rendered from --assets.
        data_seed: Seed of the data stream, masks and noise.
        batch_size: Grids per step and process.
        steps: Total optimizer steps of this stage (a resumed run continues to it).
        max_minutes: Stop after this many minutes of training, saving as at the end (resume
            with --resume to go on to --steps).
        train_all: Train every weight whatever the stage (e.g. stage 2 fine-tunes the whole
            model on multi-view grids instead of only the sync layers; at small scale this
            helps most).
        workers: Processes that render training samples ahead of the loop (0: render in the
            loop). Batches are the same for any number of workers.
        reuse: Each sample serves about this many steps (with new masks and noise each
            time): only batch-size/reuse fresh samples per step, the rest drawn from the
            last 4*reuse batches. Use it when the accelerator is faster than the renderer.
        lr: AdamW learning rate (after a linear warm-up).
        weight_decay: AdamW weight decay.
        warmup: Warm-up steps.
        ema_decay: Decay of the EMA weights saved in model.safetensors.
        precision: auto (bf16 autocast on CUDA and CPUs with native bf16, else fp32), fp32, bf16.
        grad_checkpoint: Recompute block activations in the backward pass (less memory).
        device: auto (cuda when available), cpu or cuda.
        save_every: Steps between checkpoints.
        resume: Continue the run in OUTPUT from its state.safetensors.
        quiet: No progress bar or messages.
    """
    from fourreal.diffusion.data import DataConfig
    from fourreal.diffusion.train import TrainConfig
    from fourreal.diffusion.train import train as run_training

    _check_sizes(steps=steps, batch_size=batch_size, save_every=save_every, reuse=reuse)
    if workers < 0:
        raise FourrealError(f"--workers must be >= 0, got {workers}")
    if max_minutes is not None and not max_minutes > 0:
        raise FourrealError(f"--max-minutes must be > 0, got {max_minutes}")
    if not 0 <= asset_share <= 1:
        raise FourrealError(f"--asset-share must be in [0, 1], got {asset_share}")
    if assets and stage != 2:
        raise FourrealError("--assets feeds the multi-view grids of stage 2; use it with --stage 2")
    if assets:  # fail before training starts if an asset cannot be loaded
        from fourreal.diffusion.data import asset_clips

        for asset in assets:
            asset_clips(asset)
    data = DataConfig(views=views, times=times, height=height, width=width, seed=data_seed,
                      videos=videos, assets=tuple(assets), asset_share=asset_share)  # fmt: skip
    config = TrainConfig(
        output=output, stage=stage, model=model, width=dit_width, depth=dit_depth,
        heads=dit_heads, patch=dit_patch, sync=sync, init=init, data=data,
        batch_size=batch_size, steps=steps, train_all=train_all, reuse=reuse, workers=workers,
        max_minutes=max_minutes, lr=lr, weight_decay=weight_decay, warmup=warmup,
        ema_decay=ema_decay, precision=precision, grad_checkpoint=grad_checkpoint,
        device=device, save_every=save_every, resume=resume, progress=not quiet,
    )  # fmt: skip
    summary = run_training(config)
    _say(
        quiet,
        f"stage {stage}: {summary['steps']} steps, held-out loss "
        f"{summary['held_out_loss_start']:.4f} -> {summary['held_out_loss_end']:.4f} -> {output}",
    )


def view(
    path: tyro.conf.Positional[Path],
    host: str = "127.0.0.1",
    port: int = 8080,
    time: int = 0,
    max_gaussians: int = 500_000,
    opacity_threshold: float = 0.0,
    fps: float | None = None,
    up: Literal["+x", "-x", "+y", "-y", "+z", "-z"] | None = None,
    screenshots: Path = Path("screenshots"),
    quiet: bool = False,
) -> None:
    """Look at a scene in the browser: orbit it, scrub time, play it (viser).

    PATH is a scene folder or its scene.ply (dynamic: the deformation is evaluated once for
    every time), any standard 3DGS .ply (static), a folder or .zip of per-time PLYs (t000.ply,
    t001.ply, ...), or a grid folder (its frames on camera frustums). Everything is loaded and
    checked before the server starts; then the URL is printed. Ctrl-C stops it.

    Args:
        path: What to show.
        host: Address to bind: 127.0.0.1 serves this machine only; 0.0.0.0 every interface.
        port: Port to listen on (the next free one if taken; 0: any free port).
        time: Initial time index.
        max_gaussians: At most this many Gaussians go to the browser (a fixed random subset
            beyond that, with a note in the panel).
        opacity_threshold: Hide Gaussians less opaque than this.
        fps: Playback speed in time steps per second (default: the scene's, else 8).
        up: World up axis (default: from the scene's cameras, else +z).
        screenshots: Folder the screenshot button saves PNGs into.
        quiet: Print nothing but errors.
    """
    from fourreal.viewers.server import ViewOptions, run_viewer

    options = ViewOptions(
        host, port, time, max_gaussians, opacity_threshold, fps, up=up, screenshots=screenshots
    )
    run_viewer(path, options, quiet=quiet)


def bench(
    target: tyro.conf.Positional[Literal["render", "generate"]],
    counts: tuple[int, ...] = (10_000, 50_000, 200_000),
    sizes: tuple[str, ...] = ("144x256", "288x512"),
    backends: tuple[Literal["torch", "cpu", "gsplat"], ...] = (),
    repeats: int = 3,
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None,
    quiet: bool = False,
) -> None:
    """Benchmark a part of fourreal and write the results as JSON.

    render: forward and forward+backward time, Gaussians per second and peak memory of the
    Gaussian rasterizer, for each available backend (torch everywhere, cpu where a C++ compiler
    is present, gsplat on CUDA), each configuration in a fresh process.

    generate: step time of the two-stream grid model against its two streams run separately
    and the sequential variant, for the tiny and small configs, with the machine's measured
    matmul GFLOP/s and the model's achieved FLOP/s.

    Args:
        target: What to benchmark.
        counts: Numbers of Gaussians (render).
        sizes: Image sizes as HEIGHTxWIDTH (render).
        backends: Backends to run (render; default: every available one).
        repeats: Timed runs per configuration (the median is reported), after one warm-up.
        output: JSON file to write (default: bench/results/TARGET.json).
        quiet: Print nothing.
    """
    output = output or Path(f"bench/results/{target}.json")
    if target == "generate":
        from fourreal.diffusion.benchmark import bench_generate

        bench_generate(repeats=repeats, output=output, quiet=quiet)
        return
    from fourreal.recon.render.benchmark import bench_render

    parsed = []
    for size in sizes:
        try:
            height, width = (int(x) for x in size.lower().split("x"))
        except ValueError:
            raise FourrealError(f"--sizes takes HEIGHTxWIDTH like 144x256, got {size!r}") from None
        parsed.append((height, width))
    bench_render(tuple(counts), tuple(parsed), tuple(backends) or None, repeats, output, quiet)


def _check_sizes(**sizes: int | None) -> None:
    """Counts given as options must be at least 1 (None: not given, a default applies)."""
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise FourrealError(f"--{name} must be at least 1, got {value}")
    if {"views", "times", "height", "width"} <= set(sizes):
        from fourreal.memory import check_fits

        frames = sizes["views"] * sizes["times"]
        # float32 RGB and depth, plus the renderer's and the writer's working copies
        check_fits(
            frames * sizes["height"] * sizes["width"] * 4 * (3 + 1) * 3,
            f"a {sizes['views']}x{sizes['times']} grid of {sizes['width']}x{sizes['height']}",
            "use a smaller --height/--width or fewer --views/--times",
        )


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text)


COMMANDS = {
    "synth": synth,
    "demo": demo,
    "import": import_,
    "preview": preview,
    "track": track,
    "reconstruct": reconstruct,
    "export": export,
    "eval": eval_,
    "generate": generate,
    "train": train,
    "view": view,
    "bench": bench,
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup path (atomic writes) runs."""


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``fourreal`` command (and ``python -m fourreal``)."""
    with _sigterm_as_interrupt():
        try:
            argv = sys.argv[1:] if args is None else list(args)
            if argv[:2] == ["eval", "generate"]:  # `fourreal eval SCENE` takes any other word
                tyro.cli(eval_generate, prog="fourreal eval generate", args=argv[2:])
                return
            tyro.extras.subcommand_cli_from_dict(
                COMMANDS,
                prog="fourreal",
                description=(
                    "fourreal: 4D video grids, dynamic Gaussian reconstruction and viewing."
                ),
                args=args,
            )
        except FourrealError as err:
            print(f"fourreal: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as err:
            what = "terminated" if isinstance(err, Terminated) else "interrupted"
            print(
                f"fourreal: {what}; finished outputs were kept, partial ones removed",
                file=sys.stderr,
            )
            raise SystemExit(143 if isinstance(err, Terminated) else 130) from None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM (``kill``, a job scheduler's stop) raises
    :class:`Terminated` instead of ending the process on the spot, so temporary outputs are
    removed and earlier outputs stay; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
