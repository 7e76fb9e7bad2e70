"""Architecture of the generator: the base DiT, the two-stream model and its sync layers."""

import itertools

import pytest
import torch

from fourreal.diffusion.models import CONFIGS, DiTConfig, TwoStreamDiT, VideoDiT
from fourreal.diffusion.models.dit import build_on_meta, count_parameters
from fourreal.diffusion.models.sync import weighted_sync, weighted_weight

SMALL = DiTConfig(width=48, depth=2, heads=2, patch=4)


def random_stack(config=SMALL, seed=0):
    """A base model whose zero-initialized layers are randomized too, so that no block is the
    identity and every comparison below is a real one."""
    torch.manual_seed(seed)
    stack = VideoDiT(config)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return stack.eval()


def randomize(module, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def grid_inputs(B=1, V=3, T=4, H=8, W=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, T, 3, H, W, generator=g)
    sigma = torch.rand(B, generator=g)
    known = torch.zeros(B, V, T, dtype=torch.bool)
    known[:, 0] = True
    known[:, :, 0] = True
    return x, sigma, known


def test_parameter_counts():
    assert count_parameters(build_on_meta(CONFIGS["tiny"])) < 10e6
    base = count_parameters(build_on_meta(CONFIGS["base"]))
    assert 0.54e9 < base < 0.66e9, base  # the paper's ≈600M base video model
    assert CONFIGS["base"].depth == 24 and CONFIGS["base"].width == 1024


def test_new_base_model_outputs_zero():
    """adaLN-Zero: a freshly built model is the identity in every block and predicts 0."""
    model = VideoDiT(SMALL)
    x = torch.randn(2, 3, 3, 8, 8)
    out = model(x, torch.rand(2), torch.zeros(2, 3, dtype=torch.bool))
    assert out.shape == x.shape and out.abs().max() == 0


def test_soft_sync_at_init_equals_two_independent_streams():
    stack = random_stack()
    model = TwoStreamDiT(stack, "soft").eval()
    x, sigma, known = grid_inputs()
    B, V, T, C, H, W = x.shape
    with torch.no_grad():
        out = model(x, sigma, known)
        # the view stream alone: every column (fixed t) as a freeze-time video
        cols = x.transpose(1, 2).reshape(B * T, V, C, H, W)
        view = stack(
            cols, sigma.repeat_interleave(T), known.transpose(1, 2).reshape(B * T, V), "freeze"
        )
        view = view.reshape(B, T, V, C, H, W).transpose(1, 2)
        # the time stream alone: every row (fixed v) as a dynamic video
        rows = x.reshape(B * V, T, C, H, W)
        time = stack(rows, sigma.repeat_interleave(V), known.reshape(B * V, T), "dynamic")
        time = time.reshape(B, V, T, C, H, W)
    torch.testing.assert_close(out, 0.5 * (view + time), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sync", ["soft", "hard", "average", "weighted", "sequential"])
def test_one_view_or_one_time_reduces_to_the_base_model(sync):
    stack = random_stack()
    model = TwoStreamDiT(stack, sync)
    randomize(getattr(model, "syncs", torch.nn.Module()))
    model.eval()
    with torch.no_grad():
        x, sigma, known = grid_inputs(B=2, V=1, T=5)
        expected = stack(x[:, 0], sigma, known[:, 0], "dynamic")
        torch.testing.assert_close(model(x, sigma, known)[:, 0], expected, rtol=1e-5, atol=1e-5)
        x, sigma, known = grid_inputs(B=2, V=4, T=1)
        expected = stack(x[:, :, 0], sigma, known[:, :, 0], "freeze")
        torch.testing.assert_close(model(x, sigma, known)[:, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_hard_sync_at_init_is_the_average_of_eq_12():
    stack = random_stack()
    x, sigma, known = grid_inputs()
    with torch.no_grad():
        hard = TwoStreamDiT(stack, "hard").eval()(x, sigma, known)
        average = TwoStreamDiT(stack, "average").eval()(x, sigma, known)
    torch.testing.assert_close(hard, average, rtol=1e-5, atol=1e-5)


def test_training_free_sync_equations():
    y_v, y_t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    x_v, x_t = weighted_sync(y_v, y_t, 0.3)
    torch.testing.assert_close(x_v, 0.7 * y_v + 0.3 * y_t)
    torch.testing.assert_close(x_t, 0.7 * y_t + 0.3 * y_v)
    L = 24
    weights = [weighted_weight(i, L) for i in range(L)]
    assert weights[0] == pytest.approx(0.1 + 0.4 / L)
    assert weights[-1] == pytest.approx(0.5)  # the last block averages: Eq. 12
    assert all(b > a for a, b in itertools.pairwise(weights))


def test_weighted_and_sequential_match_their_equations_block_by_block():
    """Re-derive Eq. 13 and Eq. 5 for a one-block stack from the stack's own calls."""
    stack = random_stack(DiTConfig(width=48, depth=1, heads=2, patch=4))
    x, sigma, known = grid_inputs(V=3, T=2)
    B, V, T, C, H, W = x.shape
    size = (H, W)
    cond_v = stack.condition(
        sigma.repeat_interleave(T), known.transpose(1, 2).reshape(-1, V), "freeze", size
    )
    cond_t = stack.condition(sigma.repeat_interleave(V), known.reshape(-1, T), "dynamic", size)

    def as_view(tok):
        return tok.transpose(1, 2).reshape(B * T, V, *tok.shape[3:])

    def from_view(seq):
        return seq.reshape(B, T, V, *seq.shape[2:]).transpose(1, 2)

    with torch.no_grad():
        tok = stack.embed(x.reshape(B * V, T, C, H, W)).reshape(B, V, T, -1, stack.width)
        y_v = from_view(stack.block(0, as_view(tok), cond_v))
        y_t = stack.block(0, tok.reshape(B * V, T, *tok.shape[3:]), cond_t).reshape(tok.shape)
        w = 0.5  # w_L for the last (only) block
        x_v, x_t = (1 - w) * y_v + w * y_t, (1 - w) * y_t + w * y_v
        out_v = from_view(stack.head(as_view(x_v), cond_v))
        out_t = stack.head(x_t.reshape(B * V, T, *tok.shape[3:]), cond_t).reshape(x.shape)
        expected = 0.5 * (out_v + out_t)
        torch.testing.assert_close(TwoStreamDiT(stack, "weighted")(x, sigma, known), expected)
        # with w = ½ both streams become ½(y_v + y_t): Eq. 12, the average sync
        torch.testing.assert_close(TwoStreamDiT(stack, "average")(x, sigma, known), expected)

        seq_in = from_view(stack.block(0, as_view(tok), cond_v))
        seq = stack.block(0, seq_in.reshape(B * V, T, *tok.shape[3:]), cond_t).reshape(tok.shape)
        out_v = from_view(stack.head(as_view(seq), cond_v))
        out_t = stack.head(seq.reshape(B * V, T, *tok.shape[3:]), cond_t).reshape(x.shape)
        expected = 0.5 * (out_v + out_t)
        torch.testing.assert_close(TwoStreamDiT(stack, "sequential")(x, sigma, known), expected)


@pytest.mark.parametrize("sync", ["soft", "hard", "average", "weighted", "sequential"])
def test_outputs_do_not_depend_on_batching_or_chunking(sync):
    stack = random_stack()
    model = TwoStreamDiT(stack, sync)
    randomize(getattr(model, "syncs", torch.nn.Module()))
    model.eval()
    x, sigma, known = grid_inputs(B=2)
    known[1, 1, 2] = True  # the two grids differ in their known frames too
    with torch.no_grad():
        batched = model(x, sigma, known)
        for b in range(2):
            alone = model(x[b : b + 1], sigma[b : b + 1], known[b : b + 1])
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-5, atol=1e-5)
        model.max_sequences = 1
        torch.testing.assert_close(model(x, sigma, known), batched, rtol=1e-5, atol=1e-5)


def test_known_flag_and_context_change_the_output():
    stack = random_stack()
    x, sigma, known = grid_inputs()
    with torch.no_grad():
        a = stack(x[:, 0], sigma, known[:, 0], "dynamic")
        b = stack(x[:, 0], sigma, ~known[:, 0], "dynamic")
        c = stack(x[:, 0], sigma, known[:, 0], "freeze")
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4


def test_frames_must_be_patch_multiples():
    from fourreal.errors import FourrealError

    with pytest.raises(FourrealError, match="patch size"):
        VideoDiT(SMALL)(
            torch.zeros(1, 2, 3, 10, 8), torch.zeros(1), torch.zeros(1, 2, dtype=torch.bool)
        )
