"""``fourreal export``: a scene as per-time standard 3DGS PLYs, their zip, or ``.splatv``.

Exports place each Gaussian at ``p + Δp_t`` (no view offsets: those only compensate
inconsistencies between generated frames).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_dir, atomic_file, temporary_dir
from fourreal.io.gaussian_ply import write_ply
from fourreal.recon.scene import load_scene

PLY_PATTERN = "t{t:03d}.ply"


def export_ply_sequence(scene: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """``output/t000.ply`` … one standard 3DGS PLY per grid time (atomic folder)."""
    meta, model = load_scene(scene)
    with atomic_dir(output, marker=PLY_PATTERN.format(t=0)) as tmp:
        for t, time in enumerate(meta["times"]):
            write_ply(model.at_time(time), tmp / PLY_PATTERN.format(t=t))
    return Path(output)


def export_zip(scene: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """A zip of the per-time PLYs (``t000.ply`` … at its root), written atomically."""
    meta, model = load_scene(scene)
    output = Path(output)
    # the PLYs are staged in a hidden temporary folder that is removed even on Ctrl-C
    with atomic_file(output) as tmp_zip, temporary_dir(output) as parts:
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for t, time in enumerate(meta["times"]):
                name = PLY_PATTERN.format(t=t)
                write_ply(model.at_time(time), parts / name)
                archive.write(parts / name, arcname=name)
    return output


def fit_cubic_trajectories(
    positions: torch.Tensor, times: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Least-squares cubic ``p(t) = c0 + c1 t + c2 t² + c3 t³`` per Gaussian.

    ``positions [T, N, 3]`` at ``times [T]``; returns coefficients ``[N, 4, 3]`` and the RMS fit
    error (world units)."""
    basis = torch.stack([times**k for k in range(4)], dim=-1).double()  # [T, 4]
    flat = positions.double().permute(1, 0, 2)  # [N, T, 3]
    coeffs = torch.linalg.lstsq(basis.expand(flat.shape[0], -1, -1), flat).solution  # [N, 4, 3]
    fitted = torch.einsum("tk,nkc->ntc", basis, coeffs)
    rms = float(((fitted - flat) ** 2).sum(-1).mean().sqrt())
    return coeffs.float(), rms


SPLATV_MAGIC = b"FRSPLATV"


def export_splatv(
    scene: str | os.PathLike[str], output: str | os.PathLike[str]
) -> tuple[Path, float]:
    """Per-Gaussian motion baked as cubic trajectories into one binary file.

    Layout (little endian): the 8 bytes ``FRSPLATV``, a uint32 header length, a UTF-8 JSON header
    (``count``, ``times``, ``fields``), then ``count`` records of float32: the cubic coefficients
    of the position ``c0..c3`` (12), scale (1), opacity (1), color RGB (3), then the presence at
    each grid time (``presence`` of them, a number in the header: 0 when every Gaussian is always
    present; the opacity at a time is opacity × presence, linear between grid times). Returns the
    path and the RMS error of the cubic fit.
    """
    meta, model = load_scene(scene)
    times = torch.tensor(meta["times"], dtype=torch.float32)
    with torch.no_grad():
        positions = model.positions(times)  # [T, N, 3]
    coeffs, rms = fit_cubic_trajectories(positions, times)
    N = len(model)
    presence = torch.sigmoid(model.presence_logits.detach())
    records = torch.cat(
        [coeffs.reshape(N, 12), model.scales.detach()[:, None], model.opacities.detach()[:, None],
         model.colors.detach(), presence], dim=1,
    ).numpy().astype("<f4")  # fmt: skip
    header = json.dumps(
        {"count": N, "times": meta["times"], "fit_rms": rms, "presence": presence.shape[1],
         "fields": ["c0", "c1", "c2", "c3", "scale", "opacity", "rgb", "presence"]},
    ).encode()  # fmt: skip
    output = Path(output)
    with atomic_file(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(SPLATV_MAGIC + struct.pack("<I", len(header)) + header + records.tobytes())
    return output, rms


def read_splatv(path: str | os.PathLike[str]) -> tuple[dict, np.ndarray]:
    """Header and ``[count, 17 + presence]`` records of a file written by
    :func:`export_splatv`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FourrealError(f"{path} cannot be read ({err.strerror or err})") from err
    if not data.startswith(SPLATV_MAGIC) or len(data) < 12:
        raise FourrealError(f"{path} is not a fourreal .splatv file")
    (length,) = struct.unpack("<I", data[8:12])
    try:
        header = json.loads(data[12 : 12 + length])
        count = int(header["count"])
        width = 17 + int(header.get("presence", 0))
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError) as err:
        raise FourrealError(f"{path}: bad header ({err!r})") from err
    body = data[12 + length :]
    if count < 0 or width < 17 or len(body) != count * width * 4:
        raise FourrealError(f"{path}: expected {count} records, the file is truncated or wrong")
    return header, np.frombuffer(body, dtype="<f4").reshape(count, width)
