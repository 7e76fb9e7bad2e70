"""The resumable training state: one safetensors file (``state.safetensors`` in the run folder)
with the raw and EMA weights, the AdamW moments, the step and the loss history; the training
config and the optimizer's hyperparameters are JSON in its metadata. Written atomically;
nothing is unpickled when it is read back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_file

FORMAT = "fourreal-train-state"
VERSION = "1"


@dataclass
class TrainState:
    """What a run needs to continue exactly where it stopped."""

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]
    losses: list[float]
    config: dict[str, Any]


def save_state(path: str | os.PathLike[str], state: TrainState) -> Path:
    """Write ``state`` atomically (the previous file stays intact until the new one is whole)."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in state.model.items()}
    tensors |= {f"ema.{k}": v.detach().contiguous() for k, v in state.ema.items()}
    for index, moments in state.optimizer["state"].items():
        for key, value in moments.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    tensors["losses"] = torch.tensor(state.losses, dtype=torch.float32).reshape(-1)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "step": str(state.step),
        "param_groups": json.dumps(state.optimizer["param_groups"]),
        "config": json.dumps(state.config),
    }
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_state(path: str | os.PathLike[str]) -> TrainState:
    """Read a state written by :func:`save_state`; any problem is a :class:`FourrealError`
    that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FourrealError(f"training state {path} does not exist; nothing to resume")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise FourrealError(
            f"training state {path} is not a readable safetensors file ({err}); start a new run "
            "or resume from an intact copy"
        ) from err
    if metadata.get("format") != FORMAT:
        raise FourrealError(f"{path} is not a fourreal training state (format {FORMAT!r})")
    if metadata.get("version") != VERSION:
        raise FourrealError(f"training state {path} is version {metadata.get('version')}; "
                            f"this fourreal reads version {VERSION}")  # fmt: skip
    try:
        step = int(metadata["step"])
        param_groups = json.loads(metadata["param_groups"])
        config = json.loads(metadata["config"])
    except (KeyError, ValueError) as err:
        raise FourrealError(f"training state {path} has broken metadata: {err}") from err
    if not all(bool(torch.isfinite(v).all()) for v in tensors.values() if v.is_floating_point()):
        raise FourrealError(f"training state {path} holds NaN or infinite values")
    moments: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    return TrainState(
        step=step,
        model={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        ema={k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
        optimizer={"state": moments, "param_groups": param_groups},
        losses=tensors.get("losses", torch.zeros(0)).tolist(),
        config=config,
    )


def load_weights(module: nn.Module, weights: dict[str, Tensor], path: Path) -> None:
    """``module.load_state_dict(weights)`` with a message that names ``path`` on a mismatch."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise FourrealError(
            f"training state {path} does not fit this model ({' '.join(first)}); resume with "
            "the run's own config"
        ) from err
