"""Deterministic skinning of Panda3D geometry, and a static copy of the model that shows it.

Panda3D skins on the CPU in float32 and sums each vertex's joint matrices in the order of their
memory addresses, so two loads of the same asset pose to vertices that differ in the last bits
(and, rarely, in a rendered pixel). Here the same linear blend skinning runs in float64 with the
joints in name order: the posed mesh (ground-truth vertices, depth) is bit-identical across
runs, and the renderer draws a static copy of the geometry holding exactly these vertices.
Morph targets (sliders) are left to Panda3D (geoms that have them pose as Panda3D poses them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_DTYPES = {"NT_float32": np.float32, "NT_float64": np.float64, "NT_uint8": np.uint8}
_DTYPES |= {"NT_uint16": np.uint16, "NT_uint32": np.uint32, "NT_int32": np.int32}


@dataclass
class Column:
    """Where a vertex column lives: array index, byte offset in a row, dtype, components."""

    array: int
    start: int
    dtype: type
    size: int

    @classmethod
    def find(cls, vdata: Any, name: str) -> Column | None:
        from panda3d.core import GeomEnums

        fmt = vdata.get_format()
        column = fmt.get_column(name)
        if column is None:
            return None
        numeric = column.get_numeric_type()
        names = [n for n in _DTYPES if getattr(GeomEnums, n) == numeric]
        if not names:
            return None
        array = fmt.get_array_with(name)
        return cls(array, column.get_start(), _DTYPES[names[0]], column.get_num_components())

    def read(self, raw: np.ndarray) -> np.ndarray:
        """``[N, size]`` values from an array's raw rows ``[N, stride]`` uint8."""
        nbytes = self.size * np.dtype(self.dtype).itemsize
        block = np.ascontiguousarray(raw[:, self.start : self.start + nbytes])
        return block.view(self.dtype).reshape(len(raw), self.size)

    def write(self, raw: np.ndarray, values: np.ndarray) -> None:
        nbytes = self.size * np.dtype(self.dtype).itemsize
        data = np.ascontiguousarray(values.astype(self.dtype)).view(np.uint8)
        raw[:, self.start : self.start + nbytes] = data.reshape(len(raw), nbytes)


def raw_arrays(vdata: Any) -> list[np.ndarray]:
    """Each array of a GeomVertexData as ``[N, stride]`` uint8 (copies)."""
    fmt = vdata.get_format()
    out = []
    for a in range(fmt.get_num_arrays()):
        stride = fmt.get_array(a).get_stride()
        data = np.frombuffer(vdata.get_array(a).get_handle().get_data(), np.uint8)
        out.append(data.reshape(-1, stride).copy())
    return out


def positions(vdata: Any) -> np.ndarray:
    """``[N, 3]`` float64 vertex positions of a GeomVertexData (homogeneous ones divided)."""
    column = Column.find(vdata, "vertex")
    assert column is not None, "a GeomVertexData without a vertex column"
    p = column.read(raw_arrays(vdata)[column.array]).astype(np.float64)
    return p[:, :3] / p[:, 3:4] if column.size == 4 else p[:, :3]


class GeomSkin:
    """One Geom of a model: its rest vertices, skin weights, and a static copy for rendering."""

    def __init__(self, geom: Any, state: Any):
        from panda3d.core import GeomVertexAnimationSpec, GeomVertexData, GeomVertexFormat

        self.source = geom
        rest = geom.get_vertex_data()
        self.raw = raw_arrays(rest)
        self.vertex = Column.find(rest, "vertex")
        self.normal = Column.find(rest, "normal")
        self.rest_p = positions(rest)
        self.rest_n = None if self.normal is None else self.normal_values(self.raw)
        self.table = rest.get_transform_blend_table()
        morphs = rest.get_slider_table() is not None
        self.animated = self.table is not None or morphs
        # geoms with morph targets are posed by Panda3D, the others by us
        self.own = self.table is not None and not morphs
        if self.own:
            self._read_weights(rest)
        fmt = GeomVertexFormat(rest.get_format())
        fmt.set_animation(GeomVertexAnimationSpec())  # the copy is static: nothing re-poses it
        self.copy_data = GeomVertexData(rest)
        self.copy_data.set_format(GeomVertexFormat.register_format(fmt))
        self.copy = geom.make_copy()
        self.copy.set_vertex_data(self.copy_data)
        self.state = state

    def normal_values(self, raw: list[np.ndarray]) -> np.ndarray:
        assert self.normal is not None
        return self.normal.read(raw[self.normal.array])[:, :3].astype(np.float64)

    def _read_weights(self, rest: Any) -> None:
        blend_column = Column.find(rest, "transform_blend")
        assert blend_column is not None, "a skinned GeomVertexData without transform_blend"
        self.blend_of_vertex = blend_column.read(self.raw[blend_column.array])[:, 0].astype(int)
        entries, transforms = [], {}
        for b in range(self.table.get_num_blends()):
            blend = self.table.get_blend(b)
            for k in range(blend.get_num_transforms()):
                transform = blend.get_transform(k)
                transforms.setdefault(_transform_key(transform), transform)
                entries.append((b, _transform_key(transform), blend.get_weight(k)))
        # joints in name order, so that the sums below run in the same order on every load
        keys = sorted(transforms)
        self.transforms = [transforms[k] for k in keys]
        index = {k: i for i, k in enumerate(keys)}
        self.weights = np.zeros((self.table.get_num_blends(), len(keys)))
        for b, key, weight in entries:
            self.weights[b, index[key]] += weight

    def pose(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Posed positions ``[N, 3]`` and normals (float64, the GeomNode's frame), now."""
        from panda3d.core import LMatrix4f, Thread

        if not self.animated:
            return self.rest_p, self.rest_n
        if not self.own:
            animated = self.source.get_animated_vertex_data(True, Thread.get_current_thread())
            raw = raw_arrays(animated)
            normals = None if self.normal is None else self.normal_values(raw)
            return positions(animated), normals
        mats = np.empty((len(self.transforms), 4, 4))
        m = LMatrix4f()
        for j, transform in enumerate(self.transforms):
            transform.get_matrix(m)
            mats[j] = [[m.get_cell(r, c) for c in range(4)] for r in range(4)]
        per_blend = np.einsum("bj,jrc->brc", self.weights, mats)
        M = per_blend[self.blend_of_vertex]  # [N, 4, 4], row vectors: [p, 1] @ M
        p = np.einsum("ni,nij->nj", self.rest_p, M[:, :3, :3]) + M[:, 3, :3]
        if self.rest_n is None:
            return p, None
        n = np.einsum("ni,nij->nj", self.rest_n, M[:, :3, :3])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return p, n

    def show(self, p: np.ndarray, n: np.ndarray | None) -> None:
        """Write posed vertices into the static copy."""
        assert self.vertex is not None
        if not self.animated:
            return  # the copy holds the rest pose already
        changed = {self.vertex.array: self.raw[self.vertex.array].copy()}
        values = p if self.vertex.size == 3 else np.concatenate([p, np.ones((len(p), 1))], 1)
        self.vertex.write(changed[self.vertex.array], values)
        if self.normal is not None and n is not None:
            rows = changed.setdefault(self.normal.array, self.raw[self.normal.array].copy())
            extra = self.normal.size - 3
            values = n if extra == 0 else np.concatenate([n, np.zeros((len(n), extra))], 1)
            self.normal.write(rows, values)
        vdata = self.copy.modify_vertex_data()
        for a, rows in changed.items():
            vdata.modify_array(a).modify_handle().set_data(rows.tobytes())


def _transform_key(transform: Any) -> str:
    joint = getattr(transform, "get_joint", None)
    return joint().get_name() if joint is not None else str(transform)
