"""The training objective: random masks of known frames and the rectified-flow velocity loss
on the unknown frames (paper §3.3; design.md §4).

Known frames are given clean and flagged (the model's per-frame known embedding); unknown
frames are noised to ``x_σ = (1 − σ)·x₀ + σ·ε`` and the model learns ``v = ε − x₀`` on them
(:mod:`fourreal.diffusion.schedulers.rectified_flow`).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fourreal.diffusion.schedulers import RectifiedFlow
from fourreal.types import row_and_column


def random_known(
    batch: int, views: int, times: int, generator: torch.Generator
) -> Bool[Tensor, "B V T"]:
    """Random masks of known frames, at least one frame unknown in each.

    Half of a grid batch gets the generation task (row 0 and column 0 known, as
    :class:`~fourreal.diffusion.pipelines.GridPipeline` conditions); the rest gets each frame
    known with a probability drawn per sample from [0, 0.6) (nothing known: unconditional).
    Single videos (one view or one time) get a random prefix of known frames, or a random
    subset."""
    u = torch.rand(batch, generator=generator)
    p = torch.rand(batch, 1, 1, generator=generator) * 0.6
    known = torch.rand(batch, views, times, generator=generator) < p
    frames = max(views, times)
    if views > 1 and times > 1:
        known[u < 0.5] = row_and_column(views, times)
    else:
        prefix = torch.randint(0, frames, (batch,), generator=generator)
        seq = torch.arange(frames)[None] < prefix[:, None]  # [B, F]
        known = torch.where((u < 0.5)[:, None, None], seq.reshape(batch, views, times), known)
    # never all known: free one random frame where that happened
    full = known.reshape(batch, -1).all(dim=1)
    if bool(full.any()):
        pick = torch.randint(0, views * times, (batch,), generator=generator)
        flat = known.reshape(batch, -1).clone()
        flat[full, pick[full]] = False
        known = flat.reshape(batch, views, times)
    return known


def masked_velocity_loss(
    model: nn.Module,
    clean: Float[Tensor, "B V T C H W"],
    known: Bool[Tensor, "B V T"],
    generator: torch.Generator,
    scheduler: RectifiedFlow | None = None,
) -> Tensor:
    """Mean squared velocity error over the unknown frames (``clean`` in [-1, 1]).

    The noise and the times come from ``generator`` (times logit-normal, one per grid)."""
    scheduler = scheduler or RectifiedFlow()
    B = clean.shape[0]
    sigma = scheduler.sample_times(B, generator).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    noisy = scheduler.add_noise(clean, noise, sigma)
    mask = known[..., None, None, None].to(clean.device)
    x = torch.where(mask, clean, noisy)
    pred = model(x, sigma, known.to(clean.device)).float()
    error = (pred - scheduler.velocity_target(clean, noise)).square().mean(dim=(-3, -2, -1))
    unknown = (~known).to(error.device, error.dtype)
    return (error * unknown).sum() / unknown.sum().clamp(min=1)
