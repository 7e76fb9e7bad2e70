"""Standard 3D Gaussian splatting PLY files: write fourreal's Gaussians, read anyone's.

The layout is that of the original 3DGS code and the viewers that read it: one ``vertex``
element with ``x y z``, ``nx ny nz``, ``f_dc_0..2`` (degree-0 spherical harmonics), optionally
``f_rest_*``, ``opacity`` (a logit), ``scale_0..2`` (logs of standard deviations) and
``rot_0..3`` (a quaternion, w first). Reading checks the header against the file size before
allocating anything, so a small corrupt file cannot ask for gigabytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_file
from fourreal.types import GaussianParams

SH_C0 = 0.28209479177387814
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_MAX_HEADER = 64 * 1024
_SH_REST = re.compile(r"f_rest_\d{1,6}")


class PlyError(FourrealError):
    """A PLY file is missing, malformed or lacks what a splat needs."""


def colors_to_sh(colors: torch.Tensor) -> torch.Tensor:
    return (colors - 0.5) / SH_C0


def sh_to_colors(sh: torch.Tensor) -> torch.Tensor:
    return (sh * SH_C0 + 0.5).clamp(0, 1)


def write_ply(gaussians: GaussianParams, path: str | os.PathLike[str]) -> Path:
    """Write ``gaussians`` as a binary little-endian 3DGS PLY (SH degree 0), atomically."""
    n = len(gaussians)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    names += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.zeros((n, len(names)), dtype="<f4")
    g = {k: v.detach().cpu().double() for k, v in vars(gaussians).items() if v is not None}
    data[:, 0:3] = g["means"].numpy()
    data[:, 6:9] = colors_to_sh(g["colors"]).numpy()
    opacity = g["opacities"].clamp(1e-6, 1 - 1e-6)
    data[:, 9] = torch.log(opacity / (1 - opacity)).numpy()
    data[:, 10:13] = torch.log(g["scales"].clamp_min(1e-12)).numpy()
    quats = g["quats"] / g["quats"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    data[:, 13:17] = quats.numpy()
    header = "ply\nformat binary_little_endian 1.0\ncomment written by fourreal\n"
    header += f"element vertex {n}\n" + "".join(f"property float {k}\n" for k in names)
    header += "end_header\n"
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(data.tobytes())
    return path


@dataclass(frozen=True)
class PlyHeader:
    """What a PLY header declares about its ``vertex`` element."""

    count: int
    properties: tuple[str, ...]
    format: str  # ascii, binary_little_endian or binary_big_endian

    @property
    def sh_rest_count(self) -> int:
        """Number of higher-band SH coefficients per color channel (``f_rest_*`` / 3)."""
        return sum(bool(_SH_REST.fullmatch(name)) for name in self.properties) // 3


def read_ply_header(path: str | os.PathLike[str]) -> PlyHeader:
    """Parse and check only the header of a PLY file (cheap, reads at most 64 KiB)."""
    path = Path(path)
    with _open_ply(path) as f:
        header, _ = _header_text(f, path)
    count, props, fmt, _ = _parse_header(header, path)
    return PlyHeader(count, tuple(name for _, name in props), fmt)


def read_ply(path: str | os.PathLike[str], *, sh_rest: bool = True) -> GaussianParams:
    """Read a 3DGS PLY (binary or ascii) into activated :class:`GaussianParams`.

    Colors come from ``f_dc_*`` (or ``red green blue`` for a plain point cloud); missing
    ``opacity``, ``scale_*`` or ``rot_*`` get defaults (opaque, 1 cm, identity) only for plain
    point clouds. Higher SH bands are kept in ``sh_rest`` unless ``sh_rest=False`` (then they
    are not even converted, which saves memory on large files; see :func:`read_ply_header`
    to learn whether a file has them).
    """
    path = Path(path)
    with _open_ply(path) as f:
        size = os.fstat(f.fileno()).st_size
        header, body_start = _header_text(f, path)
        vertex_count, props, fmt, before = _parse_header(header, path)
        f.seek(body_start)
        if fmt == "ascii":
            table = _read_ascii(f, vertex_count, props, path)
        else:
            endian = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, endian + _TYPES[t]) for t, name in props])
            skip = before  # bytes of elements before "vertex" (rare; fixed-size only)
            need = body_start + skip + vertex_count * dtype.itemsize
            if need > size:
                raise PlyError(
                    f"{path} declares {vertex_count} vertices ({need} bytes) but has {size} bytes: "
                    "the file is truncated or its header is wrong"
                )
            f.seek(body_start + skip)
            table = np.frombuffer(f.read(vertex_count * dtype.itemsize), dtype=dtype)
    return _to_gaussians(table, path, sh_rest)


def _open_ply(path: Path) -> BinaryIO:
    if not path.is_file():
        raise PlyError(f"{path} does not exist")
    try:
        return open(path, "rb")
    except OSError as err:
        raise PlyError(f"{path} cannot be read ({err.strerror})") from err


def _header_text(f: BinaryIO, path: Path) -> tuple[str, int]:
    """The header up to ``end_header`` and the offset of the body."""
    head = f.read(_MAX_HEADER)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise PlyError(f"{path} is not a PLY file (no 'ply' ... 'end_header' header)")
    newline = head.find(b"\n", end)
    if newline < 0:
        raise PlyError(f"{path}: the header does not end with a newline")
    return head[:newline].decode("ascii", errors="replace"), newline + 1


def _parse_header(header: str, path: Path) -> tuple[int, list[tuple[str, str]], str, int]:
    lines = [line.strip() for line in header.splitlines()[1:]]
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines:
        if not line or line.startswith(("comment", "obj_info")):
            continue
        parts = line.split()
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            if not re.fullmatch(r"\d+", parts[2]):
                raise PlyError(f"{path}: element count {parts[2]!r} is not a number")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if len(parts) < 3:
                raise PlyError(f"{path}: incomplete property line {line!r}")
            if parts[1] == "list":
                if elements[-1][0] == "vertex":
                    raise PlyError(f"{path}: list properties on vertices are not supported")
                elements[-1][2].append(("list", parts[-1]))
                continue
            if len(parts) != 3 or parts[1] not in _TYPES:
                raise PlyError(f"{path}: unknown property line {line!r}")
            elements[-1][2].append((parts[1], parts[2]))
        elif parts[0] != "end_header":
            raise PlyError(f"{path}: unexpected header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyError(f"{path}: unknown or missing format {fmt!r}")
    before = 0
    for name, count, props in elements:
        if name == "vertex":
            names = [p for _, p in props]
            if len(set(names)) != len(names):
                raise PlyError(f"{path}: duplicate vertex properties")
            if not names:
                raise PlyError(f"{path}: the vertex element has no properties")
            return count, props, fmt, before
        if any(t == "list" for t, _ in props) or fmt == "ascii":
            raise PlyError(f"{path}: elements before 'vertex' are not supported")
        before += count * sum(np.dtype(_TYPES[t]).itemsize for t, _ in props)
    raise PlyError(f"{path} has no 'vertex' element")


def _read_ascii(f, count: int, props: list[tuple[str, str]], path: Path) -> np.ndarray:
    dtype = np.dtype([(name, _TYPES[t]) for t, name in props])
    rows = []
    for k in range(count):
        line = f.readline()
        if not line:
            raise PlyError(f"{path}: ascii body ends after {k} of {count} vertices")
        values = line.split()
        if len(values) != len(props):
            raise PlyError(f"{path}: vertex {k} has {len(values)} values, expected {len(props)}")
        try:
            rows.append(tuple(float(v) for v in values))
        except ValueError as err:
            raise PlyError(f"{path}: vertex {k} is not numeric ({err})") from err
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            return np.array(rows, dtype=dtype)
    except (ValueError, OverflowError, TypeError) as err:
        raise PlyError(f"{path}: a value does not fit its property type ({err})") from err


def _to_gaussians(table: np.ndarray, path: Path, keep_sh_rest: bool) -> GaussianParams:
    names = set(table.dtype.names or ())

    def column(*keys: str) -> torch.Tensor:
        missing = [k for k in keys if k not in names]
        if missing:
            raise PlyError(f"{path}: missing vertex properties {missing}")
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are caught below
            return torch.from_numpy(np.stack([table[k].astype(np.float64) for k in keys], -1))

    n = len(table)
    means = column("x", "y", "z")
    if {"f_dc_0", "f_dc_1", "f_dc_2"} <= names:
        colors = sh_to_colors(column("f_dc_0", "f_dc_1", "f_dc_2"))
    elif {"red", "green", "blue"} <= names:
        colors = column("red", "green", "blue") / 255
    else:
        raise PlyError(f"{path}: no colors (f_dc_0..2 or red/green/blue)")
    splat = "opacity" in names
    opacities = (
        torch.sigmoid(column("opacity")[:, 0]) if splat else torch.ones(n, dtype=torch.float64)
    )
    if {"scale_0", "scale_1", "scale_2"} <= names:
        scales = torch.exp(column("scale_0", "scale_1", "scale_2"))
    elif splat:
        raise PlyError(f"{path}: a splat needs scale_0..2")
    else:
        scales = torch.full((n, 3), 0.01, dtype=torch.float64)
    if {"rot_0", "rot_1", "rot_2", "rot_3"} <= names:
        quats = column("rot_0", "rot_1", "rot_2", "rot_3")
        quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    else:
        quats = torch.zeros(n, 4, dtype=torch.float64)
        quats[:, 0] = 1
    rest = sorted((k for k in names if _SH_REST.fullmatch(k)), key=lambda k: int(k[7:]))
    sh_rest = None
    if rest and keep_sh_rest:
        if len(rest) % 3:
            raise PlyError(f"{path}: {len(rest)} f_rest properties is not a multiple of 3")
        # 3DGS stores the rest bands channel-major: [R coefficients..., G..., B...]
        sh_rest = column(*rest).reshape(n, 3, len(rest) // 3).transpose(1, 2)
    checks = (("positions", means), ("colors", colors), ("scales", scales))
    checks += (("opacities", opacities), ("rotations", quats))
    for name, value in checks:
        if not bool(torch.isfinite(value).all()):
            raise PlyError(f"{path}: {name} contain NaN or infinite values")
    return GaussianParams(
        means=means.float(), scales=scales.float(), quats=quats.float(),
        opacities=opacities.float(), colors=colors.float(),
        sh_rest=None if sh_rest is None else sh_rest.float(),
    )  # fmt: skip
