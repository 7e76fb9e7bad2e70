"""The fourreal-grid dataparser: splits, times, cameras, and a light entry-point module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from fourreal_nerfstudio.dataparser import (
    OPENCV_TO_OPENGL,
    FourrealGridDataParserConfig,
    split_frames,
)

from fourreal.io import load_grid
from fourreal.recon.fit import choose_holdout


@pytest.fixture(scope="module")
def parser(grid_dir):
    parser = FourrealGridDataParserConfig(data=grid_dir, holdout_fraction=0.3).setup()
    return parser


def frames_of(outputs, T):
    views = outputs.cameras.metadata["fourreal_view"][:, 0].tolist()
    times = [round(float(t) * (T - 1)) for t in outputs.cameras.times[:, 0]]
    return list(zip(views, times, strict=True))


def test_split_is_fourreals_holdout_and_covers_the_grid(parser, grid_dir):
    grid = load_grid(grid_dir)
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    holdout = choose_holdout(grid.views, grid.times, 0.3, 0)
    assert len(holdout) >= 2
    assert frames_of(test, grid.times) == holdout
    assert parser.get_dataparser_outputs("val").image_filenames == test.image_filenames
    everything = set(frames_of(train, grid.times)) | set(holdout)
    assert everything == {(v, t) for v in range(grid.views) for t in range(grid.times)}
    assert len(train.image_filenames) == grid.views * grid.times - len(holdout)
    for (v, t), name in zip(frames_of(train, grid.times), train.image_filenames, strict=True):
        assert name == grid_dir / "frames" / f"v{v:03d}_t{t:03d}.png" and name.is_file()


def test_times_are_normalized_and_parser_is_time_aware(parser):
    assert parser.includes_time
    times = parser.get_dataparser_outputs("train").cameras.times[:, 0]
    assert float(times.min()) == 0.0 and float(times.max()) == 1.0
    assert sorted(set(times.tolist())) == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_cameras_are_the_tracked_ones_in_opengl_axes_with_grid_intrinsics(parser, grid_dir):
    grid = load_grid(grid_dir)
    scene = parser.scene
    cameras = parser.get_dataparser_outputs("train").cameras
    views = cameras.metadata["fourreal_view"][:, 0]
    c2w = torch.cat(
        [cameras.camera_to_worlds, torch.tensor([[[0, 0, 0, 1.0]]]).expand(len(views), 1, 4)], 1
    )
    assert torch.allclose(c2w @ OPENCV_TO_OPENGL, scene.T_world_cam[views], atol=1e-6)
    assert torch.allclose(scene.T_world_cam, scene.tracks.T_world_cam)
    K = cameras.get_intrinsics_matrices()
    assert torch.allclose(K, grid.cameras.K[views].float(), atol=1e-4)
    assert int(cameras.width[0]) == grid.width and int(cameras.height[0]) == grid.height


def test_grid_cameras_keep_the_grids_relative_poses(grid_dir):
    parser = FourrealGridDataParserConfig(data=grid_dir, cameras="grid").setup()
    given = load_grid(grid_dir).cameras.T_world_cam.double()
    scene = parser.scene
    assert scene.camera_source == "grid"
    ours = scene.T_world_cam.double()
    # a similarity changes no relative rotation between two views
    relative_given = given[0, :3, :3].T @ given[2, :3, :3]
    relative_ours = ours[0, :3, :3].T @ ours[2, :3, :3]
    assert torch.allclose(relative_given, relative_ours, atol=1e-5)


def test_unknown_split_is_an_error():
    with pytest.raises(Exception, match="unknown split"):
        split_frames(2, 2, [], "holdout")


def test_entry_point_module_does_not_import_nerfstudio_training_machinery():
    code = (
        "import sys, json, fourreal_nerfstudio.dataparser\n"
        "bad = [m for m in sys.modules if m.startswith(('nerfstudio.data.datamanagers',"
        " 'nerfstudio.pipelines', 'nerfstudio.engine.trainer'))]\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_fourreals_core_modules_import_without_viser():
    # fourreal is installed here with --no-deps beside nerfstudio's viser 0.2.7: what the plugin
    # uses of it must not import viser (only fourreal.viewers does)
    code = (
        "import sys, fourreal.io, fourreal.recon.fit, fourreal.recon.scene, fourreal.recon.init,"
        " fourreal.recon.prune, fourreal.tracking.pipeline\n"
        "print('viser' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_entry_points_are_discovered():
    from nerfstudio.plugins.registry import discover_methods
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    methods, _ = discover_methods()
    dataparsers, _ = discover_dataparsers()
    assert "fourreal-splat" in methods
    assert isinstance(dataparsers["fourreal-grid"], FourrealGridDataParserConfig)
    model = methods["fourreal-splat"].pipeline.model
    assert type(model).__name__ == "FourrealSplatModelConfig"
