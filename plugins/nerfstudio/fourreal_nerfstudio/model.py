"""``fourreal-splat``: fourreal's dynamic isotropic Gaussians as a nerfstudio model.

The Gaussians are :class:`fourreal.recon.model.DynamicGaussians` (canonical isotropic Gaussians,
the deformation field ``Δp_t = MLP(γ(p), γ(t))`` and the view offsets ``Δp_v``), initialized from
fourreal's tracking of the freeze-time column (:func:`fourreal.recon.init.from_tracks`), floaters
pruned as ``fourreal reconstruct`` does, and rendered by fourreal's rasterizer: the compiled cpu
backend (or the PyTorch reference) on the CPU, gsplat on CUDA. The camera's ``times`` pick the
moment; grid frames carry their view index, so training and evaluation frames get their view's
offsets ``Δp_v``, while the viewer's free cameras render the canonical scene (no offsets).

It needs the ``fourreal-grid`` dataparser, which passes the tracking in its metadata. No LPIPS (it
would download weights): ``ns-eval`` reports PSNR and SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn

from fourreal.errors import FourrealError
from fourreal.recon.deform import DeformConfig
from fourreal.recon.init import from_tracks
from fourreal.recon.losses import photometric_loss, ssim
from fourreal.recon.model import PER_GAUSSIAN
from fourreal.recon.prune import prune_floaters
from fourreal.recon.render import rasterize
from fourreal_nerfstudio.dataparser import OPENCV_TO_OPENGL


@dataclass
class FourrealSplatModelConfig(ModelConfig):
    """fourreal's dynamic isotropic Gaussians (the defaults are ``fourreal reconstruct``'s)."""

    _target: type = field(default_factory=lambda: FourrealSplatModel)
    enable_collider: bool = False
    scale_factor: float = 0.7
    """Initial standard deviation as a fraction of a tracked point's pixel footprint."""
    init_opacity: float = 0.8
    prune_iterations: int = 120
    """Opacity-only fitting steps against the freeze-time column before training (0: no
    floater pruning)."""
    prune_threshold: float = 0.15
    """Gaussians whose opacity ends below this after pruning are removed."""
    view_offsets: bool = True
    """Apply the tracked view offsets Δp_v to grid frames (they compensate inconsistencies
    between the views of a generated grid)."""
    deform: DeformConfig = field(default_factory=DeformConfig)
    ssim_weight: float = 0.2
    """λ in ``(1 - λ)·L1 + λ·(1 - SSIM)``."""
    smooth_weight: float = 0.01
    """Penalty on the change of the deformation between nearby times (per scene extent)."""
    backend: Literal["auto", "torch", "cpu", "gsplat"] = "auto"
    """fourreal rasterizer backend; ``auto``: gsplat on CUDA, the compiled cpu backend on the CPU
    (the PyTorch reference when no C++ compiler is found)."""
    seed: int = 0


class FourrealSplatModel(Model):
    """See the module docstring. Parameter groups: means (learning rate per unit of scene
    extent, as in fourreal), scales, opacities, colors, deform."""

    config: FourrealSplatModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        inputs = (self.kwargs.get("metadata") or {}).get("fourreal")
        if inputs is None:
            raise FourrealError(
                "fourreal-splat needs the fourreal-grid dataparser (ns-train fourreal-splat "
                "... fourreal-grid --data GRID): it carries the tracking that starts the Gaussians"
            )
        config = self.config
        gaussians = from_tracks(
            inputs["tracks"], inputs["point_stride"], config.scale_factor, config.init_opacity,
            config.deform, use_view_offsets=config.view_offsets,
        )  # fmt: skip
        num_pruned = 0
        if config.prune_iterations > 0:
            backend = "torch" if config.backend == "gsplat" else config.backend
            num_pruned = prune_floaters(
                gaussians, inputs["tracks"], inputs["column"], inputs["background"],
                config.prune_iterations, config.prune_threshold, backend=backend,
                seed=config.seed,
            )  # fmt: skip
        self.gaussians = gaussians
        # the grid's cameras and split travel with the checkpoint, for export
        self.register_buffer("grid_K", inputs["K"].float().clone())
        self.register_buffer("grid_T_world_cam", inputs["T_world_cam"].float().clone())
        self.register_buffer("grid_times", inputs["times"].float().clone())
        self.register_buffer("background", inputs["background"].float().clone())
        self.register_buffer("num_pruned", torch.tensor(num_pruned))
        self.holdout: list[tuple[int, int]] = list(inputs["holdout"])
        self.image_size: tuple[int, int] = tuple(inputs["image_size"])
        self._generator = torch.Generator().manual_seed(config.seed)

    @property
    def num_points(self) -> int:
        return len(self.gaussians)

    def get_param_groups(self) -> dict[str, list[nn.Parameter]]:
        g = self.gaussians
        return {
            "means": [g.means],
            "scales": [g.log_scales],
            "opacities": [g.opacity_logits],
            "colors": [g.color_logits],
            "deform": list(g.deform.parameters()),
        }

    def get_training_callbacks(
        self, attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        # fourreal's position learning rate is per unit of scene extent; the optimizer config
        # cannot know the extent, so it is applied here, once (the mark survives a resume, whose
        # optimizer state already holds the scaled rate)
        if attributes.optimizers is not None and "means" in attributes.optimizers.optimizers:
            extent = float(self.gaussians.deform.extent)
            for group in attributes.optimizers.optimizers["means"].param_groups:
                if not group.get("fourreal_lr_per_extent"):
                    group["lr"] *= extent
                    group["fourreal_lr_per_extent"] = True
        return []

    def get_outputs(self, camera: Cameras) -> dict[str, Tensor]:  # type: ignore[override]
        """Render one camera: ``rgb [H, W, 3]``, ``accumulation [H, W, 1]``, expected ``depth``
        ``[H, W, 1]`` (camera z), at the camera's time (0 without one)."""
        if not isinstance(camera, Cameras) or camera.shape[0] != 1:
            raise FourrealError("fourreal-splat renders one nerfstudio camera at a time")
        device = self.gaussians.means.device
        T_world_cam = torch.eye(4, device=device)
        T_world_cam[:3, :4] = camera.camera_to_worlds[0].to(device)
        T_world_cam = T_world_cam @ OPENCV_TO_OPENGL.to(device)  # OpenGL axes back to OpenCV
        K = camera.get_intrinsics_matrices()[0].to(device)
        W, H = int(camera.width[0]), int(camera.height[0])
        time = torch.zeros(1, device=device)
        if camera.times is not None:
            time = camera.times.reshape(-1)[:1].to(device=device, dtype=torch.float32)
        positions = self.gaussians.positions(time, self._view_of(camera))[0]
        g = self.gaussians
        out = rasterize(
            positions, g.scales, g.opacities, g.colors, torch.linalg.inv(T_world_cam), K, W, H,
            self.background, backend=self.config.backend,
        )  # fmt: skip
        return {
            "rgb": out.rgb,
            "accumulation": out.alpha,
            "depth": out.depth / out.alpha.clamp_min(1e-6),
            "background": self.background,
        }

    def _view_of(self, camera: Cameras) -> Tensor | None:
        """The grid view of a dataset camera (None for the viewer's free cameras)."""
        metadata = camera.metadata or {}
        if not self.config.view_offsets or "fourreal_view" not in metadata:
            return None
        view = torch.as_tensor(metadata["fourreal_view"]).reshape(-1)[:1].long()
        return view.to(self.gaussians.means.device)

    @torch.no_grad()
    def get_outputs_for_camera(
        self, camera: Cameras, obb_box: OrientedBox | None = None
    ) -> dict[str, Tensor]:
        """Render for evaluation and the viewer (the crop box is not applied)."""
        return self.get_outputs(camera.to(self.device))

    def _target(self, batch: dict[str, Any]) -> Tensor:
        image = batch["image"]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        image = image.to(self.gaussians.means.device)
        if image.shape[-1] == 4:  # RGBA: composite on the grid's background
            alpha = image[..., 3:]
            image = image[..., :3] * alpha + (1 - alpha) * self.background
        return image

    def get_metrics_dict(self, outputs, batch) -> dict[str, Tensor]:
        target = self._target(batch)
        mse = ((outputs["rgb"].detach().clamp(0, 1) - target) ** 2).mean()
        return {"psnr": -10 * torch.log10(mse.clamp_min(1e-10)), "gaussian_count": self.num_points}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        losses = {
            "photometric": photometric_loss(
                outputs["rgb"], self._target(batch), self.config.ssim_weight
            )
        }
        if self.training and self.config.smooth_weight > 0 and len(self.grid_times) > 1:
            losses["smooth"] = self.config.smooth_weight * self._smoothness()
        return losses

    def _smoothness(self) -> Tensor:
        """Mean change of the deformation over half a time step, per scene extent, at 2048
        random Gaussians and a random time (fourreal's regularizer)."""
        g = self.gaussians
        device = g.means.device
        pick = torch.randint(len(g), (2048,), generator=self._generator).to(device)
        t = torch.rand(1, generator=self._generator).to(device)
        dt = 0.5 / (len(self.grid_times) - 1)
        a = g.deform(g.means[pick], t)
        b = g.deform(g.means[pick], (t + dt).clamp(max=1))
        return (a - b).norm(dim=-1).mean() / g.deform.extent

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        target = self._target(batch)
        render = outputs["rgb"].clamp(0, 1)
        mse = float(((render - target) ** 2).mean())
        psnr = float("inf") if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item()
        metrics = {"psnr": psnr, "ssim": float(ssim(render, target))}
        images = {
            "img": torch.cat([target, render], dim=1),
            "accumulation": outputs["accumulation"],
        }
        return metrics, images

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Resize the Gaussians to the checkpoint's count first (initialization and pruning of a
        re-parsed grid need not give the same number as the run that saved it)."""
        n = state_dict["gaussians.means"].shape[0]
        g = self.gaussians
        if len(g) != n:
            with torch.no_grad():
                for name in PER_GAUSSIAN:  # every per-Gaussian table, presence included
                    old = getattr(g, name)
                    shape = state_dict.get(f"gaussians.{name}", old).shape[1:]
                    setattr(g, name, nn.Parameter(old.new_zeros((n, *shape))))
                V = g.view_offsets.shape[0]
                g.view_offsets = g.view_offsets.new_zeros(V, n, 3)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
