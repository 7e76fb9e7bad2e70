"""Optional learned monocular depth (e.g. Depth Anything via transformers), from a local folder.

Nothing is downloaded: the model loads only from a path the user gives, and only from
safetensors weights. Its output (relative inverse depth, up to scale and shift) is aligned to
the triangulated depth by a robust least-squares fit of scale and shift in inverse depth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fourreal.errors import FourrealError

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class MonoDepth:
    """A depth-estimation model of transformers (``AutoModelForDepthEstimation``) on disk."""

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FourrealError(
                f"{path} is not a model folder (config.json and model.safetensors expected); "
                "give the local folder of a transformers depth model such as Depth Anything"
            )
        try:
            from transformers import AutoModelForDepthEstimation
        except ImportError as err:
            raise FourrealError(
                "monocular depth needs transformers: pip install 'fourreal[mono]'"
            ) from err
        try:
            self.model = AutoModelForDepthEstimation.from_pretrained(
                path, local_files_only=True, use_safetensors=True
            )
        except (OSError, ValueError) as err:
            raise FourrealError(f"could not load the depth model in {path}: {err}") from err
        self.model.eval().to(device)
        self.device = device
        pre = {}
        if (path / "preprocessor_config.json").is_file():
            pre = json.loads((path / "preprocessor_config.json").read_text())
        self.mean = torch.tensor(pre.get("image_mean", _IMAGENET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("image_std", _IMAGENET_STD)).view(1, 3, 1, 1)
        self.height = int(pre.get("size", {}).get("height", 518))
        self.multiple = int(pre.get("ensure_multiple_of", 14))

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> Tensor:
        """Relative inverse depth ``[V, H, W]`` of frames ``[V, 3, H, W]`` in [0, 1]."""
        H, W = frames.shape[-2:]
        h = max(self.multiple, round(self.height / self.multiple) * self.multiple)
        w = max(self.multiple, round(self.height * W / H / self.multiple) * self.multiple)
        x = F.interpolate(frames.float(), size=(h, w), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).to(self.device)
        out = self.model(pixel_values=x).predicted_depth  # [V, h', w']
        return F.interpolate(out[:, None].float().cpu(), size=(H, W), mode="bilinear")[:, 0]


def align_inverse_depth(disparity: Tensor, depth: Tensor, iterations: int = 3) -> Tensor:
    """Depth from relative inverse depth ``disparity [H, W]``: scale and shift fitted so that
    ``s·disparity + b ≈ 1/depth`` where ``depth > 0`` (least squares, refit on the best 80%).
    Pixels whose aligned inverse depth is not positive get 0."""
    mask = depth > 0
    if int(mask.sum()) < 10:
        return torch.zeros_like(depth)
    x = disparity[mask].double()
    y = 1 / depth[mask].double()
    use = torch.ones_like(x, dtype=torch.bool)
    for _ in range(iterations):
        A = torch.stack([x[use], torch.ones_like(x[use])], -1)
        s, b = torch.linalg.lstsq(A, y[use][:, None]).solution[:, 0]
        err = (s * x + b - y).abs()
        use = err <= err.quantile(0.8)
    inv = s * disparity.double() + b
    out = torch.where(inv > 1e-9, 1 / inv.clamp_min(1e-9), torch.zeros_like(inv))
    return out.to(depth.dtype)
