import json

import pytest
import torch
import trimesh

from fourreal.cli import main
from fourreal.errors import FourrealError
from fourreal.io import save_grid
from fourreal.synth import synth_grid
from fourreal.tracking.evaluate import depth_errors, pose_errors
from fourreal.tracking.flow import DISFlow
from fourreal.tracking.io import load_tracks
from fourreal.tracking.pipeline import TrackConfig, track_column


@pytest.fixture(scope="module")
def column_grid():
    return synth_grid("default", seed=0, views=8, times=1, height=144, width=256, num_tracks=64)


@pytest.fixture(scope="module")
def tracked(column_grid):
    # ground truth hidden: only the frames and the intrinsics go in
    return track_column(column_grid.frames[:, 0], column_grid.cameras.K)


def scene_radius(grid):
    central = grid.views // 2
    depth = grid.depth[central, 0]
    return float(depth[depth > 0].median())


def test_poses_match_the_truth(column_grid, tracked):
    errors = pose_errors(
        tracked.T_world_cam, column_grid.cameras.T_world_cam, scene_radius(column_grid)
    )
    assert errors["rotation_deg"].max() < 1.0
    assert errors["center_fraction"].max() < 0.02
    assert torch.allclose(tracked.T_world_cam[tracked.central], torch.eye(4), atol=1e-5)


def test_canonical_depth_matches_the_truth(column_grid, tracked):
    errors = depth_errors(tracked, column_grid.depth[tracked.central, 0])
    assert errors["points_evaluated"] > 1000
    assert errors["median_rel_error"] < 0.03
    assert errors["outlier_fraction"] < 0.15


def test_consistent_views_have_small_offsets_and_rigid_fits_near_the_cameras(tracked):
    depth = tracked.points[:, 2].median()
    offsets = tracked.offsets[tracked.visible].norm(dim=-1)
    assert offsets.median() < 0.01 * depth
    T_cam_world = torch.linalg.inv(tracked.T_world_cam)
    assert torch.allclose(
        tracked.T_cam_canonical[:, :3, 3], T_cam_world[:, :3, 3], atol=0.02 * depth
    )
    assert tracked.visible[tracked.central].float().mean() > 0.3


def test_focal_length_is_estimated_without_intrinsics(column_grid):
    result = track_column(column_grid.frames[:, 0], None)
    truth = float(column_grid.cameras.K[0, 0, 0])
    assert abs(result.stats["focal_px"] - truth) / truth < 0.05


def test_gt_depth_fixes_the_scale(column_grid):
    grid = column_grid
    result = track_column(grid.frames[:, 0], grid.cameras.K, grid.depth[:, 0], TrackConfig("gt"))
    centers = result.T_world_cam[:, :3, 3]
    truth = column_grid.cameras.T_world_cam[:, :3, 3].float()
    # metric scale: the distances between cameras match the truth
    est = (centers[1:] - centers[:-1]).norm(dim=-1)
    gt = (truth[1:] - truth[:-1]).norm(dim=-1)
    assert torch.allclose(est, gt, rtol=0.03)
    assert depth_errors(result, column_grid.depth[result.central, 0])["scale"] == pytest.approx(
        1, abs=0.03
    )


def test_a_flow_model_plugs_in(column_grid):
    calls = []

    class Counting:
        def __init__(self):
            self.inner = DISFlow()

        def __call__(self, source, target):
            calls.append(source.shape[0])
            return self.inner(source, target)

    track_column(column_grid.frames[:4, 0], column_grid.cameras.K[:4], flow_model=Counting())
    assert calls == [3, 3]


def test_bad_columns_are_clear_errors(column_grid):
    frames = column_grid.frames[:, 0]
    with pytest.raises(FourrealError, match="barely differ"):
        track_column(frames[:1].expand(5, -1, -1, -1).clone())
    with pytest.raises(FourrealError, match="at least 2 views"):
        track_column(frames[:1])
    broken = frames.clone()
    broken[2, :, 5, 5] = float("nan")
    with pytest.raises(FourrealError, match="NaN"):
        track_column(broken)


def test_track_command_writes_files_that_read_back(column_grid, tmp_path):
    save_grid(column_grid, tmp_path / "grid")
    main(["track", str(tmp_path / "grid"), "-o", str(tmp_path / "tracks"), "--quiet"])
    out = tmp_path / "tracks"
    loaded = load_tracks(out)
    cloud = trimesh.load(out / "canonical.ply")
    assert cloud.vertices.shape == tuple(loaded.points.shape)
    assert torch.allclose(torch.from_numpy(cloud.vertices).float(), loaded.points, atol=1e-6)
    colors = torch.from_numpy(cloud.colors[:, :3].astype("float32")) / 255
    assert (colors - loaded.colors).abs().max() <= 0.5 / 255 + 1e-6
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras["K"]) == 8 and cameras["central"] == 4
    assert torch.allclose(torch.tensor(cameras["T_world_cam"][4]), torch.eye(4), atol=1e-5)
    assert (out / "tracks.png").stat().st_size > 10_000
    (out / "tracks.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FourrealError, match=r"tracks\.safetensors"):
        load_tracks(out)


@pytest.fixture(scope="module")
def tiny_depth_model(tmp_path_factory):
    """A randomly initialized Depth Anything in a local folder (no download)."""
    transformers = pytest.importorskip("transformers")
    backbone = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )  # fmt: skip
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.DepthAnythingForDepthEstimation(config)
    folder = tmp_path_factory.mktemp("depth_anything_tiny")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 56}}))
    return folder


def test_monocular_depth_alignment_recovers_depth():
    from fourreal.tracking.mono import align_inverse_depth

    truth = torch.rand(30, 40) * 3 + 1
    disparity = 0.7 / truth + 0.2  # what a relative inverse-depth model gives, up to s and b
    sparse = torch.where(torch.rand(30, 40) < 0.3, truth, torch.zeros_like(truth))
    assert torch.allclose(align_inverse_depth(disparity, sparse), truth, rtol=1e-4)


def test_monocular_adapter_loads_a_local_model_and_fills_depth(column_grid, tiny_depth_model):
    from fourreal.tracking.mono import MonoDepth

    frames = column_grid.frames[:4, 0]
    disparity = MonoDepth(tiny_depth_model)(frames)
    assert disparity.shape == (4, 144, 256) and torch.isfinite(disparity).all()
    K = column_grid.cameras.K[:4]
    plain = track_column(frames, K)
    filled = track_column(frames, K, config=TrackConfig("mono", mono_model=str(tiny_depth_model)))
    assert filled.stats["dense_fraction"] > plain.stats["dense_fraction"]
    with pytest.raises(FourrealError, match="not a model folder"):
        MonoDepth(tiny_depth_model / "missing")
