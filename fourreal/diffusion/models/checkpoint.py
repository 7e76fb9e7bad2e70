"""Generator checkpoints: safetensors, with the model's config in the file's metadata.

Metadata keys: ``format`` = ``fourreal-generator``, ``version`` = ``1``, ``config`` = JSON
``{"dit": DiTConfig fields, "sync": kind, "window": [views, times]}`` and optionally
``"resolution": [height, width]`` (the training frame size). Loading checks every key
and shape and says what does not match; nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fourreal.diffusion.models.dit import DiTConfig, VideoDiT
from fourreal.diffusion.models.sync import SYNC_KINDS, TRAINED_SYNCS, SyncKind
from fourreal.diffusion.models.two_stream import TwoStreamDiT
from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_file
from fourreal.memory import check_fits

FORMAT = "fourreal-generator"
VERSION = "1"


def save_generator(
    model: TwoStreamDiT,
    path: str | os.PathLike[str],
    window: tuple[int, int] = (8, 8),
    resolution: tuple[int, int] | None = None,
    sampling: dict[str, int] | None = None,
) -> Path:
    """Write ``model`` (a :class:`TwoStreamDiT` over a :class:`VideoDiT`) atomically.

    ``window`` is the grid size it was trained on (the sliding window of generation),
    ``resolution`` the frame ``(height, width)`` it was trained at, if it should be told, and
    ``sampling`` the ``steps`` and ``samples`` it samples best with (measured on held-out
    grids), which ``fourreal generate`` and ``fourreal eval generate`` then use by default."""
    if not isinstance(model.stack, VideoDiT):
        raise FourrealError("save_generator saves models built on fourreal's VideoDiT")
    config: dict[str, Any] = {
        "dit": model.stack.config.to_dict(),
        "sync": model.sync,
        "window": list(window),
    }
    if resolution is not None:
        config["resolution"] = list(resolution)
    if sampling is not None:
        if set(sampling) - {"steps", "samples"} or any(int(v) < 1 for v in sampling.values()):
            raise FourrealError(f"sampling takes steps and samples >= 1, got {sampling}")
        config["sampling"] = {k: int(v) for k, v in sampling.items()}
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(config)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


BUNDLED = Path(__file__).resolve().parents[1] / "weights"
"""Where the bundled checkpoints live (``tiny.safetensors`` and its record ``tiny.json``)."""


def bundled_checkpoint(name: str = "tiny") -> Path:
    """The path of a checkpoint shipped with fourreal (``tiny``: 8×8 grids at 64×64)."""
    path = BUNDLED / f"{name}.safetensors"
    if not path.is_file():
        raise FourrealError(
            f"the bundled {name!r} checkpoint is missing ({path}); reinstall fourreal, or pass "
            "--checkpoint PATH.safetensors"
        )
    return path


def bundled_note(name: str = "tiny") -> str | None:
    """A one-line reminder of how the bundled checkpoint scores on held-out grids against the
    warp method (from its record), or None when the record is missing."""
    try:
        record = json.loads((BUNDLED / f"{name}.json").read_text())
        rows = {row["method"]: row for row in record["held_out"]["rows"]}
        mine, warp = rows[record["label"]], rows["warp"]
    except (OSError, ValueError, KeyError):
        return None
    scores = (
        f"on held-out synthetic grids it scores {mine['psnr']:.1f} dB against "
        f"{warp['psnr']:.1f} dB for --method warp"
    )
    if mine["psnr"] < warp["psnr"]:
        return (
            f"the bundled {name!r} checkpoint is a small-scale model: {scores} (see "
            "docs/generator.md); use --method warp, or your own --checkpoint, for usable frames"
        )
    return (
        f"the bundled {name!r} checkpoint is a 5M-parameter model trained on synthetic scenes "
        f"at 64x64: {scores}, but expect less on content unlike those scenes (see "
        "docs/generator.md)"
    )


def default_sampling(
    config: dict[str, Any], steps: int | None = None, samples: int | None = None
) -> tuple[int, int]:
    """``(steps, samples)`` to sample a checkpoint with: those given, else what its config
    records, else 20 Euler steps and one sample."""
    sampling = config.get("sampling") or {}
    return steps or int(sampling.get("steps", 20)), samples or int(sampling.get("samples", 1))


def read_generator_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config stored in a checkpoint's metadata (checks the file is one of ours)."""
    path = Path(path)
    if not path.is_file():
        raise FourrealError(f"checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        raise FourrealError(
            f"checkpoint {path} is not a .safetensors file; fourreal loads safetensors only "
            "(never pickles)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise FourrealError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise FourrealError(
            f"checkpoint {path} has no fourreal generator metadata (format={FORMAT!r} and a "
            "config); save checkpoints with fourreal.diffusion.save_generator"
        )
    if metadata.get("version") != VERSION:
        raise FourrealError(
            f"checkpoint {path} is version {metadata.get('version')}; this fourreal reads "
            f"version {VERSION}"
        )
    try:
        config = json.loads(metadata["config"])
        DiTConfig(**config["dit"])
    except (ValueError, TypeError, KeyError) as err:
        raise FourrealError(
            f"checkpoint {path} has an invalid config in its metadata: {err}"
        ) from err
    return config


def load_generator(
    path: str | os.PathLike[str], sync: SyncKind | None = None
) -> tuple[TwoStreamDiT, dict[str, Any]]:
    """The model of a checkpoint and its config.

    ``sync`` overrides the checkpoint's sync: the training-free kinds (average, weighted,
    sequential) work with any checkpoint's block weights; soft and hard need their own trained
    weights in the file.
    """
    config = read_generator_config(path)
    stored = config.get("sync")
    if stored not in SYNC_KINDS:
        raise FourrealError(f"checkpoint {path} names an unknown sync {stored!r}")
    sync = sync or stored
    if sync in TRAINED_SYNCS and sync != stored:
        raise FourrealError(
            f"checkpoint {path} was trained with {stored} sync and has no {sync} sync weights; "
            f"use --sync {stored}, or a training-free one: average, weighted, sequential"
        )
    # Build on the meta device first (no memory): a config that asks for a huge model, or a file
    # whose tensors do not fit it, fails here before anything is allocated.
    try:
        with torch.device("meta"):
            expected = TwoStreamDiT(VideoDiT(DiTConfig(**config["dit"])), sync=sync).state_dict()
    except (TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError) as err:
        raise FourrealError(f"checkpoint {path}: its config cannot build a model ({err})") from err
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise FourrealError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    if sync != stored:  # training-free override: ignore the stored sync weights
        shapes = {k: v for k, v in shapes.items() if k.startswith("stack.")}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [
        f"{k} {shapes[k]} (expected {list(expected[k].shape)})"
        for k in sorted(set(shapes) & set(expected))
        if shapes[k] != list(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:3])}")
    if problems:
        raise FourrealError(f"checkpoint {path} does not match its config: {'; '.join(problems)}")
    check_fits(
        sum(4 * math.prod(shape) for shape in shapes.values()) * 2,
        f"the generator in {path}",
        "use a smaller model config, or --device cuda where a GPU has the memory",
    )
    try:
        state = {k: v for k, v in load_file(str(path)).items() if k in shapes}
    except (SafetensorError, OSError) as err:
        raise FourrealError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    bad = [k for k, v in state.items() if not v.is_floating_point()]
    if bad:
        raise FourrealError(f"checkpoint {path}: {bad[0]} is {state[bad[0]].dtype}, not a float")
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise FourrealError(f"checkpoint {path} holds NaN or infinite weights")
    model = TwoStreamDiT(VideoDiT(DiTConfig(**config["dit"])), sync=sync)
    model.load_state_dict(state)
    return model.eval(), config
