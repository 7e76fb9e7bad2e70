"""What a training run writes beside its checkpoints: ``train.log`` (appended), ``config.yaml``
(the resolved config and the command line) and ``loss.png`` (the loss curve)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fourreal.io.atomic import atomic_file


def write_config(run: Path, config: dict[str, Any]) -> None:
    """The resolved config and the command line that produced it, as YAML."""
    text = yaml.safe_dump({"command": sys.argv, "config": config}, sort_keys=False)
    with atomic_file(run / "config.yaml") as tmp:
        tmp.write_text(text)


def log_line(run: Path, text: str) -> None:
    """Append one timestamped line to ``train.log``."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(run / "train.log", "a") as f:
        f.write(f"{stamp} {text}\n")


def smooth(values: list[float], window: int) -> list[float]:
    """Running mean over the last ``window`` values (the curve's readable trend)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def write_loss_png(path: Path, losses: list[float], width: int = 640, height: int = 320) -> None:
    """The per-step loss (light) and its running mean (dark) against the step, as a PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 10, 10, height - 30
    values = [v for v in losses if math.isfinite(v)]
    if len(values) >= 2:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-6

        def point(i: int, v: float) -> tuple[float, float]:
            x = left + (right - left) * i / (len(values) - 1)
            return x, bottom - (bottom - top) * (v - lo) / (hi - lo)

        trend = smooth(values, max(1, len(values) // 20))
        draw.line([point(i, v) for i, v in enumerate(values)], fill=(170, 190, 230), width=1)
        draw.line([point(i, v) for i, v in enumerate(trend)], fill=(20, 60, 160), width=2)
        draw.text((4, top), f"{hi:.3g}", fill="black")
        draw.text((4, bottom - 10), f"{lo:.3g}", fill="black")
        draw.text((right - 80, bottom + 8), f"step {len(values)}", fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left + 4, bottom + 8), "training loss (velocity MSE, unknown frames)", fill="black")
    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")
