import math

import pytest
import torch

from fourreal.recon.render import rasterize

from reference_render import render_dense


def look_at(eye, target=(0.0, 0.0, 0.0)):
    """T_cam_world of an OpenCV camera at ``eye`` looking at ``target`` (z up)."""
    eye = torch.tensor(eye, dtype=torch.float64)
    forward = torch.tensor(target, dtype=torch.float64) - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    T_world_cam = torch.eye(4, dtype=torch.float64)
    T_world_cam[:3, :3] = torch.stack([right, down, forward], 1)
    T_world_cam[:3, 3] = eye
    return torch.linalg.inv(T_world_cam)


def random_scene(n, seed, dtype=torch.float64, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * spread
    scales = torch.exp(torch.empty(n, dtype=dtype).uniform_(-4.5, -1.5, generator=g))
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.98 + 0.01
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return means, scales, opacities, colors


def camera(width, height, fov_deg=60.0, eye=(0.3, -3.0, 0.8), dtype=torch.float64):
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f * 1.1, height / 2 - 1.3], [0, 0, 1]], dtype=dtype)
    return look_at(eye).to(dtype), K


def hard_scene(seed=0):
    """Random Gaussians plus the cases the contract singles out."""
    means, scales, opacities, colors = random_scene(60, seed)
    extra_means = torch.tensor(
        [
            [0.0, -4.0, 0.8],  # behind the camera
            [0.0, -2.995, 0.8],  # in front of the camera but closer than the near plane
            [0.1, 0.0, 0.1],  # huge
            [-0.2, 0.3, 0.0],  # tiny
        ],
        dtype=torch.float64,
    )
    # an opaque stack: the pixels under it stop early (T < 1e-4)
    stack = torch.tensor([[0.4, -1.0 + 0.05 * k, 0.5] for k in range(8)], dtype=torch.float64)
    means = torch.cat([means, extra_means, stack])
    scales = torch.cat([scales, torch.tensor([0.3, 0.2, 3.0, 1e-5]), torch.full((8,), 0.15)])
    opacities = torch.cat([opacities, torch.tensor([0.9, 0.9, 0.5, 0.9]), torch.full((8,), 0.99)])
    colors = torch.cat([colors, torch.rand(12, 3, dtype=torch.float64)])
    return means, scales, opacities, colors


@pytest.mark.parametrize("tile_size", [1, 3, 8, 16])
def test_tiled_matches_dense_reference_whatever_the_tile_size(tile_size):
    W, H = 37, 23
    scene = hard_scene(1)
    T_cam_world, K = camera(W, H)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    out = rasterize(*scene, T_cam_world, K, W, H, bg, backend="torch", tile_size=tile_size)
    ref = render_dense(*scene, T_cam_world, K, W, H, bg)
    assert (ref[1] > 0.99).any(), "the scene should have opaque pixels"
    for got, want in zip((out.rgb, out.alpha, out.depth), ref, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-6


def test_many_gaussians_per_tile_span_several_slices():
    W, H = 16, 12
    means, scales, opacities, colors = random_scene(300, 5, spread=0.3)
    opacities = opacities * 0.2  # faint, so pixels rarely stop and every slice counts
    T_cam_world, K = camera(W, H, eye=(0.0, -2.0, 0.0))
    out = rasterize(means, scales * 3, opacities, colors, T_cam_world, K, W, H, backend="torch")
    ref = render_dense(means, scales * 3, opacities, colors, T_cam_world, K, W, H, torch.zeros(3))
    assert (out.rgb - ref[0]).abs().max() < 1e-6
    assert (out.depth - ref[2]).abs().max() < 1e-6


def test_float32_matches_float64():
    W, H = 40, 30
    scene = hard_scene(2)
    T_cam_world, K = camera(W, H)
    out64 = rasterize(*scene, T_cam_world, K, W, H)
    out32 = rasterize(*(x.float() for x in scene), T_cam_world.float(), K.float(), W, H)
    assert out32.rgb.dtype == torch.float32
    assert (out32.rgb.double() - out64.rgb).abs().max() < 1e-3


def test_gradcheck_on_a_tiny_scene():
    W, H = 7, 5
    means, scales, opacities, colors = random_scene(4, 3, spread=0.25)
    opacities = opacities.clamp(0.3, 0.8)
    T_cam_world, K = camera(W, H, fov_deg=50, eye=(0.0, -1.5, 0.0))
    inputs = [t.clone().requires_grad_() for t in (means, scales * 2, opacities, colors)]
    pose = T_cam_world.clone().requires_grad_()

    def fn(means, scales, opacities, colors, pose):
        out = rasterize(means, scales, opacities, colors, pose, K, W, H, backend="torch")
        return out.rgb, out.alpha, out.depth

    assert torch.autograd.gradcheck(fn, (*inputs, pose), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_empty_scene_renders_the_background():
    T_cam_world, K = camera(9, 6)
    bg = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    empty = torch.zeros(0, 3, dtype=torch.float64)
    out = rasterize(empty, empty[:, 0], empty[:, 0], empty, T_cam_world, K, 9, 6, bg)
    assert torch.equal(out.rgb, bg.expand(6, 9, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()


def test_one_gaussian_gives_the_analytic_image():
    W, H, f, z0, s, o = 21, 15, 30.0, 2.0, 0.05, 0.8
    K = torch.tensor([[f, 0, 10.5], [0, f, 7.5], [0, 0, 1]], dtype=torch.float64)
    T_cam_world = torch.eye(4, dtype=torch.float64)
    color = torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64)
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    out = rasterize(
        torch.tensor([[0.0, 0.0, z0]], dtype=torch.float64),
        torch.tensor([s], dtype=torch.float64),
        torch.tensor([o], dtype=torch.float64),
        color, T_cam_world, K, W, H, bg,
    )  # fmt: skip
    # on the optical axis J = diag(f/z, f/z): Σ = (s f / z)² I + 0.3 I
    var = (s * f / z0) ** 2 + 0.3
    j, i = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    m = ((i - 10.5) ** 2 + (j - 7.5) ** 2).double() / var
    alpha = torch.clamp(o * torch.exp(-0.5 * m), max=0.99)
    alpha = torch.where((m <= 9) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    assert torch.allclose(out.alpha[..., 0], alpha, atol=1e-12)
    assert torch.allclose(out.rgb, alpha[..., None] * color + (1 - alpha[..., None]) * bg)
    assert torch.allclose(out.depth[..., 0], alpha * z0)
    # the pixel center (10.5, 7.5) sits on the mean; the 3σ cut leaves the corners empty
    assert out.alpha.max() == pytest.approx(o) and (out.alpha == 0).sum() > 0


def test_permuting_the_gaussians_changes_nothing():
    W, H = 30, 20
    scene = hard_scene(4)
    perm = torch.randperm(scene[0].shape[0], generator=torch.Generator().manual_seed(0))
    T_cam_world, K = camera(W, H)
    a = rasterize(*scene, T_cam_world, K, W, H)
    b = rasterize(*(x[perm] for x in scene), T_cam_world, K, W, H)
    assert torch.allclose(a.rgb, b.rgb, atol=1e-12) and torch.allclose(a.depth, b.depth, atol=1e-12)


def test_a_gaussian_behind_the_camera_contributes_nothing():
    W, H = 30, 20
    means, scales, opacities, colors = random_scene(40, 6)
    T_cam_world, K = camera(W, H)
    a = rasterize(means, scales, opacities, colors, T_cam_world, K, W, H)
    behind = torch.tensor([[0.3, -3.5, 0.8], [0.3, -3.0, 0.8]], dtype=torch.float64)
    b = rasterize(
        torch.cat([means, behind]), torch.cat([scales, torch.tensor([0.5, 0.5])]),
        torch.cat([opacities, torch.tensor([0.95, 0.95])]),
        torch.cat([colors, torch.ones(2, 3)]), T_cam_world, K, W, H,
    )  # fmt: skip
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)


def test_batched_cameras_equal_one_by_one():
    W, H = 24, 18
    scene = random_scene(80, 7)
    poses, Ks = zip(
        *(camera(W, H, eye=eye) for eye in [(0.3, -3, 0.8), (2, -2, 1), (-3, 0.5, 0)]), strict=True
    )
    batched = rasterize(*scene, torch.stack(poses), torch.stack(Ks), W, H)
    assert batched.rgb.shape == (3, H, W, 3)
    for c in range(3):
        single = rasterize(*scene, poses[c], Ks[c], W, H)
        # equal up to float64 rounding (batched matrix products may sum in another order)
        assert torch.allclose(batched.rgb[c], single.rgb, rtol=0, atol=1e-12)
        assert torch.allclose(batched.depth[c], single.depth, rtol=0, atol=1e-12)


def test_gsplat_needs_cuda_and_auto_falls_back_to_torch():
    scene = random_scene(10, 8)
    T_cam_world, K = camera(8, 8)
    with pytest.raises(RuntimeError, match="needs CUDA"):
        rasterize(*scene, T_cam_world, K, 8, 8, backend="gsplat")
    auto = rasterize(*scene, T_cam_world, K, 8, 8, backend="auto")
    ref = rasterize(*scene, T_cam_world, K, 8, 8, backend="torch")
    assert torch.equal(auto.rgb, ref.rgb)


def test_wrong_shapes_are_clear_errors():
    scene = list(random_scene(10, 8))
    T_cam_world, K = camera(8, 8)
    scene[1] = scene[1][:5]
    with pytest.raises(ValueError, match="scales must have shape"):
        rasterize(*scene, T_cam_world, K, 8, 8)


def psnr(a, b):
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_fitting_random_gaussians_to_a_target_reaches_30_db():
    torch.manual_seed(0)
    W, H = 64, 48
    T_cam_world, K = camera(W, H, eye=(0.0, -2.6, 0.0), dtype=torch.float32)
    target_scene = random_scene(2000, 10, dtype=torch.float32, spread=0.8)
    target = rasterize(*target_scene, T_cam_world, K, W, H).rgb.detach()
    means, scales, opacities, colors = random_scene(2000, 11, dtype=torch.float32, spread=0.8)
    params = {
        "means": means.clone().requires_grad_(),
        "log_scales": scales.log().clone().requires_grad_(),
        "logit_opacities": torch.logit(opacities).clone().requires_grad_(),
        "logit_colors": torch.logit(colors.clamp(0.02, 0.98)).clone().requires_grad_(),
    }
    opt = torch.optim.Adam(
        [
            {"params": [params["means"]], "lr": 2e-3},
            {"params": [params["log_scales"]], "lr": 1e-2},
            {"params": [params["logit_opacities"], params["logit_colors"]], "lr": 5e-2},
        ]
    )

    def render():
        return rasterize(
            params["means"], params["log_scales"].exp(), torch.sigmoid(params["logit_opacities"]),
            torch.sigmoid(params["logit_colors"]), T_cam_world, K, W, H,
        ).rgb  # fmt: skip

    start = psnr(render().detach(), target)
    for _ in range(300):
        opt.zero_grad()
        loss = (render() - target).abs().mean()
        loss.backward()
        opt.step()
    end = psnr(render().detach(), target)
    assert start < 20
    assert end > 30, f"PSNR {start:.1f} -> {end:.1f} dB"


@pytest.mark.cuda
def test_gsplat_matches_torch_backend_on_cuda():
    pytest.importorskip("gsplat")
    W, H = 64, 48
    means, scales, opacities, colors = random_scene(500, 12, dtype=torch.float32)
    opacities = opacities.clamp(max=0.95)
    T_cam_world, K = camera(W, H, dtype=torch.float32)
    outs, grads = [], []
    for backend in ("torch", "gsplat"):
        inputs = [x.cuda().requires_grad_() for x in (means, scales, opacities, colors)]
        out = rasterize(*inputs, T_cam_world.cuda(), K.cuda(), W, H, backend=backend)
        (out.rgb.sum() + out.depth.sum()).backward()
        outs.append(out)
        grads.append([x.grad for x in inputs])
    assert (outs[0].rgb - outs[1].rgb).abs().mean() < 2e-3
    assert (outs[0].alpha - outs[1].alpha).abs().mean() < 2e-3
    for g_torch, g_gsplat in zip(*grads, strict=True):
        cos = torch.nn.functional.cosine_similarity(g_torch.flatten(), g_gsplat.flatten(), dim=0)
        assert cos > 0.95
