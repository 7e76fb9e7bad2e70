"""The two-stream grid model (paper §3.2, Eq. 4): one block stack, two token streams, sync.

Grid tokens are ``[B, V, T, N, C]``. At each block ``l`` the *view stream* runs the block over
the ``B·T`` freeze-time sequences (along ``v`` at fixed ``t``, freeze-time context) and the
*time stream* over the ``B·V`` fixed-view sequences (along ``t`` at fixed ``v``, dynamic
context): two batched calls of the same weights, then a sync layer (:mod:`.sync`). The output
is the mean of the stack's head on both streams. A stream whose sequences would be one frame
long (a grid of one view, or of one time) carries no cross-frame information and is not run,
so such a grid is exactly the base model on its one video.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fourreal.diffusion.models.dit import BlockStack
from fourreal.diffusion.models.sync import (
    SYNC_KINDS,
    HardSync,
    SigmaEmbedding,
    SoftSync,
    SyncKind,
    average_sync,
    weighted_sync,
    weighted_weight,
)
from fourreal.errors import FourrealError


class TwoStreamDiT(nn.Module):
    """Two-stream model over a grid, wrapping any :class:`BlockStack` (the base
    :class:`~fourreal.diffusion.models.dit.VideoDiT`, or a pretrained adapter).

    ``max_sequences`` caps how many sequences one block call processes (memory); the result
    does not depend on it.
    """

    def __init__(
        self, stack: BlockStack, sync: SyncKind = "soft", max_sequences: int | None = None
    ) -> None:
        super().__init__()
        if sync not in SYNC_KINDS:
            raise FourrealError(f"unknown sync {sync!r}; choose one of {', '.join(SYNC_KINDS)}")
        self.stack = stack
        self.sync = sync
        self.max_sequences = max_sequences
        if sync in ("soft", "hard"):
            layer = SoftSync if sync == "soft" else HardSync
            self.sigma_embed = SigmaEmbedding()
            self.syncs = nn.ModuleList(layer(stack.width) for _ in range(stack.num_blocks))

    def forward(
        self,
        grid: Float[Tensor, "B V T C H W"],
        sigma: Float[Tensor, " B"],
        known: Bool[Tensor, "B V T"],
    ) -> Float[Tensor, "B V T C H W"]:
        """Velocity of every frame of ``B`` grids (values in [-1, 1]; known frames clean)."""
        B, V, T, C, H, W = grid.shape
        tokens = self.stack.embed(grid.reshape(B * V, T, C, H, W))
        tokens = tokens.reshape(B, V, T, *tokens.shape[2:])
        view = _Stream(self, "freeze", sigma, known.transpose(1, 2), (H, W), transpose=True)
        time = _Stream(self, "dynamic", sigma, known, (H, W), transpose=False)
        if V == 1 or T == 1:
            stream = view if T == 1 and V > 1 else time
            x = tokens
            for index in range(self.stack.num_blocks):
                x = stream.block(index, x)
            return stream.head(x)

        sigma_emb = None
        if hasattr(self, "sigma_embed"):
            sigma_emb = self.sigma_embed(sigma).reshape(B, 1, 1, 1, -1)
        x_v = x_t = tokens
        for index in range(self.stack.num_blocks):
            if self.sync == "sequential":  # Eq. 5
                x_v = x_t = time.block(index, view.block(index, x_v))
                continue
            y_v, y_t = view.block(index, x_v), time.block(index, x_t)  # Eq. 4
            if self.sync == "average":
                x_v, x_t = average_sync(y_v, y_t)
            elif self.sync == "weighted":
                x_v, x_t = weighted_sync(y_v, y_t, weighted_weight(index, self.stack.num_blocks))
            else:
                x_v, x_t = self.syncs[index](y_v, y_t, sigma_emb.to(y_v.dtype))
        return 0.5 * (view.head(x_v) + time.head(x_t))


class _Stream:
    """One stream's view of the grid: sequences along ``v`` (``transpose``) or along ``t``."""

    def __init__(
        self,
        model: TwoStreamDiT,
        context: str,
        sigma: Tensor,
        known: Tensor,
        size: tuple[int, int],
        transpose: bool,
    ) -> None:
        B, S_per, F = known.shape  # [B, sequences per grid, frames per sequence]
        self.model, self.transpose = model, transpose
        self.cond = model.stack.condition(
            sigma.repeat_interleave(S_per), known.reshape(B * S_per, F), context, size
        )

    def _sequences(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2) if self.transpose else x
        return x.reshape(-1, *x.shape[2:])

    def _grid(self, seq: Tensor, like: Tensor) -> Tensor:
        B, V, T = like.shape[:3]
        if self.transpose:
            return seq.reshape(B, T, V, *seq.shape[2:]).transpose(1, 2)
        return seq.reshape(B, V, T, *seq.shape[2:])

    def block(self, index: int, x: Tensor) -> Tensor:
        def run(seq: Tensor, cond: Any) -> Tensor:
            return self.model.stack.block(index, seq, cond)

        return self._grid(self._chunked(run, self._sequences(x)), x)

    def head(self, x: Tensor) -> Tensor:
        return self._grid(self._chunked(self.model.stack.head, self._sequences(x)), x)

    def _chunked(self, fn: Callable[[Tensor, Any], Tensor], seq: Tensor) -> Tensor:
        n = seq.shape[0]
        size = self.model.max_sequences or n
        outs = [
            fn(seq[start : start + size], _slice(self.cond, start, start + size, n))
            for start in range(0, n, size)
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def _slice(cond: Any, start: int, stop: int, n: int) -> Any:
    """The conditioning of sequences ``start:stop``: tensors with a leading axis of ``n``
    sequences are sliced, everything else is shared."""
    if isinstance(cond, Tensor):
        return cond[start:stop] if cond.ndim and cond.shape[0] == n else cond
    if isinstance(cond, dict):
        return {k: _slice(v, start, stop, n) for k, v in cond.items()}
    if isinstance(cond, tuple | list):
        return type(cond)(_slice(v, start, stop, n) for v in cond)
    return cond
