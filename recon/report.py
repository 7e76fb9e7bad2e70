"""A self-contained HTML report of a reconstruction: inputs, held-out comparisons, loss, metrics."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fourreal.io.atomic import atomic_file


def _img(array_or_path: np.ndarray | Path, width: int | None = None) -> str:
    if isinstance(array_or_path, Path):
        data = array_or_path.read_bytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(array_or_path).save(buffer, format="PNG")
        data = buffer.getvalue()
    style = f' style="max-width:{width}px;width:100%"' if width else ' style="max-width:100%"'
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}"{style}>'


def write_report(
    path: str | os.PathLike[str],
    scene: Path,
    contact_sheet: Path | None,
    title: str = "fourreal reconstruction",
    ablations: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``report.html`` (images embedded, opens offline in any browser)."""
    metrics = json.loads((scene / "metrics.json").read_text())
    meta = json.loads((scene / "scene.json").read_text())
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>"
        for k, v in metrics.items()
        if k != "holdout"
    )
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "td{padding:2px 10px}table{border-collapse:collapse}tr:nth-child(odd){background:#f3f3f3}"
        "</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{meta['num_gaussians']} Gaussians, {len(meta['times'])} times, "
        f"{len(meta['cameras']['K'])} views at {meta['cameras']['width']}×"
        f"{meta['cameras']['height']}.</p>",
        "<h2>Metrics on held-out frames</h2>",
        f"<table>{rows}</table>",
    ]
    if contact_sheet is not None and contact_sheet.exists():
        parts += ["<h2>Input grid (rows: views, columns: times)</h2>", _img(contact_sheet)]
    comparisons = sorted((scene / "renders").glob("holdout_*.png"))
    if comparisons:
        parts.append("<h2>Held-out frames: ground truth (left) and render (right)</h2>")
        parts += [f"<p>{p.stem}</p>{_img(p, 700)}" for p in comparisons]
    if (scene / "renders" / "loss.png").exists():
        parts += ["<h2>Loss</h2>", _img(scene / "renders" / "loss.png", 500)]
    if ablations:
        keys = list(ablations[0])
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(row[k])}</td>" for k in keys) + "</tr>"
            for row in ablations
        )
        parts += ["<h2>Ablation</h2>", f"<table><tr>{head}</tr>{body}</table>"]
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
