"""The viewer without a browser: loading every input, packing for viser, playback, the CLI."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from viewer_scenes import SHIFT, write_dynamic_scene

from fourreal.cli import main
from fourreal.errors import FourrealError
from fourreal.io import read_ply, save_grid, write_ply
from fourreal.io.gaussian_ply import SH_C0, PlyError
from fourreal.recon.export import export_ply_sequence, export_zip
from fourreal.recon.scene import load_scene
from fourreal.types import GaussianParams
from fourreal.viewers import server as server_module
from fourreal.viewers.server import Viewer, ViewOptions
from fourreal.viewers.sources import ViewerInputError, load_view_scene
from fourreal.viewers.splats import Splats, pack_centers, pack_rest, pack_steps, select

ROOT = Path(__file__).resolve().parents[1]


def write_raw_ply(path: Path, columns: dict[str, np.ndarray], header_extra: str = "") -> Path:
    """A binary little-endian PLY with one float property per column, in the given order."""
    n = len(next(iter(columns.values())))
    header = f"ply\nformat binary_little_endian 1.0\n{header_extra}element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in columns) + "end_header\n"
    table = np.stack([np.asarray(v, dtype="<f4") for v in columns.values()], axis=1)
    path.write_bytes(header.encode() + table.tobytes())
    return path


def anisotropic_columns() -> dict[str, np.ndarray]:
    """Two Gaussians with scales (0.1, 0.2, 0.3): unrotated, and turned 90° about z; SH degree 1."""
    c = {"x": [0.0, 1.0], "y": [0.0, 0.0], "z": [0.0, 0.0]}
    c |= {f"f_dc_{k}": [(0.9 - 0.5) / SH_C0, (0.2 - 0.5) / SH_C0] for k in range(3)}
    c |= {f"f_rest_{k}": [0.3, -0.3] for k in range(9)}
    c |= {"opacity": [2.0, -1.0]}
    c |= {f"scale_{k}": [math.log(0.1 * (k + 1))] * 2 for k in range(3)}
    half = math.sqrt(0.5)
    c |= {"rot_0": [1.0, half], "rot_1": [0.0, 0.0], "rot_2": [0.0, 0.0], "rot_3": [0.0, half]}
    return {k: np.asarray(v, dtype=np.float32) for k, v in c.items()}


@pytest.fixture(scope="module")
def scene_ply(tmp_path_factory) -> Path:
    return write_dynamic_scene(tmp_path_factory.mktemp("viewer") / "scene", times=5, n=600)


@pytest.fixture
def viewer_of():
    """Start viewers on free ports; stop them after the test."""
    started = []

    def start(scene, **options) -> Viewer:
        viewer = Viewer(scene, ViewOptions(port=0, **options))
        started.append(viewer)
        return viewer

    yield start
    for viewer in started:
        viewer.stop()


def node_centers(viewer: Viewer) -> np.ndarray:
    return viewer._splats.buffer[:, :3].copy().view(np.float32)


# ------------------------------------------------------------------------- inputs


def test_plain_ply_shows_anisotropic_gaussians_with_degree_0_colors(tmp_path):
    path = write_raw_ply(tmp_path / "plain.ply", anisotropic_columns())
    scene = load_view_scene(path)
    assert scene.kind == "static" and scene.num_times == 1 and len(scene.steps[0]) == 2
    cov = scene.steps[0].covariances()
    np.testing.assert_allclose(cov[0], np.diag([0.01, 0.04, 0.09]), atol=1e-6)
    np.testing.assert_allclose(cov[1], np.diag([0.04, 0.01, 0.09]), atol=1e-6)  # x and y swap
    np.testing.assert_allclose(scene.steps[0].rgbs, [[0.9] * 3, [0.2] * 3], atol=1e-5)
    np.testing.assert_allclose(scene.steps[0].opacities, 1 / (1 + np.exp([-2.0, 1.0])), 1e-6)
    assert any("degree 1" in note and "ignores the higher bands" in note for note in scene.notes)
    # the reader keeps its API: higher bands are read unless asked not to
    assert read_ply(path).sh_rest.shape == (2, 3, 3)
    assert read_ply(path, sh_rest=False).sh_rest is None


def test_packing_matches_what_viser_builds(tmp_path):
    import viser

    rng = np.random.default_rng(1)
    n = 50
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    splats = Splats(
        rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(0.01, 0.3, (n, 3)).astype("f4"),
        quats / np.linalg.norm(quats, axis=1, keepdims=True), rng.uniform(size=(n, 3)),
        rng.uniform(size=n),
    )  # fmt: skip
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        handle = server.scene.add_gaussian_splats(
            "/reference", centers=splats.centers, covariances=splats.covariances(),
            rgbs=splats.rgbs, opacities=splats.opacities[:, None],
        )  # fmt: skip
        reference = handle.buffer.copy()
    finally:
        server.stop()
    ours = np.concatenate([pack_centers(splats.centers), pack_rest(splats, np.arange(n))], axis=1)
    np.testing.assert_array_equal(ours[:, :7], reference[:, :7])  # centers, covariance
    rgba = lambda b: b[:, 7:8].copy().view(np.uint8).astype(int)  # noqa: E731
    assert np.abs(rgba(ours) - rgba(reference)).max() <= 1  # we round, viser truncates


def test_select_hides_faint_gaussians_and_subsamples_deterministically():
    opacities = np.linspace(0, 1, 1000)
    keep, note = select(opacities, threshold=0.5, cap=100)
    assert len(keep) == 100 and (opacities[keep] >= 0.5).all()
    assert "below opacity 0.5 hidden" in note and "subsampled to 100 of 1,000" in note
    np.testing.assert_array_equal(keep, select(opacities, 0.5, 100)[0])
    everything, no_note = select(opacities, threshold=0.0, cap=5000)
    assert len(everything) == 1000 and no_note is None


def test_dynamic_scene_caches_the_deformation_at_every_time(scene_ply):
    scene = load_view_scene(scene_ply)
    assert scene.kind == "dynamic" and scene.num_times == 5 and scene.cameras.has_poses
    meta, model = load_scene(scene_ply.parent)
    for t, time_value in enumerate(meta["times"]):
        expected = model.at_time(time_value).means.numpy()
        np.testing.assert_allclose(scene.steps[t].centers, expected, atol=1e-6)
    shift = scene.steps[-1].centers - scene.steps[0].centers
    np.testing.assert_allclose(shift, np.tile([SHIFT, 0, 0], (len(shift), 1)), atol=1e-5)
    # the folder opens the same scene; packed steps share all but their centers
    assert load_view_scene(scene_ply.parent).kind == "dynamic"
    packed, note = pack_steps(scene.steps, 0.0, 10_000)
    assert all(p.rest is packed[0].rest for p in packed) and note == "showing 600 Gaussians"


def test_ply_sequence_folder_and_zip_open_as_the_same_motion(scene_ply, tmp_path):
    folder = export_ply_sequence(scene_ply.parent, tmp_path / "frames")
    archive = export_zip(scene_ply.parent, tmp_path / "frames.zip")
    dynamic = load_view_scene(scene_ply)
    for source in (folder, archive):
        scene = load_view_scene(source)
        assert scene.kind == "sequence" and scene.num_times == 5
        for ours, theirs in zip(scene.steps, dynamic.steps, strict=True):
            np.testing.assert_allclose(ours.centers, theirs.centers, atol=1e-5)
        packed, _ = pack_steps(scene.steps, 0.0, 10_000)
        assert all(p.rest is packed[0].rest for p in packed)  # only the centers change


def test_sequence_with_a_gap_names_the_missing_time(scene_ply, tmp_path):
    folder = export_ply_sequence(scene_ply.parent, tmp_path / "frames")
    (folder / "t001.ply").unlink()
    with pytest.raises(ViewerInputError, match="time 1 is missing"):
        load_view_scene(folder)
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("seq/t000.ply", (folder / "t000.ply").read_bytes()[:-20])
    with pytest.raises(PlyError, match=r"broken\.zip:seq/t000\.ply .*truncated"):
        load_view_scene(archive)


def test_grid_folder_shows_frames_on_frustums(small_grid, tmp_path, viewer_of):
    save_grid(small_grid, tmp_path / "grid")
    scene = load_view_scene(tmp_path / "grid")
    assert scene.kind == "grid" and scene.steps == [] and scene.num_times == small_grid.times
    assert scene.images.shape == (4, 5, 48, 80, 3) and scene.cameras.has_poses
    viewer = viewer_of(scene, time=1)
    assert len(viewer._frustums) == 4 and viewer.gui.time is not None
    np.testing.assert_array_equal(viewer._frustums[2].image, scene.images[2, 1])
    viewer.set_time(4)
    np.testing.assert_array_equal(viewer._frustums[2].image, scene.images[2, 4])


def test_grid_without_poses_is_laid_out_with_a_note(small_grid, tmp_path, viewer_of):
    save_grid(small_grid.replace(cameras=None), tmp_path / "grid")
    scene = load_view_scene(tmp_path / "grid")
    assert scene.cameras is None and "no camera poses" in scene.notes[0]
    viewer = viewer_of(scene)
    assert len(viewer._frustums) == 4 and viewer.gui.view is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("header", "unknown property line"),
        ("truncated", "truncated"),
        ("nan", "positions contain NaN"),
    ],
)
def test_broken_ply_is_one_clear_error_and_no_server(damage, message, tmp_path, monkeypatch,
                                                     capsys):  # fmt: skip
    columns = anisotropic_columns()
    path = tmp_path / "broken.ply"
    if damage == "nan":
        columns["y"][1] = np.nan
    write_raw_ply(path, columns)
    data = path.read_bytes()
    if damage == "header":
        data = data.replace(b"property float opacity", b"property flot opacity")
    elif damage == "truncated":
        data = data[:-20]
    path.write_bytes(data)
    started = []
    monkeypatch.setattr(server_module, "_start_server", lambda *a: started.append(a))
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and started == []
    assert len(err) == 1 and err[0].startswith(f"fourreal: error: {path}") and message in err[0]


def test_unknown_inputs_say_what_the_viewer_takes(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing.ply", tmp_path / "empty", tmp_path / "notes.txt"):
        if path.suffix == ".txt":
            path.write_text("hi")
        with pytest.raises(ViewerInputError, match="fourreal view takes"):
            load_view_scene(path)


# ------------------------------------------------------------------------- the server


def test_one_splat_node_follows_time_play_and_loop(scene_ply, viewer_of):
    scene = load_view_scene(scene_ply)
    viewer = viewer_of(scene, time=2, fps=40.0)
    assert viewer.url.startswith("http://127.0.0.1:") and viewer.gui.time.value == 2
    node = viewer._splats
    np.testing.assert_array_equal(node_centers(viewer), scene.steps[2].centers)
    viewer.gui.time.value = 4  # as if moved in the browser
    deadline = time.monotonic() + 5
    while viewer.time != 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    np.testing.assert_array_equal(node_centers(viewer), scene.steps[4].centers)
    viewer.play()
    time.sleep(0.3)  # 40 fps: wraps around at least once
    viewer.pause()
    assert viewer._splats is node and viewer.gui.play.label == "Play"
    viewer.gui.loop.value = False
    viewer.set_time(3)
    viewer.play()
    deadline = time.monotonic() + 5
    while viewer.playing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not viewer.playing and viewer.time == 4  # stopped at the end


def test_display_limits_and_camera_presets(scene_ply, viewer_of):
    scene = load_view_scene(scene_ply)
    viewer = viewer_of(scene, max_gaussians=100)
    assert len(viewer._splats.buffer) == 100 and "subsampled to 100 of 600" in viewer.display_note
    viewer.set_display(opacity_threshold=0.95, max_gaussians=10_000)  # every Gaussian has 0.9
    assert not viewer._splats.visible and "600 below opacity 0.95 hidden" in viewer.display_note
    viewer.set_display(0.0, 10_000)
    assert viewer._splats.visible and len(viewer._splats.buffer) == 600
    # the initial camera is view 0 of the scene, looking at the scene
    pose = viewer.camera_pose(1)
    T = scene.cameras.T_world_cam[1]
    np.testing.assert_allclose(pose.position, T[:3, 3])
    forward = (pose.look_at - pose.position) / np.linalg.norm(pose.look_at - pose.position)
    np.testing.assert_allclose(forward, T[:3, 2], atol=1e-9)
    np.testing.assert_allclose(
        viewer.server.initial_camera.position, scene.cameras.T_world_cam[0, :3, 3]
    )
    np.testing.assert_allclose(viewer.up, [0, 0, 1], atol=0.1)


def test_plain_ply_is_framed_by_its_bounding_box(tmp_path, viewer_of):
    g = torch.Generator().manual_seed(0)
    n = 400
    means = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 2.0, 1.0]) + 10
    gaussians = GaussianParams.isotropic(means, torch.full((n,), 0.02), torch.ones(n),
                                         torch.rand(n, 3, generator=g))  # fmt: skip
    scene = load_view_scene(write_ply(gaussians, tmp_path / "box.ply"))
    pose = viewer_of(scene).initial_pose
    np.testing.assert_allclose(pose.look_at, [12, 11, 10.5], atol=0.1)
    radius = np.linalg.norm([2, 1, 0.5])
    assert np.linalg.norm(pose.position - pose.look_at) >= radius / math.sin(pose.fov / 2)


def test_time_out_of_range_is_refused_before_serving(scene_ply, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(server_module, "_start_server", lambda *a: started.append(a))
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(scene_ply), "--time", "5"])
    assert exit_info.value.code == 2 and started == []
    assert "--time 5 is out of range" in capsys.readouterr().err
    with pytest.raises(FourrealError, match="max-gaussians"):
        ViewOptions(max_gaussians=0).check(load_view_scene(scene_ply))


def test_cli_serves_on_localhost_and_exits_cleanly_on_ctrl_c(scene_ply, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "fourreal", "view", str(scene_ply), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=tmp_path)  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("fourreal view: open http://"):
                url = line.split()[3]
        assert url is not None and url.startswith("http://127.0.0.1:"), process.stderr.read()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read(2000).lower()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "stopped" in out, err
    assert "Traceback" not in err


def test_view_is_a_documented_command(capsys):
    with pytest.raises(SystemExit):
        main(["view", "--help"])
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--time", "--max-gaussians", "--opacity-threshold"):
        assert option in out
    assert "fourreal view" in (ROOT / "docs" / "view.md").read_text()
