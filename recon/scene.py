"""Scene folders (design.md §3) and training checkpoints, all safetensors and JSON.

``scene/`` holds ``scene.ply`` (canonical Gaussians, standard 3DGS PLY), ``scene.json``
(format, times, cameras, background, config), ``deform.safetensors`` (the deformation field),
``metrics.json``, ``config.yaml`` and ``renders/``. The whole folder is replaced atomically at
the end of a run; while training, ``checkpoint.safetensors`` in it is replaced atomically every
few hundred steps so an interrupted run can ``--resume``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_dir, atomic_file
from fourreal.io.gaussian_ply import read_ply, write_ply
from fourreal.recon.config import ReconConfig
from fourreal.recon.deform import DeformConfig
from fourreal.recon.fit import Reconstruction
from fourreal.recon.model import DynamicGaussians

SCENE_FORMAT = "fourreal-scene"
SCENE_VERSION = 1
CHECKPOINT = "checkpoint.safetensors"


class SceneError(FourrealError):
    """A scene folder or checkpoint is missing or malformed."""


def save_scene(
    recon: Reconstruction,
    config: ReconConfig,
    metrics: dict[str, Any],
    folder: str | os.PathLike[str],
    source: dict[str, Any],
    renders: dict[str, np.ndarray] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write the scene folder atomically (replacing an earlier scene or a checkpoint-only one)."""
    folder = Path(folder)
    checkpoint = folder / CHECKPOINT
    with atomic_dir(folder, marker="scene.json" if not checkpoint.exists() else CHECKPOINT) as tmp:
        write_ply(recon.model.canonical(), tmp / "scene.ply")
        deform = recon.model.deform
        save_file(
            {k: v.detach().contiguous() for k, v in deform.state_dict().items()},
            tmp / "deform.safetensors",
            metadata={"format": "fourreal-deform", "config": json.dumps(deform.config.to_dict())},
        )
        H, W = recon.image_size
        scene = {
            "format": SCENE_FORMAT,
            "version": SCENE_VERSION,
            "times": recon.times.tolist(),
            "cameras": {
                "width": W,
                "height": H,
                "K": recon.K.tolist(),
                "T_world_cam": recon.T_world_cam.tolist(),
            },
            "background": recon.background.tolist(),
            "holdout": [list(vt) for vt in recon.holdout],
            "num_gaussians": len(recon.model),
            "source": source,
            "config": config.to_dict(),
        }
        (tmp / "scene.json").write_text(json.dumps(scene, indent=1) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        if renders:
            (tmp / "renders").mkdir()
            for name, image in renders.items():
                Image.fromarray(image).save(tmp / "renders" / name)
        for name, path in (extra_files or {}).items():
            shutil.copy2(path, tmp / name)
        if checkpoint.exists():
            shutil.copy2(checkpoint, tmp / CHECKPOINT)
        for name in ("log.txt",):
            if (folder / name).exists():
                shutil.copy2(folder / name, tmp / name)
    return folder


def load_scene(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], DynamicGaussians]:
    """Read ``scene.json``, ``scene.ply`` and ``deform.safetensors`` of a scene folder."""
    folder = Path(folder)
    if folder.name == "scene.ply":
        folder = folder.parent
    meta_path = folder / "scene.json"
    if not meta_path.is_file():
        raise SceneError(f"{meta_path} is missing: {folder} is not a fourreal scene")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise SceneError(f"{meta_path} is not valid JSON ({err})") from err
    if meta.get("format") != SCENE_FORMAT or meta.get("version") != SCENE_VERSION:
        raise SceneError(f"{meta_path}: not a fourreal scene of version {SCENE_VERSION}")
    gaussians = read_ply(folder / "scene.ply")
    deform_path = folder / "deform.safetensors"
    try:
        with safe_open(str(deform_path), "pt") as f:
            deform_meta = f.metadata() or {}
        state = load_file(str(deform_path))
        config = DeformConfig(**json.loads(deform_meta["config"]))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise SceneError(f"{deform_path} is not a readable deformation field ({err})") from err
    V = len(meta["cameras"]["K"])
    model = DynamicGaussians(
        gaussians.means, gaussians.scales[:, 0], gaussians.opacities, gaussians.colors,
        torch.zeros(V, len(gaussians), 3), config, 1.0,
    )  # fmt: skip
    try:
        model.deform.load_state_dict(state)
    except RuntimeError as err:
        raise SceneError(f"{deform_path} does not match its config ({err})") from err
    return meta, model


def save_checkpoint(recon: Reconstruction, optimizer: torch.optim.Optimizer, config: ReconConfig,
                    folder: Path) -> None:  # fmt: skip
    """Everything needed to continue training, in one safetensors file (atomic)."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in recon.model.state_dict().items()}
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"opt.{gi}.{pi}.{key}"] = torch.as_tensor(value).detach().contiguous()
    tensors["recon.K"] = recon.K.contiguous()
    tensors["recon.T_world_cam"] = recon.T_world_cam.contiguous()
    tensors["recon.times"] = recon.times.contiguous()
    tensors["recon.background"] = recon.background.contiguous()
    tensors["recon.losses"] = torch.tensor(recon.losses, dtype=torch.float32)
    meta = {
        "format": "fourreal-checkpoint",
        "step": str(recon.step),
        "holdout": json.dumps(recon.holdout),
        "num_pruned": str(recon.num_pruned),
        "image_size": json.dumps(list(recon.image_size)),
        "config": json.dumps(config.to_dict()),
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / CHECKPOINT) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_checkpoint(folder: Path) -> tuple[Reconstruction, dict[str, torch.Tensor], dict]:
    """The reconstruction at its saved step, the optimizer tensors, and the saved config."""
    path = folder / CHECKPOINT
    if not path.is_file():
        raise SceneError(f"{path} is missing: nothing to resume in {folder}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        config = json.loads(meta["config"])
        step = int(meta["step"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise SceneError(f"{path} is not a readable fourreal checkpoint ({err})") from err
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    deform = DeformConfig(**config["deform"])
    V, N = state["view_offsets"].shape[:2]
    model = DynamicGaussians(
        torch.zeros(N, 3), torch.ones(N), torch.full((N,), 0.5), torch.full((N, 3), 0.5),
        torch.zeros(V, N, 3), deform, 1.0,
    )  # fmt: skip
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise SceneError(f"{path} does not match a fourreal model ({err})") from err
    recon = Reconstruction(
        model, tensors["recon.K"], tensors["recon.T_world_cam"], tensors["recon.times"],
        tensors["recon.background"], [tuple(x) for x in json.loads(meta["holdout"])],
        int(meta["num_pruned"]), tensors["recon.losses"].tolist(), step,
    )  # fmt: skip
    recon.image_size = tuple(json.loads(meta["image_size"]))
    optimizer_state = {k: v for k, v in tensors.items() if k.startswith("opt.")}
    return recon, optimizer_state, config


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            prefix = f"opt.{gi}.{pi}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if state:
                optimizer.state[p] = state


def scene_gaussians_at(folder: str | os.PathLike[str], time: float):
    """The scene's Gaussians at normalized ``time`` (no view offsets), for export and viewing."""
    _, model = load_scene(folder)
    return model.at_time(time)


__all__ = [
    "SceneError",
    "load_checkpoint",
    "load_scene",
    "read_ply",
    "restore_optimizer",
    "save_checkpoint",
    "save_scene",
]
