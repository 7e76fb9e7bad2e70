"""``fourreal-splat``: the nerfstudio method (trainer, pipeline and optimizer settings).

Registered through the ``nerfstudio.method_configs`` entry point. Learning rates are those of
``fourreal reconstruct`` (the means' per unit of scene extent, applied by the model); one grid
frame per step, no densification.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from fourreal_nerfstudio.dataparser import FourrealGridDataParserConfig
from fourreal_nerfstudio.model import FourrealSplatModelConfig


def adam(lr: float) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}


def trainer_config() -> TrainerConfig:
    return TrainerConfig(
        method_name="fourreal-splat",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=500,
        steps_per_eval_all_images=1000,
        max_num_iterations=2400,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=FourrealGridDataParserConfig(),
                # "gpu" means "on the training device" (CPU included); nerfstudio's "cpu" pins
                # memory, which needs CUDA
                cache_images="gpu",
                cache_images_type="uint8",
            ),
            model=FourrealSplatModelConfig(),
        ),
        optimizers={
            "means": adam(1.6e-4),  # per unit of scene extent
            "scales": adam(5e-3),
            "opacities": adam(3e-2),
            "colors": adam(1e-2),
            "deform": adam(1e-3),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


fourreal_splat = MethodSpecification(
    config=trainer_config(),
    description="fourreal's dynamic isotropic Gaussians (4Real-Video reconstruction) on a "
    "fourreal grid; CPU or CUDA",
)
