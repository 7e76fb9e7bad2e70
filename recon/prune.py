"""Floater pruning by opacity-optimized re-rendering of the freeze-time column (supplement 6).

Only opacities (and optionally colors) are optimized, rendering each column view with the
points at their tracked positions in that view's own camera frame, so no camera extrinsics are
involved. Points that the column does not need (floaters from bad depth) fade out and are
removed below a threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fourreal.recon.losses import photometric_loss
from fourreal.recon.model import DynamicGaussians
from fourreal.recon.render import rasterize
from fourreal.tracking.pipeline import ColumnTracks


def prune_floaters(
    model: DynamicGaussians,
    tracks: ColumnTracks,
    column: Tensor,
    background: Tensor,
    iterations: int,
    threshold: float,
    colors_too: bool = True,
    backend: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> int:
    """Optimize opacities against the column ``[V, 3, H, W]``; drop Gaussians whose opacity
    ends below ``threshold``. Returns how many were pruned."""
    V, _, H, W = column.shape
    targets = column.permute(0, 2, 3, 1)
    params = [model.opacity_logits] + ([model.color_logits] if colors_too else [])
    optimizer = torch.optim.Adam([{"params": params, "lr": 0.05}])
    g = torch.Generator().manual_seed(seed)
    identity = torch.eye(4)
    per_view = tracks.per_view.float()
    for _ in tqdm(range(iterations), desc="pruning floaters", disable=not progress):
        v = int(torch.randint(V, (1,), generator=g))
        out = rasterize(
            per_view[v], model.scales.detach(), model.opacities, model.colors, identity,
            tracks.K[v].float(), W, H, background, backend=backend,
        )  # fmt: skip
        loss = photometric_loss(out.rgb, targets[v], ssim_weight=0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    keep = model.opacities.detach() >= threshold
    pruned = int((~keep).sum())
    model.keep(keep)
    return pruned
