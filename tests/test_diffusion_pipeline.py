"""Rectified-flow scheduler, sliding windows and the grid pipeline (tiny random models)."""

import pytest
import torch

from fourreal.diffusion.models import DiTConfig, TwoStreamDiT, VideoDiT
from fourreal.diffusion.pipelines import GridPipeline, grid_windows
from fourreal.diffusion.pipelines.windows import axis_starts
from fourreal.diffusion.schedulers import RectifiedFlow
from fourreal.errors import FourrealError

CONFIG = DiTConfig(width=48, depth=2, heads=2, patch=4)


def random_model(sync="soft", seed=0):
    torch.manual_seed(seed)
    model = TwoStreamDiT(VideoDiT(CONFIG), sync)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sampler_follows_a_straight_path_exactly(solver, shift):
    """With the exact velocity ε − x₀ of one data point, any number of steps lands on x₀."""
    scheduler = RectifiedFlow(shift=shift)
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    calls = []

    def velocity(x, sigma):
        calls.append(sigma)
        # the point on the path at sigma is consistent with x
        torch.testing.assert_close(x, scheduler.add_noise(clean, noise, torch.tensor([sigma] * 4)))
        return RectifiedFlow.velocity_target(clean, noise)

    out = scheduler.sample(velocity, noise, steps=3, solver=solver)
    torch.testing.assert_close(out, clean)
    assert len(calls) == (3 if solver == "euler" else 5)


def test_timesteps_and_training_times():
    s = RectifiedFlow(shift=3.0).timesteps(10)
    assert s[0] == 1 and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    assert s[5] > 0.5  # the shift spends more steps at high noise
    t = RectifiedFlow().sample_times(1000, torch.Generator().manual_seed(0))
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.mean()) - 0.5) < 0.05


def test_windows_cover_the_grid_and_overlap():
    assert axis_starts(8, 8, 4) == [0]
    assert axis_starts(12, 8, 4) == [0, 4]
    assert axis_starts(13, 8, 4) == [0, 4, 5]
    windows = grid_windows(10, 13, (8, 8), (4, 4))
    covered = torch.zeros(10, 13, dtype=torch.int64)
    for vs, ts in windows:
        assert vs.stop - vs.start == 8 and ts.stop - ts.start == 8
        covered[vs, ts] += 1
    assert bool((covered >= 1).all())
    assert windows[0] == (slice(0, 8), slice(0, 8))  # the first window holds row 0 and column 0
    with pytest.raises(FourrealError):
        axis_starts(10, 4, 4)


def grid(V=3, T=4, H=8, W=12):
    frames = torch.rand(V, T, 3, H, W, generator=torch.Generator().manual_seed(1))
    known = torch.zeros(V, T, dtype=torch.bool)
    known[0] = True
    known[:, 0] = True
    return frames, known


def test_pipeline_keeps_known_frames_and_is_seeded():
    pipe = GridPipeline(random_model())
    frames, known = grid()
    a = pipe(frames, known, steps=2, seed=3)
    b = pipe(frames, known, steps=2, seed=3)
    c = pipe(frames, known, steps=2, seed=4)
    assert a.shape == frames.shape
    assert torch.equal(a[known], frames[known])
    assert torch.equal(a, b)
    assert not torch.equal(a[~known], c[~known])
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_the_mean_of_samples_varies_less_across_seeds_and_keeps_known_frames():
    pipe = GridPipeline(random_model())
    frames, known = grid()
    one = torch.stack([pipe(frames, known, steps=2, seed=s) for s in range(4)])
    mean = torch.stack([pipe(frames, known, steps=2, seed=s, samples=4) for s in range(4)])
    assert torch.equal(one[0], pipe(frames, known, steps=2, seed=0, samples=1))
    assert torch.equal(mean[0][known], frames[known])
    # the mean of 4 samples estimates the posterior mean: it varies less from seed to seed
    # than one sample (ratio of variances measured 0.47 over these 4 seeds; 1 without averaging)
    ratio = float(mean[:, ~known].var(dim=0).mean() / one[:, ~known].var(dim=0).mean())
    assert ratio < 0.7, ratio
    with pytest.raises(FourrealError, match="samples"):
        pipe(frames, known, steps=1, samples=0)


def test_pipeline_conditions_on_the_known_frames():
    pipe = GridPipeline(random_model())
    frames, known = grid()
    a = pipe(frames, known, steps=2, seed=0)
    changed = frames.clone()
    changed[0, 1] = 1 - changed[0, 1]
    b = pipe(changed, known, steps=2, seed=0)
    assert (a[~known] - b[~known]).abs().max() > 1e-4


def test_pipeline_pads_odd_sizes_in_bf16():
    pipe = GridPipeline(random_model("hard"), window=(2, 3), overlap=(1, 1))
    frames, known = grid(V=4, T=6, H=10, W=13)
    out = pipe(frames, known, steps=1, seed=0, precision="bf16")
    assert out.shape == frames.shape and bool(torch.isfinite(out).all())
    assert torch.equal(out[known], frames[known])
    fp32 = pipe(frames, known, steps=1, seed=0, precision="fp32")
    assert 0 < float((out - fp32).abs().max()) < 0.1  # bf16 really ran, and ran the same model


class Probe(torch.nn.Module):
    """A two-stream model that records what the pipeline hands it at every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.stack, self.calls = model, model.stack, []

    def forward(self, x, sigma, known):
        self.calls.append((x[0].clone(), float(sigma[0]), known[0].clone()))
        return self.model(x, sigma, known)


def test_sliding_windows_condition_on_frames_generated_before():
    """Each later window sees the overlapping frames of earlier windows as known, clean (the
    values those windows produced), and everything the grid knew."""
    probe = Probe(random_model())
    pipe = GridPipeline(probe, window=(2, 3), overlap=(1, 1))
    frames, known = grid(V=3, T=5)
    windows = grid_windows(3, 5, (2, 3), (1, 1))
    assert len(windows) == 4
    out = pipe(frames, known, steps=2, seed=0)
    x0 = out * 2 - 1  # the pipeline's pixel space
    calls = [probe.calls[2 * i : 2 * i + 2] for i in range(len(windows))]  # 2 steps each
    done = known.clone()
    for (vs, ts), window_calls in zip(windows, calls, strict=True):
        for x, _, cond in window_calls:
            assert torch.equal(cond, done[vs, ts])
            # known and earlier-generated frames are given clean: the values of the output
            torch.testing.assert_close(x[cond], x0[vs, ts][cond], atol=1e-5, rtol=0)
        done[vs, ts] = True
    # the second window (views 0-1, times 2-4) reuses time 2 that the first one generated
    assert bool(calls[1][0][2][1, 0]) and not bool(known[1, 2])


def test_window_without_conditions_is_an_error():
    frames, known = grid(V=4, T=4)
    known[:] = False
    known[0, 0] = True
    pipe = GridPipeline(random_model(), window=(2, 2), overlap=(0, 0))
    with pytest.raises(FourrealError, match="no known or generated frame"):
        pipe(frames, known, steps=1)


def test_renoise_conditioning_puts_known_frames_on_the_noise_path():
    probe = Probe(random_model())
    frames, known = grid()
    out = GridPipeline(probe, conditioning="renoise")(frames, known, steps=3, seed=5)
    assert torch.equal(out[known], frames[known])
    clean = frames * 2 - 1
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    sigmas = [sigma for _, sigma, _ in probe.calls]
    assert sigmas == pytest.approx([1.0, 2 / 3, 1 / 3])
    for x, sigma, _ in probe.calls:
        expected = (1 - sigma) * clean + sigma * noise
        torch.testing.assert_close(x[known], expected[known], atol=1e-6, rtol=1e-6)


def test_auto_precision():
    from fourreal.diffusion.pipelines.grid import use_bf16

    assert use_bf16("bf16", torch.device("cpu")) and not use_bf16("fp32", torch.device("cpu"))
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert use_bf16("auto", torch.device("cpu")) == native


def test_pipeline_needs_a_known_frame():
    frames, known = grid()
    with pytest.raises(FourrealError, match="no known frame"):
        GridPipeline(random_model())(frames, torch.zeros_like(known), steps=1)
