"""Multi-view tracks by chaining neighbour flow along the freeze-time column."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fourreal.tracking.flow import sample


def chain(
    start: int,
    points: Float[Tensor, "M 2"],
    forward: Tensor,
    backward: Tensor,
    ok_forward: Tensor,
    ok_backward: Tensor,
) -> tuple[Float[Tensor, "V M 2"], Bool[Tensor, "V M"]]:
    """Follow ``points`` of view ``start`` to every other view through consecutive flows.

    Positions are in flow (index) coordinates: pixel ``(i, j)`` at ``(i, j)``. A track ends at
    the first hop whose flow is not forward–backward consistent; its positions beyond stay where
    they ended and are marked invisible.
    """
    V = forward.shape[0] + 1
    M = points.shape[0]
    pos = torch.zeros(V, M, 2, dtype=points.dtype)
    vis = torch.zeros(V, M, dtype=torch.bool)
    pos[start], vis[start] = points, True
    for step, hops in ((1, range(start, V - 1)), (-1, range(start, 0, -1))):
        current, alive = points, torch.ones(M, dtype=torch.bool)
        for v in hops:
            if step == 1:
                flow, ok = forward[v], ok_forward[v]
            else:
                flow, ok = backward[v - 1], ok_backward[v - 1]
            at = current[None]
            trusted = sample(ok[None, None].to(points.dtype), at)[0, :, 0] > 0.99
            current = current + sample(flow[None], at)[0]
            alive = alive & trusted
            pos[v + step], vis[v + step] = current, alive
    return pos, vis


def pixel_grid(height: int, width: int, stride: int, offset: int = 0) -> Tensor:
    """Index coordinates ``[M, 2]`` (x, y) of every ``stride``-th pixel."""
    ys = torch.arange(offset, height, stride, dtype=torch.float32)
    xs = torch.arange(offset, width, stride, dtype=torch.float32)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1)
