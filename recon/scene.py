"""Scene folders (design.md §3) and training checkpoints, all safetensors and JSON.

``scene/`` holds ``scene.ply`` (canonical Gaussians, standard 3DGS PLY), ``scene.json``
(format, times, cameras, background, config), ``deform.safetensors`` (the deformation field),
``metrics.json``, ``config.yaml`` and ``renders/``. The whole folder is replaced atomically at
the end of a run; while training, ``checkpoint.safetensors`` in it is replaced atomically every
few hundred steps so an interrupted run can ``--resume``.
"""

from __future__ import annotations

import json
import math
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
from fourreal.memory import check_fits
from fourreal.recon.config import ReconConfig
from fourreal.recon.deform import DeformConfig
from fourreal.recon.fit import Reconstruction
from fourreal.recon.model import DynamicGaussians

SCENE_FORMAT = "fourreal-scene"
SCENE_VERSION = 1
CHECKPOINT = "checkpoint.safetensors"
PRESENCE = "presence_logits"


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
        tensors = {k: v.detach().contiguous() for k, v in deform.state_dict().items()}
        # when each Gaussian is present ([N, T] logits; absent from older scenes: always)
        tensors[PRESENCE] = recon.model.presence_logits.detach().contiguous()
        save_file(
            tensors,
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
    """Read ``scene.json``, ``scene.ply`` and ``deform.safetensors`` of a scene folder.

    Everything is checked before the model is built (shapes against the config on the ``meta``
    device, memory against what is free), so a malformed scene raises :class:`SceneError` (or
    another :class:`FourrealError`) naming the file, never a deep library error.
    """
    folder = Path(folder)
    if folder.name == "scene.ply":
        folder = folder.parent
    meta_path = folder / "scene.json"
    if not meta_path.is_file():
        raise SceneError(f"{meta_path} is missing: {folder} is not a fourreal scene")
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise SceneError(f"{meta_path} must hold a JSON object")
    if meta.get("format") != SCENE_FORMAT or meta.get("version") != SCENE_VERSION:
        raise SceneError(f"{meta_path}: not a fourreal scene of version {SCENE_VERSION}")
    _check_number_list(meta.get("times"), meta_path, "times")
    V = _check_scene_cameras(meta.get("cameras"), meta_path)
    gaussians = read_ply(folder / "scene.ply")
    deform_path = folder / "deform.safetensors"
    state, deform_meta = _read_safetensors(deform_path, "deformation field")
    presence = state.pop(PRESENCE, None)
    try:
        config = DeformConfig(**json.loads(deform_meta["config"]))
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise SceneError(f"{deform_path} has no valid deformation config ({err})") from err
    N = len(gaussians)
    if presence is None:
        presence = torch.zeros(N, 0)
    if presence.ndim != 2 or presence.shape[0] != N or not presence.is_floating_point():
        raise SceneError(
            f"{deform_path}: {PRESENCE} must be a float table [{N}, times] for the {N} Gaussians "
            f"of scene.ply, not {list(presence.shape)} {presence.dtype}"
        )
    check_fits(
        (V + 8) * N * 3 * 4,
        f"{folder} ({N} Gaussians, {V} views)",
        "export fewer Gaussians (reconstruct with --iterations/--preset fast, or prune more)",
    )

    def build(device: str) -> DynamicGaussians:
        with torch.device(device):
            return DynamicGaussians(
                gaussians.means.to(device), gaussians.scales[:, 0].to(device),
                gaussians.opacities.to(device), gaussians.colors.to(device),
                torch.zeros(V, N, 3), config, 1.0,
            )  # fmt: skip

    _check_state(lambda: build("meta").deform, state, deform_path)
    model = build("cpu")
    model.deform.load_state_dict(state)
    model.presence_logits = torch.nn.Parameter(presence.float())
    return meta, model


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise SceneError(f"{path} is not valid JSON ({err})") from err


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (as float32 where they are floating point) and the metadata of ``path``."""
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        raise SceneError(f"{path} is not a readable {what} ({err})") from err
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SceneError(f"{path}: tensor {name} holds NaN or infinite values")
    return tensors, metadata


def _check_state(build_meta, state: dict[str, torch.Tensor], path: Path) -> None:
    """Build the module on the ``meta`` device (no memory) and compare its tensors' names and
    shapes with ``state``, so a config that asks for a huge model fails before allocating."""
    try:
        expected = {k: tuple(v.shape) for k, v in build_meta().state_dict().items()}
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise SceneError(f"{path}: its config cannot build a model ({err})") from err
    problems = [f"missing {k}" for k in sorted(set(expected) - set(state))]
    problems += [f"unexpected {k}" for k in sorted(set(state) - set(expected))]
    problems += [
        f"{k} is {list(state[k].shape)}, expected {list(shape)}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    problems += [
        f"{k} has dtype {state[k].dtype}" for k in expected
        if k in state and not (state[k].is_floating_point() or state[k].dtype == torch.bool)
    ]  # fmt: skip
    if problems:
        raise SceneError(f"{path} does not match its config: {'; '.join(problems[:4])}")


def _check_number_list(value: Any, where: Path, key: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise SceneError(f"{where}: {key!r} must be a non-empty list of numbers")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise SceneError(f"{where}: {key!r} must hold numbers only")
    if not all(math.isfinite(x) for x in value):
        raise SceneError(f"{where}: {key!r} holds NaN or infinite values")
    return [float(x) for x in value]


def _check_scene_cameras(value: Any, where: Path) -> int:
    """The number of views of ``cameras: {width, height, K [V][3][3], T_world_cam [V][4][4]}``."""
    try:
        K = np.asarray(value["K"], dtype=np.float64)
        T = value.get("T_world_cam")
        T = None if T is None else np.asarray(T, dtype=np.float64)
        width, height = value["width"], value["height"]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise SceneError(f"{where}: 'cameras' is malformed ({err!r})") from None
    ok = K.ndim == 3 and len(K) > 0 and K.shape[1:] == (3, 3) and np.isfinite(K).all()
    ok = ok and (T is None or (T.shape == (len(K), 4, 4) and np.isfinite(T).all()))
    for size in (width, height):
        ok = ok and isinstance(size, int) and not isinstance(size, bool) and size > 0
    if not ok:
        raise SceneError(
            f"{where}: 'cameras' must hold positive integers width and height, K [V][3][3] and "
            "T_world_cam [V][4][4] with finite numbers"
        )
    return len(K)


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
        "offset_weight": str(recon.offset_weight),
        "image_size": json.dumps(list(recon.image_size)),
        "config": json.dumps(config.to_dict()),
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / CHECKPOINT) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_checkpoint(folder: Path) -> tuple[Reconstruction, dict[str, torch.Tensor], dict]:
    """The reconstruction at its saved step, the optimizer tensors, and the saved config.

    The file is validated before anything is built (see :func:`load_scene`); a malformed one
    raises :class:`SceneError` naming it."""
    path = folder / CHECKPOINT
    if not path.is_file():
        raise SceneError(f"{path} is missing: nothing to resume in {folder}")
    tensors, meta = _read_safetensors(path, "fourreal checkpoint")
    try:
        if meta.get("format") != "fourreal-checkpoint":
            raise ValueError(f"format is {meta.get('format')!r}, not 'fourreal-checkpoint'")
        config = json.loads(meta["config"])
        deform = DeformConfig(**config["deform"])
        step = int(meta["step"])
        num_pruned = int(meta["num_pruned"])
        holdout = [(int(v), int(t)) for v, t in json.loads(meta["holdout"])]
        H, W = (int(x) for x in json.loads(meta["image_size"]))
        offset_weight = float(meta.get("offset_weight", "1"))
        if not 0 <= offset_weight <= 1:
            raise ValueError(f"offset_weight {offset_weight} is not in [0, 1]")
        if step < 0 or num_pruned < 0 or H <= 0 or W <= 0:
            raise ValueError("negative step, pruned count or image size")
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise SceneError(f"{path} has malformed metadata ({err!r})") from err
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    offsets = state.get("view_offsets")
    if offsets is None or offsets.ndim != 3 or offsets.shape[2] != 3 or offsets.shape[0] == 0:
        raise SceneError(f"{path} lacks model.view_offsets [V, N, 3]")
    V, N = offsets.shape[:2]
    shapes = {"recon.K": (V, 3, 3), "recon.T_world_cam": (V, 4, 4), "recon.background": (3,)}
    for key, shape in shapes.items():
        if key not in tensors or tuple(tensors[key].shape) != shape:
            raise SceneError(f"{path}: {key} must be {list(shape)} for {V} views")
    for key in ("recon.times", "recon.losses"):
        if key not in tensors or tensors[key].ndim != 1:
            raise SceneError(f"{path}: {key} must be a 1-D tensor")
    for key in (*shapes, "recon.times", "recon.losses"):
        if not tensors[key].is_floating_point():
            raise SceneError(f"{path}: {key} must be floating point, not {tensors[key].dtype}")

    # optional per-Gaussian tables are sized from the file (their shapes are checked below)
    extra = {}
    presence = state.get("presence_logits")
    if presence is not None and presence.ndim == 2:
        extra["presence"] = tuple(presence.shape)

    def build(device: str) -> DynamicGaussians:
        with torch.device(device):
            tables = {name: torch.full(shape, 0.5) for name, shape in extra.items()}
            return DynamicGaussians(
                torch.zeros(N, 3), torch.ones(N), torch.full((N,), 0.5), torch.full((N, 3), 0.5),
                torch.zeros(V, N, 3), deform, 1.0, **tables,
            )  # fmt: skip

    _check_state(lambda: build("meta"), state, path)
    model = build("cpu")
    model.load_state_dict(state)
    recon = Reconstruction(
        model, tensors["recon.K"], tensors["recon.T_world_cam"], tensors["recon.times"],
        tensors["recon.background"], holdout,
        num_pruned, tensors["recon.losses"].tolist(), step,
    )  # fmt: skip
    recon.image_size = (H, W)
    recon.offset_weight = offset_weight
    optimizer_state = {k: v for k, v in tensors.items() if k.startswith("opt.")}
    return recon, optimizer_state, config


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put the ``opt.*`` tensors of a checkpoint back into ``optimizer`` (moments must have the
    shapes of their parameters; anything else is a :class:`SceneError`)."""
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            prefix = f"opt.{gi}.{pi}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            for key, value in state.items():
                if value.ndim and tuple(value.shape) != tuple(p.shape):
                    raise SceneError(
                        f"{CHECKPOINT}: optimizer state {prefix}{key} is {list(value.shape)} but "
                        f"its parameter is {list(p.shape)}; the checkpoint does not match"
                    )
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
