"""The compiled cpu backend against the torch reference (design.md §6): images and every gradient
(means, scales, opacities, colors, background, pose) on scenes of 1k to 50k Gaussians with the
contract's hard cases, tile-size independence, batched cameras, and the build and fallback paths.

Parity in float32 is ``max |cpu - torch| <= 1e-4 · max |torch|`` per tensor. Both backends share
the projection and evaluate the exponent with the same roundings, so the hard cuts (3σ, α ≥ 1/255,
T ≥ 1e-4) fall on the same side in both; tile-size independence is checked in float64, where the
exponent's rounding (which depends on the tile's corner) is far below every cut.
"""

import math
import shutil
import warnings

import pytest
import torch
from torch.utils.cpp_extension import get_cxx_compiler

from fourreal.errors import ShapeError
from fourreal.recon.render import cpu_backend, rasterize
from fourreal.recon.render.cpu_backend import CpuBackendError

from reference_render import render_dense

needs_compiler = pytest.mark.skipif(
    shutil.which(get_cxx_compiler()) is None, reason="no C++ compiler to build the cpu backend"
)
RELATIVE = 1e-4


def rotation(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    cross = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
        dtype=torch.float64,
    )
    return (
        torch.eye(3, dtype=torch.float64)
        + math.sin(angle) * cross
        + (1 - math.cos(angle)) * (cross @ cross)
    )


def frustum_scene(n, width, height, seed, dtype=torch.float32):
    """``n`` Gaussians in the view frustum at z in [2, 6] (3σ radii of 1-12 px), plus the hard
    cases: some behind the camera or inside the near plane, huge and tiny ones, and opaque stacks
    in front that stop their pixels early. Returns the scene in world coordinates, a non-trivial
    ``T_cam_world`` and ``K``."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    f = 0.5 * width / math.tan(math.radians(30))
    K = torch.tensor([[f, 0, width / 2 - 0.7], [0, 1.05 * f, height / 2 + 0.4], [0, 0, 1]])
    z = rand(n) * 4 + 2
    x, y = (rand(n) - 0.5) * width / f * z, (rand(n) - 0.5) * height / f * z
    radius_px = torch.exp(rand(n) * math.log(12))
    scales = radius_px * z / (3 * f)
    opacities = rand(n) * 0.94 + 0.05
    hard = max(n // 100, 8)
    z[:hard] = -rand(hard) * 3 - 0.05  # behind the camera
    z[hard : hard + 4] = rand(4) * 0.009  # in front of the camera, inside the near plane
    scales[hard + 4 : hard + 7] = torch.tensor([0.8, 1.5, 3.0])  # huge: cover the image
    scales[hard + 7 : hard + 7 + hard] = 1e-6  # tiny: only the 0.3 px² low-pass is left
    stacks = hard + 7 + hard
    for k in range(4):  # opaque stacks of 6 layers at z in [1, 1.5]
        rows = slice(stacks + 6 * k, stacks + 6 * k + 6)
        z[rows] = 1 + 0.1 * torch.arange(6, dtype=torch.float64) + 0.013 * k  # no ties
        x[rows] = (rand(1) - 0.5) * 0.6 * width / f * z[rows] + rand(6) * 1e-3
        y[rows] = (rand(1) - 0.5) * 0.6 * height / f * z[rows] + rand(6) * 1e-3
        scales[rows] = 5 * z[rows] / f
        opacities[rows] = 0.99
    means_cam = torch.stack([x, y, z], 1)
    T_cam_world = torch.eye(4, dtype=torch.float64)
    T_cam_world[:3, :3] = rotation((0.3, -1.0, 0.2), 0.4)
    T_cam_world[:3, 3] = torch.tensor([0.2, -0.1, 0.5])
    T_world_cam = torch.linalg.inv(T_cam_world)
    means = means_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    scene = (means, scales, opacities, rand(n, 3))
    return [t.to(dtype) for t in scene], T_cam_world.to(dtype), K.to(dtype)


def small_scene(seed, dtype=torch.float64):
    """A few dozen Gaussians seen from a look-at camera, with the same hard cases."""
    (means, scales, opacities, colors), T_cam_world, K = frustum_scene(60, 37, 23, seed, dtype)
    return (means, scales, opacities, colors), T_cam_world, K


def render_with_grads(backend, scene, T_cam_world, K, width, height, tile_size=8):
    """Outputs and the gradients of a random weighting of all three of them."""
    leaves = [x.detach().clone().requires_grad_() for x in scene]
    pose = T_cam_world.detach().clone().requires_grad_()
    background = torch.tensor([0.2, 0.5, 0.8], dtype=scene[0].dtype, requires_grad=True)
    out = rasterize(
        *leaves, pose, K, width, height, background, backend=backend, tile_size=tile_size
    )
    g = torch.Generator().manual_seed(7)
    outputs = {"rgb": out.rgb, "alpha": out.alpha, "depth": out.depth}
    loss = sum(
        (x * torch.rand(x.shape, generator=g, dtype=torch.float64).to(x.dtype)).sum()
        for x in outputs.values()
    )
    loss.backward()
    names = ("means", "scales", "opacities", "colors")
    grads = {f"d_{name}": leaf.grad for name, leaf in zip(names, leaves, strict=True)}
    return {**outputs, **grads, "d_pose": pose.grad, "d_background": background.grad}


def assert_parity(got, want, relative):
    for name, value in want.items():
        scale = value.abs().max().item()
        error = (got[name] - value).abs().max().item()
        assert scale > 0, name
        assert error <= relative * scale, (
            f"{name}: max |cpu - reference| {error:.3g} > {relative} x max |reference| {scale:.3g}"
        )


@needs_compiler
@pytest.mark.parametrize(
    ("n", "width", "height"), [(1_000, 64, 48), (10_000, 128, 72), (50_000, 256, 144)]
)
def test_float32_matches_the_torch_backend_values_and_all_gradients(n, width, height):
    scene, T_cam_world, K = frustum_scene(n, width, height, seed=n)
    cpu = render_with_grads("cpu", scene, T_cam_world, K, width, height)
    ref = render_with_grads("torch", scene, T_cam_world, K, width, height)
    assert cpu["rgb"].dtype == torch.float32
    assert_parity(cpu, ref, RELATIVE)
    # the scene exercises what it should: pixels stopped by the opaque stacks, Gaussians culled
    assert (ref["alpha"] > 0.999).sum() > 20
    hard = max(n // 100, 8)
    assert (cpu["d_means"][: hard + 4] == 0).all() and (ref["d_means"][: hard + 4] == 0).all()


@needs_compiler
@pytest.mark.parametrize("tile_size", [1, 3, 8, 16])
def test_float64_matches_the_dense_reference_whatever_the_tile_size(tile_size):
    W, H = 37, 23
    scene, T_cam_world, K = small_scene(seed=1)
    cpu = render_with_grads("cpu", scene, T_cam_world, K, W, H, tile_size=tile_size)
    background = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    dense = render_dense(*scene, T_cam_world, K, W, H, background)
    assert (dense[1] > 0.99).any(), "the scene should have opaque pixels"
    for name, want in zip(("rgb", "alpha", "depth"), dense, strict=True):
        assert (cpu[name] - want).abs().max() < 1e-12, name
    assert_parity(cpu, render_with_grads("torch", scene, T_cam_world, K, W, H), 1e-10)


@needs_compiler
def test_float32_with_another_tile_size_matches_torch_with_that_tile_size():
    scene, T_cam_world, K = frustum_scene(2_000, 72, 40, seed=3)
    cpu = render_with_grads("cpu", scene, T_cam_world, K, 72, 40, tile_size=16)
    ref = render_with_grads("torch", scene, T_cam_world, K, 72, 40, tile_size=16)
    assert_parity(cpu, ref, RELATIVE)


@needs_compiler
def test_gradcheck_through_the_hand_written_backward_and_the_pose():
    W, H = 7, 5
    g = torch.Generator().manual_seed(3)
    means = (torch.rand(4, 3, generator=g, dtype=torch.float64) - 0.5) * 0.5
    means[:, 2] += 1.5
    scales = torch.rand(4, generator=g, dtype=torch.float64) * 0.05 + 0.03
    opacities = torch.rand(4, generator=g, dtype=torch.float64) * 0.5 + 0.3
    colors = torch.rand(4, 3, generator=g, dtype=torch.float64)
    K = torch.tensor([[6.0, 0, 3.5], [0, 6.5, 2.4], [0, 0, 1]], dtype=torch.float64)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation((1.0, 0.5, 0.0), 0.1)
    inputs = [t.clone().requires_grad_() for t in (means, scales, opacities, colors, pose)]
    background = torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64, requires_grad=True)

    def fn(means, scales, opacities, colors, pose, background):
        out = rasterize(means, scales, opacities, colors, pose, K, W, H, background, backend="cpu")
        return out.rgb, out.alpha, out.depth

    assert torch.autograd.gradcheck(fn, (*inputs, background), eps=1e-6, atol=1e-5, rtol=1e-4)


@needs_compiler
def test_batched_cameras_match_torch_and_one_by_one():
    W, H = 48, 32
    scene, T0, K = frustum_scene(2_000, W, H, seed=5, dtype=torch.float64)
    poses = torch.stack([T0, T0.clone(), T0.clone()])
    poses[1, :3, 3] += torch.tensor([0.3, 0.0, 0.1], dtype=torch.float64)
    poses[2, :3, :3] = rotation((0.0, 1.0, 0.0), 0.15).to(poses) @ poses[2, :3, :3]
    Ks = torch.stack([K, K * torch.tensor([[1.1], [1.1], [1.0]], dtype=K.dtype), K])

    scene32 = [x.float() for x in scene]
    cpu = render_with_grads("cpu", scene32, poses.float(), Ks.float(), W, H)
    assert cpu["rgb"].shape == (3, H, W, 3) and cpu["d_pose"].shape == (3, 4, 4)
    assert_parity(
        cpu, render_with_grads("torch", scene32, poses.float(), Ks.float(), W, H), RELATIVE
    )

    batched = rasterize(*scene, poses, Ks, W, H, backend="cpu")
    for c in range(3):
        single = rasterize(*scene, poses[c], Ks[c], W, H, backend="cpu")
        for name in ("rgb", "alpha", "depth"):
            assert torch.allclose(getattr(batched, name)[c], getattr(single, name), atol=1e-12)


@needs_compiler
def test_results_do_not_depend_on_the_thread_count():
    scene, T_cam_world, K = frustum_scene(3_000, 64, 48, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render_with_grads("cpu", scene, T_cam_world, K, 64, 48)
        torch.set_num_threads(max(2, threads))
        many = render_with_grads("cpu", scene, T_cam_world, K, 64, 48)
    finally:
        torch.set_num_threads(threads)
    for name, value in one.items():
        assert torch.equal(value, many[name]), name


@needs_compiler
def test_empty_and_fully_culled_scenes_render_the_background():
    T_cam_world, K = torch.eye(4), torch.tensor([[10.0, 0, 4.5], [0, 10, 3], [0, 0, 1]])
    bg = torch.tensor([0.1, 0.5, 0.9])
    empty = torch.zeros(0, 3)
    out = rasterize(empty, empty[:, 0], empty[:, 0], empty, T_cam_world, K, 9, 6, bg, "cpu")
    assert torch.equal(out.rgb, bg.expand(6, 9, 3)) and (out.alpha == 0).all()

    behind = torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, 0.005]], requires_grad=True)
    scales = torch.full((2,), 0.5, requires_grad=True)
    out = rasterize(behind, scales, torch.full((2,), 0.9), torch.ones(2, 3), T_cam_world, K, 9, 6)
    assert torch.equal(out.rgb, torch.zeros(6, 9, 3)) and (out.depth == 0).all()
    out.rgb.sum().backward()
    assert torch.equal(behind.grad, torch.zeros(2, 3)) and torch.equal(scales.grad, torch.zeros(2))


@needs_compiler
def test_auto_picks_cpu_for_float32_and_the_reference_for_float64(monkeypatch):
    calls = []
    real = cpu_backend.rasterize_cpu

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_backend, "rasterize_cpu", spy)
    scene, T_cam_world, K = small_scene(seed=2, dtype=torch.float32)
    out = rasterize(*scene, T_cam_world, K, 37, 23)
    assert calls == [torch.float32]
    assert torch.allclose(out.rgb, rasterize(*scene, T_cam_world, K, 37, 23, backend="torch").rgb)
    rasterize(*(x.double() for x in scene), T_cam_world.double(), K.double(), 37, 23)
    assert calls == [torch.float32]


def test_without_a_build_auto_falls_back_to_torch_with_one_warning(monkeypatch):
    reason = "no C++ compiler ('c++' is not on PATH): install g++"
    monkeypatch.setattr(cpu_backend, "_load", lambda: (None, reason))
    cpu_backend._warn_unavailable.cache_clear()
    scene, T_cam_world, K = small_scene(seed=2, dtype=torch.float32)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = rasterize(*scene, T_cam_world, K, 37, 23)
            rasterize(*scene, T_cam_world, K, 37, 23)
        assert len(caught) == 1 and "falls back to the" in str(caught[0].message)
        assert torch.equal(
            first.rgb, rasterize(*scene, T_cam_world, K, 37, 23, backend="torch").rgb
        )
        with pytest.raises(CpuBackendError, match=r"no C\+\+ compiler"):
            rasterize(*scene, T_cam_world, K, 37, 23, backend="cpu")
    finally:
        cpu_backend._warn_unavailable.cache_clear()


def test_a_missing_compiler_is_a_clear_error(tmp_path):
    with pytest.raises(CpuBackendError, match=r"no C\+\+ compiler.*backend='torch'"):
        cpu_backend.build_library(tmp_path / "rasterize.so", compiler="no-such-c++")
    assert not list(tmp_path.iterdir())


@needs_compiler
def test_the_build_is_announced_once_and_then_cached(tmp_path, capsys):
    target = tmp_path / "cache" / "rasterize.so"
    assert cpu_backend.build_library(target) == target
    assert "compiling the CPU rasterizer" in capsys.readouterr().err
    assert [p.name for p in target.parent.iterdir()] == ["rasterize.so"]  # no temporary left
    cpu_backend.build_library(target)
    assert capsys.readouterr().err == ""
    # the library the backend uses lives in torch's extension cache, named by source and flags
    path = cpu_backend.library_path()
    cpu_backend.load_library()
    assert path.exists() and path.parent.name == "fourreal"


@needs_compiler
def test_unsupported_inputs_are_clear_errors():
    scene, T_cam_world, K = small_scene(seed=2, dtype=torch.float32)
    with pytest.raises(ShapeError, match="float32 and float64"):
        rasterize(*(x.half() for x in scene), T_cam_world, K, 37, 23, backend="cpu")
    with pytest.raises(ShapeError, match="tile_size"):
        rasterize(*scene, T_cam_world, K, 37, 23, backend="cpu", tile_size=0)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CPU tensors"):
            rasterize(
                *(x.cuda() for x in scene), T_cam_world.cuda(), K.cuda(), 37, 23, backend="cpu"
            )
