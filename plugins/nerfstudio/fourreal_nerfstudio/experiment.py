"""Train ``fourreal-splat`` from Python, as ``ns-train`` does, with evaluation before and after.

Used by the learning test and ``bench/nerfstudio.py``; also a short example of driving the
method without the command line.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nerfstudio.engine.trainer import TrainerConfig

from fourreal_nerfstudio.method import trainer_config


def configure(
    grid: Path, output: Path, steps: int, device: str = "cpu", **model: Any
) -> TrainerConfig:
    """The ``fourreal-splat`` trainer settings for ``grid`` (no viewer; ``model`` overrides
    fields of the model config, e.g. ``prune_iterations=0``)."""
    config = trainer_config()
    config.machine.device_type = device  # type: ignore[assignment]
    config.max_num_iterations = steps
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.output_dir = Path(output)
    config.pipeline.datamanager.data = Path(grid)
    config.pipeline.datamanager.dataparser.data = Path(grid)
    for name, value in model.items():
        setattr(config.pipeline.model, name, value)
    config.set_timestamp()
    return config


def train_and_evaluate(config: TrainerConfig) -> dict[str, Any]:
    """Train as ``ns-train`` does (config.yml and checkpoints under the output folder) and return
    the eval-split metrics at step 0 and at the end, plus the mean PSNR over the training frames
    at both, and the config path."""
    random.seed(config.machine.seed)
    np.random.seed(config.machine.seed)  # noqa: NPY002 (as ns-train: nerfstudio draws from it)
    torch.manual_seed(config.machine.seed)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    before = pipeline.get_average_eval_image_metrics()
    before_train = train_psnr(pipeline)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    after = pipeline.get_average_eval_image_metrics()
    return {
        "eval_psnr_step0": before["psnr"],
        "eval_ssim_step0": before["ssim"],
        "eval_psnr": after["psnr"],
        "eval_ssim": after["ssim"],
        "train_psnr_step0": before_train,
        "train_psnr": train_psnr(pipeline),
        "steps": config.max_num_iterations,
        "train_seconds": seconds,
        "num_gaussians": pipeline.model.num_points,
        "config": str(config.get_base_dir() / "config.yml"),
    }


@torch.no_grad()
def train_psnr(pipeline) -> float:
    """Mean PSNR over the training frames."""
    model, dataset = pipeline.model, pipeline.datamanager.train_dataset
    model.eval()
    values = []
    for i in range(len(dataset)):
        camera = dataset.cameras[i : i + 1].to(model.device)
        batch = dataset[i]
        metrics, _ = model.get_image_metrics_and_images(model.get_outputs_for_camera(camera), batch)
        values.append(metrics["psnr"])
    model.train()
    return sum(values) / len(values)
