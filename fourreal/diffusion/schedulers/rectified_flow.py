"""Rectified flow (Liu et al. 2022; the paper's §3.3): noising, the velocity target, and Euler
and Heun samplers.

Convention (the same as SD3, Wan and diffusers' ``FlowMatchEulerDiscreteScheduler``): the time
``σ`` runs from 0 (clean data ``x₀``) to 1 (pure noise ``ε``) along the straight path

    x_σ = (1 − σ)·x₀ + σ·ε,

and the model predicts the velocity ``v = dx_σ/dσ = ε − x₀``. Sampling integrates
``dx/dσ = v`` from ``σ = 1`` down to ``σ = 0``, so each step moves ``x`` by ``(σ_next − σ)·v``
(``σ_next < σ``), and the clean estimate at any step is ``x₀ = x_σ − σ·v``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

Solver = Literal["euler", "heun"]
Velocity = Callable[[Tensor, float], Tensor]
"""``velocity(x, sigma) -> v``: the model at one time, on the whole state."""


@dataclass(frozen=True)
class RectifiedFlow:
    """Rectified-flow scheduler. ``shift > 1`` spends more steps at high noise (the
    resolution-dependent time shift of SD3: ``σ' = shift·σ / (1 + (shift − 1)·σ)``)."""

    shift: float = 1.0

    def add_noise(self, clean: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """``x_σ = (1 − σ)·clean + σ·noise``; ``sigma`` broadcasts from the leading axis."""
        s = sigma.reshape(-1, *([1] * (clean.ndim - 1))).to(clean.dtype)
        return (1 - s) * clean + s * noise

    @staticmethod
    def velocity_target(clean: Tensor, noise: Tensor) -> Tensor:
        """What the model learns to predict: ``ε − x₀``."""
        return noise - clean

    def sample_times(
        self, n: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0
    ) -> Tensor:
        """Training times from the logit-normal distribution (SD3), ``[n]`` in (0, 1)."""
        u = torch.randn(n, generator=generator) * std + mean
        return self._shifted(torch.sigmoid(u))

    def timesteps(self, steps: int) -> Tensor:
        """``steps + 1`` times from 1 down to 0 (uniform, then shifted)."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return self._shifted(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))

    def _shifted(self, sigma: Tensor) -> Tensor:
        if self.shift == 1.0:
            return sigma
        return self.shift * sigma / (1 + (self.shift - 1) * sigma)

    def sample(
        self,
        velocity: Velocity,
        noise: Tensor,
        steps: int = 20,
        solver: Solver = "euler",
        progress: bool = False,
        description: str = "sampling",
    ) -> Tensor:
        """Integrate from ``noise`` (σ = 1) to σ = 0 and return the clean sample.

        Euler takes one model call per step; Heun two (the last step, which ends at σ = 0,
        is Euler, as in Karras et al. 2022)."""
        sigmas = self.timesteps(steps).tolist()
        x = noise
        pairs = list(itertools.pairwise(sigmas))
        for sigma, sigma_next in tqdm(pairs, desc=description, disable=not progress, leave=False):
            v = velocity(x, sigma)
            x_next = x + (sigma_next - sigma) * v
            if solver == "heun" and sigma_next > 0:
                v_next = velocity(x_next, sigma_next)
                x_next = x + (sigma_next - sigma) * 0.5 * (v + v_next)
            x = x_next
        return x
