import json

import pytest
import torch

import fourreal.recon.scene as scene_module
from fourreal.cli import main
from fourreal.io import load_grid, read_ply, save_grid
from fourreal.recon.config import ReconConfig
from fourreal.recon.export import export_ply_sequence, export_splatv, read_splatv
from fourreal.recon.fit import (
    densify,
    evaluate,
    initialize,
    make_optimizer,
    offset_weight,
    train,
)
from fourreal.recon.losses import psnr
from fourreal.recon.motion import motion_loss, prefit_motion
from fourreal.recon.render import rasterize
from fourreal.recon.run import run_reconstruction
from fourreal.recon.scene import load_scene
from fourreal.synth import synth_grid
from fourreal.types import Cameras

TINY = ReconConfig(iterations=40, prune_iterations=10, checkpoint_every=20, point_stride=2)


@pytest.fixture(scope="module")
def tiny_grid():
    grid = synth_grid("orbit", seed=1, views=4, times=4, height=48, width=80, num_tracks=16)
    return grid.replace(cameras=Cameras(grid.cameras.K), depth=None, gt={})  # poses hidden


@pytest.fixture(scope="module")
def tiny_grid_path(tiny_grid, tmp_path_factory):
    return save_grid(tiny_grid, tmp_path_factory.mktemp("grid") / "grid")


def test_untrained_deformation_is_the_identity(tiny_grid):
    # without time seeds nothing else changes with time (seeds: tests/test_seeds.py)
    config = TINY.replace(motion_prefit_steps=0, time_seeds=False)
    recon = initialize(tiny_grid, config, progress=False)
    model = recon.model
    times = torch.tensor([0.0, 0.37, 1.0])
    assert torch.equal(model.positions(times), model.means[None].expand(3, -1, -1))
    a = recon.render(2, 0, views=False).rgb
    b = recon.render(2, 3, views=False).rgb
    assert torch.equal(a, b)  # nothing moves before training


def test_training_lowers_the_loss(tiny_grid):
    recon = initialize(tiny_grid, TINY, progress=False)
    before = evaluate(recon, tiny_grid, [(v, t) for v in range(4) for t in range(4)])
    train(recon, tiny_grid, TINY.replace(iterations=60), make_optimizer(recon, TINY))
    after = evaluate(recon, tiny_grid, [(v, t) for v in range(4) for t in range(4)])
    assert after["psnr"] > before["psnr"] + 1.0
    first, last = sum(recon.losses[:10]) / 10, sum(recon.losses[-10:]) / 10
    assert last < 0.9 * first


def test_view_offsets_fade_out_so_that_exports_need_none(tiny_grid):
    config = TINY.replace(iterations=30)  # fade over steps 9..18
    weights = [offset_weight(s, config) for s in (0, 9, 12, 18, 29)]
    assert weights == pytest.approx([1, 1, 2 / 3, 0, 0])
    assert offset_weight(29, config.replace(view_offset_fade=0)) == 1  # kept, as in the paper
    recon = initialize(tiny_grid, config, progress=False)
    assert float(recon.model.view_offsets.abs().amax()) > 0
    v, t = recon.holdout[0]
    assert not torch.equal(recon.render(v, t).rgb, recon.render(v, t, views=False).rgb)
    optimizer = make_optimizer(recon, config)
    train(recon, tiny_grid, config, optimizer)
    assert recon.offset_weight == 0
    assert torch.equal(recon.render(v, t).rgb, recon.render(v, t, views=False).rgb)
    # training on for longer does not bring them back
    train(recon, tiny_grid, config.replace(iterations=40), optimizer)
    assert recon.offset_weight == 0


def test_resume_continues_from_the_saved_step(tiny_grid_path, tmp_path, monkeypatch):
    out = tmp_path / "scene"
    real = scene_module.save_checkpoint
    seen = []

    def interrupt_after_first(recon, optimizer, config, folder):
        real(recon, optimizer, config, folder)
        seen.append(recon.step)
        if len(seen) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr("fourreal.recon.run.save_checkpoint", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_reconstruction(tiny_grid_path, out, TINY, progress=False)
    assert not (out / "scene.json").exists()  # no half-written scene, only the checkpoint
    assert (out / "checkpoint.safetensors").is_file()
    # it carries the view offsets' weight (fading over steps 12..24; last set at step 19)
    assert scene_module.load_checkpoint(out)[0].offset_weight == pytest.approx(2 - 2 * 19 / 24)
    monkeypatch.setattr("fourreal.recon.run.save_checkpoint", real)
    metrics = run_reconstruction(tiny_grid_path, out, None, resume=True, progress=False)
    assert seen == [20] and metrics["steps"] == 40
    log = (out / "log.txt").read_text()
    assert "resuming at step 20 of 40" in log


def test_scene_outputs_and_an_interrupted_save_keeps_the_previous_scene(
    tiny_grid_path, tmp_path, monkeypatch
):
    out = tmp_path / "scene"
    main(["reconstruct", str(tiny_grid_path), "-o", str(out), "--iterations", "20", "--quiet"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "num_gaussians", "num_pruned", "seconds", "holdout"} <= set(metrics)
    meta = json.loads((out / "scene.json").read_text())
    assert meta["format"] == "fourreal-scene" and len(meta["times"]) == 4
    assert len(meta["cameras"]["T_world_cam"]) == 4
    ply = read_ply(out / "scene.ply")
    assert len(ply) == metrics["num_gaussians"] and ply.is_isotropic
    before = (out / "scene.ply").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(scene_module, "write_ply", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["reconstruct", str(tiny_grid_path), "-o", str(out), "--iterations", "5", "--quiet"])
    assert (out / "scene.ply").read_bytes() == before
    load_scene(out)  # still complete and loadable


def test_exports_read_back_and_render_like_the_scene(tiny_grid_path, tmp_path):
    out = tmp_path / "scene"
    run_reconstruction(tiny_grid_path, out, TINY.replace(view_offsets=False), progress=False)
    meta, model = load_scene(out)
    folder = export_ply_sequence(out, tmp_path / "export")
    grid = load_grid(tiny_grid_path)
    K = torch.tensor(meta["cameras"]["K"])
    T_cam_world = torch.linalg.inv(torch.tensor(meta["cameras"]["T_world_cam"]))
    background = torch.tensor(meta["background"])
    for t, time in enumerate(meta["times"]):
        frame = read_ply(folder / f"t{t:03d}.ply")
        expected = model.at_time(time)
        assert torch.allclose(frame.means, expected.means, atol=1e-5)
        v = 3
        out_ply = rasterize(frame.means, frame.scales[:, 0], frame.opacities, frame.colors,
                            T_cam_world[v], K[v], 80, 48, background)  # fmt: skip
        e = expected
        out_model = rasterize(e.means, e.scales[:, 0], e.opacities, e.colors,
                              T_cam_world[v], K[v], 80, 48, background)  # fmt: skip
        target = grid.frames[v, t].permute(1, 2, 0)
        assert abs(psnr(out_ply.rgb, target) - psnr(out_model.rgb, target)) < 0.1
    path, rms = export_splatv(out, tmp_path / "scene.splatv")
    header, records = read_splatv(path)
    assert header["count"] == len(model) == records.shape[0]
    assert rms < 1e-2


def test_row_tracks_skip_held_out_frames_and_the_prefit_fits_the_motion(tiny_grid):
    config = TINY.replace(motion_tracks=True, motion_prefit_steps=0)
    recon = initialize(tiny_grid, config, progress=False)
    tracks = recon.motion
    assert tracks is not None and len(tracks) > 100 and bool(tracks.moving.any())
    assert int(tracks.index.max()) < len(recon.model)
    for v, t in recon.holdout:  # held-out frames give no targets
        assert not tracks.visible[t, tracks.view == v].any()
    assert tracks.visible[0].all()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = float(motion_loss(recon, tracks, 4096, g))
    prefit_motion(recon, tracks, steps=100, lr=5e-3, batch=1024)
    with torch.no_grad():
        after = float(motion_loss(recon, tracks, 4096, g))
    assert after < 0.5 * before, (before, after)


def test_densify_grows_and_prunes_with_consistent_optimizer_state(tiny_grid):
    config = TINY.replace(motion_tracks=True, motion_prefit_steps=0)
    recon = initialize(tiny_grid, config, progress=False)
    optimizer = make_optimizer(recon, TINY)
    train(recon, tiny_grid, TINY.replace(iterations=3, densify_every=0), optimizer)
    n = len(recon.model)
    with torch.no_grad():
        recon.model.opacity_logits[:5] = -10.0  # nearly transparent: removed
    grads = torch.rand(n)
    config = config.replace(densify_fraction=0.1)
    added, removed = densify(recon, optimizer, grads, torch.ones(n), config, torch.Generator())
    assert added == int(0.1 * n) and removed >= 5
    assert len(recon.model) == n + added - removed
    assert int(recon.motion.index.max()) < len(recon.model)
    for group, name in zip(optimizer.param_groups, ("means", "log_scales"), strict=False):
        (param,) = group["params"]
        assert param is getattr(recon.model, name)
        assert optimizer.state[param]["exp_avg"].shape == param.shape
    train(recon, tiny_grid, TINY.replace(iterations=5), optimizer)  # keeps running
    assert recon.step == 5 and torch.isfinite(recon.model.means).all()
