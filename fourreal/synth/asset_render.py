"""Offscreen rendering with Panda3D's software renderer (tinydisplay), on any CPU, no display.

A self-contained engine, pipe and buffer are made per call and released after (no ShowBase, no
window). OpenCV cameras (x right, y down, z forward) become Panda3D cameras (x right, y forward,
z up) with a lens whose film is measured in units of the focal length, so ``K`` carries over
exactly, principal point included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from fourreal.errors import FourrealError
from fourreal.synth.asset_load import panda_config

# Panda3D camera axes in OpenCV camera coordinates: columns are Panda's x (right), y (forward),
# z (up) written in OpenCV's x right, y down, z forward.
CV_FROM_PANDA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def panda_camera_mat(T_world_cam: Float[Tensor, "4 4"]) -> Any:
    """Panda3D transform (LMatrix4, row vectors) of the camera node for an OpenCV pose."""
    from panda3d.core import LMatrix4

    T_world_panda = np.eye(4)
    T_world_panda[:3, :3] = T_world_cam[:3, :3].double().numpy() @ CV_FROM_PANDA
    T_world_panda[:3, 3] = T_world_cam[:3, 3].double().numpy()
    return LMatrix4(*T_world_panda.T.reshape(-1).tolist())


def panda_lens(K: Float[Tensor, "3 3"], width: int, height: int, near: float, far: float) -> Any:
    """A PerspectiveLens that projects like ``K`` onto a ``width`` × ``height`` image."""
    from panda3d.core import PerspectiveLens

    fx, fy, cx, cy, skew = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), K[0, 1])
    if abs(float(skew)) > 1e-9:
        raise FourrealError("asset rendering needs intrinsics without skew (K[0, 1] = 0)")
    lens = PerspectiveLens()
    lens.set_focal_length(1.0)
    lens.set_film_size(width / fx, height / fy)
    # Panda's film y points up and its image rows run bottom to top
    lens.set_film_offset((width / 2 - cx) / fx, (cy - height / 2) / fy)
    lens.set_near_far(near, far)
    return lens


class OffscreenRenderer:
    """One offscreen tinydisplay buffer and camera; renders a scene graph to uint8 RGB."""

    def __init__(self, width: int, height: int, background: tuple[float, float, float]):
        from panda3d.core import (
            Camera,
            FrameBufferProperties,
            GraphicsEngine,
            GraphicsOutput,
            GraphicsPipe,
            NodePath,
            Texture,
            WindowProperties,
        )

        self.width, self.height = width, height
        self.pipe = _software_pipe()
        self.engine = GraphicsEngine(self.pipe)
        fb = FrameBufferProperties()
        fb.set_rgb_color(True)
        fb.set_color_bits(24)
        fb.set_depth_bits(24)
        self.buffer = self.engine.make_output(
            self.pipe, "fourreal-asset", 0, fb, WindowProperties.size(width, height),
            GraphicsPipe.BF_refuse_window,
        )  # fmt: skip
        if self.buffer is None:
            raise FourrealError("Panda3D could not open an offscreen software buffer")
        self.texture = Texture("color")
        self.buffer.add_render_texture(
            self.texture, GraphicsOutput.RTM_copy_ram, GraphicsOutput.RTP_color
        )
        self.camera = NodePath(Camera("camera"))
        region = self.buffer.make_display_region()
        region.set_camera(self.camera)
        region.set_clear_color_active(True)
        region.set_clear_color((*background, 1.0))
        region.set_clear_depth_active(True)

    def render(
        self, scene: Any, K: Tensor, T_world_cam: Tensor, near: float, far: float
    ) -> np.ndarray:
        """``[H, W, 3]`` uint8 image of ``scene`` (a NodePath root) seen by the camera."""
        self.camera.reparent_to(scene)
        self.camera.node().set_lens(panda_lens(K, self.width, self.height, near, far))
        self.camera.set_mat(panda_camera_mat(T_world_cam))
        self.engine.render_frame()
        data = self.texture.get_ram_image_as("RGB")
        image = np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)
        return image[::-1].copy()

    def close(self) -> None:
        self.camera.remove_node()
        self.engine.remove_all_windows()


@contextmanager
def offscreen_renderer(
    width: int, height: int, background: tuple[float, float, float]
) -> Iterator[OffscreenRenderer]:
    with panda_config():
        renderer = OffscreenRenderer(width, height, background)
        try:
            yield renderer
        finally:
            renderer.close()


def _software_pipe() -> Any:
    """The tinydisplay offscreen pipe (loading the module, without needing an X display)."""
    from panda3d.core import GraphicsPipeSelection, TypeRegistry

    selection = GraphicsPipeSelection.get_global_ptr()
    kind = TypeRegistry.ptr().find_type("TinyOffscreenGraphicsPipe")
    if kind.get_index() == 0:  # the module is not loaded yet; loading it makes its default pipe
        default = selection.make_module_pipe("p3tinydisplay")
        kind = TypeRegistry.ptr().find_type("TinyOffscreenGraphicsPipe")
        if kind.get_index() == 0:
            if default is None:
                raise FourrealError("Panda3D's software renderer (p3tinydisplay) is missing")
            return default
    return selection.make_pipe(kind)


def add_lights(root: Any, light_dir: tuple[float, float, float], ambient: float) -> None:
    """Ambient light plus one directional light coming from ``light_dir`` (world, fixed to the
    world so that a surface point has the same color in every view)."""
    from panda3d.core import AmbientLight, DirectionalLight, LVector3

    amb = AmbientLight("ambient")
    amb.set_color((ambient, ambient, ambient, 1.0))
    sun = DirectionalLight("sun")
    sun.set_color((1 - ambient, 1 - ambient, 1 - ambient, 1.0))
    sun.set_direction(-LVector3(*light_dir).normalized())
    for light in (amb, sun):
        root.set_light(root.attach_new_node(light))


def make_ground(
    radius: float, cell: float = 0.25, rings: int = 12, sectors: int = 64
) -> tuple[Any, np.ndarray, np.ndarray]:
    """A checkered ground disk at z = 0: (NodePath, vertices [N, 3], faces [F, 3])."""
    from panda3d.core import (
        Geom,
        GeomNode,
        GeomTriangles,
        GeomVertexData,
        GeomVertexFormat,
        GeomVertexWriter,
        NodePath,
    )

    r = np.linspace(0.0, radius, rings + 1)[1:]
    a = np.linspace(0.0, 2 * math.pi, sectors, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], -1)  # [S, 2]
    xy = np.concatenate([np.zeros((1, 2)), (r[:, None, None] * ring).reshape(-1, 2)])
    vertices = np.concatenate([xy, np.zeros((len(xy), 1))], 1)
    faces = _disk_faces(rings, sectors)
    vdata = GeomVertexData("ground", GeomVertexFormat.get_v3n3t2(), Geom.UH_static)
    vdata.set_num_rows(len(xy))
    pos, nrm, uv = (GeomVertexWriter(vdata, c) for c in ("vertex", "normal", "texcoord"))
    for x, y in xy.tolist():
        pos.add_data3(x, y, 0.0)
        nrm.add_data3(0.0, 0.0, 1.0)
        uv.add_data2(x / (2 * cell), y / (2 * cell))
    prim = GeomTriangles(Geom.UH_static)
    for tri in faces.tolist():
        prim.add_vertices(*tri)
    geom = Geom(vdata)
    geom.add_primitive(prim)
    node = GeomNode("ground")
    node.add_geom(geom)
    ground = NodePath(node)
    ground.set_texture(_checker())
    ground.set_two_sided(True)
    return ground, vertices, faces


def _checker() -> Any:
    """A 2 x 2 gray checker texture, sampled without blending (one texel per ground cell)."""
    from panda3d.core import SamplerState, Texture

    checker = Texture("checker")
    checker.setup_2d_texture(2, 2, Texture.T_unsigned_byte, Texture.F_rgb)
    light, dark = bytes([150, 152, 150]), bytes([105, 107, 108])
    checker.set_ram_image(light + dark + dark + light)
    checker.set_minfilter(SamplerState.FT_nearest)
    checker.set_magfilter(SamplerState.FT_nearest)
    return checker


def _disk_faces(rings: int, sectors: int) -> np.ndarray:
    s = np.arange(sectors)
    nxt = (s + 1) % sectors
    faces = [np.stack([np.zeros(sectors, np.int64), 1 + s, 1 + nxt], 1)]
    for k in range(rings - 1):
        inner, outer = 1 + k * sectors, 1 + (k + 1) * sectors
        faces.append(np.stack([inner + s, outer + s, outer + nxt], 1))
        faces.append(np.stack([inner + s, outer + nxt, inner + nxt], 1))
    return np.concatenate(faces)
