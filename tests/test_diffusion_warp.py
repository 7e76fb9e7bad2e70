"""Building blocks of the warp method: splatting, hole filling, motion."""

import math

import pytest
import torch

from fourreal.diffusion.warp.motion import displacement, foreground_masks
from fourreal.diffusion.warp.splat import propagate, pull_push, splat


def test_splat_lands_on_pixel_centers_and_keeps_the_nearest_surface():
    values = torch.tensor([[1.0], [2.0], [3.0]])
    uv = torch.tensor([[2.5, 1.5], [2.5, 1.5], [0.5, 0.5]])  # centers of (2, 1) twice and (0, 0)
    z = torch.tensor([5.0, 2.0, 1.0])
    out = splat(values, uv, z, height=3, width=4)
    assert out.color[0, 1, 2] == 2.0 and out.depth[1, 2] == 2.0  # the nearer point wins
    assert out.color[0, 0, 0] == 3.0
    assert int(out.covered.sum()) == 2


def test_splat_spreads_a_subpixel_point_bilinearly():
    out = splat(torch.ones(1, 1), torch.tensor([[1.0, 1.0]]), torch.ones(1), 3, 3)
    assert torch.allclose(out.weight[:2, :2], torch.full((2, 2), 0.25))


def test_pull_push_fills_holes_and_keeps_known_pixels():
    values = torch.arange(20.0).reshape(1, 4, 5)
    known = torch.ones(4, 5, dtype=torch.bool)
    known[1:3, 1:3] = False
    filled = pull_push(values, known)
    assert torch.equal(filled[:, known], values[:, known])
    assert bool((filled[0, 1:3, 1:3] > 0).all()) and bool((filled[0, 1:3, 1:3] < 19).all())


def test_propagate_stays_on_the_same_surface():
    depth = torch.ones(5, 8)
    depth[:, 4:] = 2.0  # a depth edge between columns 3 and 4
    values = torch.zeros(1, 5, 8)
    values[0, 2, 0] = 7.0
    known = torch.zeros(5, 8, dtype=torch.bool)
    known[2, 0] = True
    out, reached = propagate(values, known, depth)
    assert bool(reached[:, :4].all()) and not bool(reached[:, 4:].any())
    assert torch.allclose(out[0, :, :4], torch.full((5, 4), 7.0))


def test_propagate_with_a_guide_stops_at_color_edges():
    depth = torch.ones(4, 8)  # one flat surface: depth alone would let the value everywhere
    guide = torch.zeros(3, 4, 8)
    guide[:, :, 5:] = 0.5  # a color edge between columns 4 and 5
    values = torch.zeros(1, 4, 8)
    values[0, 0, 0] = 1.0
    known = torch.zeros(4, 8, dtype=torch.bool)
    known[0, 0] = True
    _, reached = propagate(values, known, depth, guide=guide, guide_tol=0.1)
    assert bool(reached[:, :5].all()) and not bool(reached[:, 5:].any())
    _, reached = propagate(values, known, depth)
    assert bool(reached.all())


def test_fill_holes_fills_only_enclosed_background():
    from fourreal.diffusion.warp.motion import _fill_holes

    mask = torch.zeros(8, 10, dtype=torch.bool)
    mask[1:6, 1:6] = True
    mask[2:5, 2:5] = False  # a hole inside the ring
    mask[0:3, 7] = True  # a bar touching the border: the background beside it stays
    filled = _fill_holes(mask)
    assert bool(filled[1:6, 1:6].all())
    assert torch.equal(filled[:, 6:], mask[:, 6:]) and not bool(filled[6:].any())


def textured_square(x, y, size=16, H=64, W=96):
    frame = torch.full((3, H, W), 0.5)
    g = torch.Generator().manual_seed(0)
    frame[:, y : y + size, x : x + size] = torch.rand(3, size, size, generator=g)
    return frame


def test_foreground_and_displacement_follow_a_moving_object():
    row = torch.stack([textured_square(10 + 12 * t, 20 + 3 * t) for t in range(5)])
    fg = foreground_masks(row)
    assert bool(fg[0, 24:32, 14:22].all()) and not bool(fg[0, :, 70:].any())
    d = displacement(row[4], fg[4], row[0], fg[0])
    inside = d[:, 24:40, 62:74].reshape(2, -1)  # the square at t = 4, away from its edges
    assert torch.allclose(inside.median(dim=1).values, torch.tensor([48.0, 12.0]), atol=1.0)


@pytest.mark.slow
def test_warp_beats_both_trivial_baselines_on_every_scene():
    """Issue 7's acceptance figure (bench/generate_warp.py writes the JSON)."""
    from fourreal.diffusion.warp import warp_fill
    from fourreal.synth import SCENES, synth_grid

    def mean_psnr(a, b):
        values = [
            10 * math.log10(1 / float((a[v, t] - b[v, t]).double().pow(2).mean()))
            for v in range(1, 8)
            for t in range(1, 8)
        ]
        return sum(values) / len(values)

    for scene in SCENES:
        truth = synth_grid(scene, seed=0, views=8, times=8, height=144, width=256).frames
        filled, _ = warp_fill(truth[0], truth[:, 0])
        warp = mean_psnr(filled, truth)
        row = mean_psnr(truth[0:1].expand(8, -1, -1, -1, -1), truth)
        column = mean_psnr(truth[:, 0:1].expand(-1, 8, -1, -1, -1), truth)
        assert warp >= max(row, column) + 1.0, (scene, warp, row, column)
