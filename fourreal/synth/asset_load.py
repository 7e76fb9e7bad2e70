"""Load animated 3D assets with Panda3D: the bundled panda or a user's glTF/egg/bam file, its
animation clips, and the posed triangle mesh at any frame of a clip.

Panda3D (and panda3d-gltf for .gltf/.glb) is an optional dependency, imported only inside these
functions. Panda3D's world is z up, like fourreal's; panda3d-gltf converts glTF's y-up files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fourreal.errors import FourrealError
from fourreal.synth.asset_skin import GeomSkin

INSTALL = "pip install 'fourreal[assets]'"
PRC = """
load-display p3tinydisplay
window-type offscreen
audio-library-name null
notify-level-x11display fatal
sync-video false
keep-texture-ram true
allow-incomplete-render false
"""
# the bundled asset: a skinned, textured panda and its walk cycle, shipped inside panda3d
BUNDLED = {"panda": ("panda-model.egg.pz", {"walk": "panda-walk4.egg.pz"})}
GLTF_SUFFIXES = (".gltf", ".glb")


def require_panda3d(gltf: bool = False) -> None:
    """Fail with the command that installs the optional dependencies if they are missing."""
    try:
        import panda3d.core  # noqa: F401

        if gltf:
            import gltf as _  # noqa: F401
    except ImportError as err:
        what = "panda3d-gltf" if gltf else "Panda3D"
        raise FourrealError(
            f"rendering animated assets needs {what} ({err.name} is not installed): {INSTALL}"
        ) from err


@contextmanager
def panda_config() -> Iterator[None]:
    """Panda3D settings for offscreen software rendering, in force inside the block.

    Textures keep their RAM copy and frames are never drawn with textures still loading: by
    default, Panda3D drops a texture's pixels once a renderer holds them, and the next renderer
    (the next call) draws with a 16 x 16 stand-in while the file reloads.
    """
    require_panda3d()
    from panda3d.core import load_prc_file_data, unload_prc_file

    page = load_prc_file_data("fourreal-assets", PRC)
    try:
        yield
    finally:
        unload_prc_file(page)


@dataclass(frozen=True)
class ClipInfo:
    name: str
    num_frames: int
    frame_rate: float
    """Frames per second of the clip."""

    @property
    def seconds(self) -> float:
        return self.num_frames / self.frame_rate


@dataclass
class Mesh:
    """A posed triangle mesh in the asset's model frame (z up)."""

    vertices: np.ndarray  # [N, 3] float64
    faces: np.ndarray  # [F, 3] int64


@dataclass
class Part:
    """One Geom of the model, skinned by fourreal, with its triangles and its GeomNode."""

    node: Any  # NodePath of the GeomNode
    skin: GeomSkin
    faces: np.ndarray  # [F, 3] int64


class LoadedAsset:
    """A model in Panda3D's scene graph, its bound clips, and a static copy of its geometry
    (``static``, a NodePath) that shows the pose last set by ``pose``."""

    def __init__(self, name: str, model: Any, clips: dict[str, list[Any]]):
        from panda3d.core import GeomNode, NodePath, OmniBoundingVolume

        self.name, self.model, self.clips = name, model, clips
        self.parts: list[Part] = []
        self.static = NodePath("static-" + name)
        self.holders = []  # (GeomNode in the model, its copy in static)
        for node in model.find_all_matches("**/+GeomNode"):
            if node.is_hidden():
                continue
            copy = GeomNode(node.get_name())
            for i in range(node.node().get_num_geoms()):
                geom = node.node().get_geom(i)
                skin = GeomSkin(geom, node.node().get_geom_state(i))
                self.parts.append(Part(node, skin, _triangles(geom)))
                copy.add_geom(skin.copy, skin.state)
            # vertices change every frame: never cull the copy by stale bounds
            copy.set_bounds(OmniBoundingVolume())
            copy.set_final(True)
            holder = self.static.attach_new_node(copy)
            holder.set_state(node.get_net_state())
            self.holders.append((node, holder))
        if not any(len(part.faces) for part in self.parts):
            raise FourrealError(f"asset {name} has no triangles to render")

    def clip_info(self, clip: str) -> ClipInfo:
        control = self.clips[clip][0]
        return ClipInfo(clip, control.get_num_frames(), control.get_frame_rate())

    def pose(self, clip: str | None, frame: float) -> Mesh:
        """Pose every character at ``frame`` of ``clip`` (fractional frames are blended), show
        the pose in ``static`` and return the posed triangles in the model frame."""
        for control in self.clips.get(clip, []) if clip else []:
            control.pose(frame)
        for node in self.model.find_all_matches("**/+Character"):
            node.node().force_update()
        for node, holder in self.holders:
            holder.set_mat(node.get_mat(self.model))
        vertices, faces, count = [], [], 0
        for part in self.parts:
            p, n = part.skin.pose()
            part.skin.show(p, n)
            M = _matrix(part.node.get_mat(self.model))  # row vectors: [p, 1] @ M
            vertices.append(p @ M[:3, :3] + M[3, :3])
            faces.append(part.faces + count)
            count += len(p)
        return Mesh(np.concatenate(vertices), np.concatenate(faces))


def load_asset(asset: str | Path, extra_clips: tuple[Path, ...] = ()) -> LoadedAsset:
    """Load ``asset`` ("panda" or a .glb/.gltf/.egg/.bam file) and bind its animation clips.

    Clips come from the file itself (glTF animations, anims inside an egg/bam) and from
    ``extra_clips``, Panda3D animation files (egg/bam) made for this model.
    """
    text = str(asset)
    if text in BUNDLED:
        require_panda3d()
        model_file, clip_files = BUNDLED[text]
        folder = bundled_models()
        model = _load_panda_file(folder / model_file)
        anims = {name: _load_panda_file(folder / file) for name, file in clip_files.items()}
    else:
        path = Path(asset)
        if not path.is_file():
            names = ", ".join(sorted(BUNDLED))
            raise FourrealError(
                f"--asset {text}: no such file (bundled assets: {names}; files: .glb, .gltf, "
                ".egg, .bam)"
            )
        gltf = path.name.lower().endswith(GLTF_SUFFIXES)
        require_panda3d(gltf=gltf)
        model = _load_gltf(path) if gltf else _load_panda_file(path)
        anims = {}
    for clip_path in extra_clips:
        anims[str(clip_path)] = _load_panda_file(clip_path)
    return LoadedAsset(text, model, _bind_clips(model, anims))


def _bind_clips(model: Any, anim_files: dict[str, Any]) -> dict[str, list[Any]]:
    """Bind the AnimBundles found in the model and in separate animation files to its
    characters. Clips inside the model are named by their bundle (glTF: the animation name)."""
    from panda3d.core import PartGroup

    characters = [node.node() for node in model.find_all_matches("**/+Character")]
    found = [(b.node().get_bundle().get_name(), b) for b in _anim_nodes(model)]
    for name, root in anim_files.items():
        found += [(name, b) for b in _anim_nodes(root)]
    flags = PartGroup.HMF_ok_part_extra | PartGroup.HMF_ok_anim_extra
    flags |= PartGroup.HMF_ok_wrong_root_name
    clips: dict[str, list[Any]] = {}
    for name, node in found:
        anim = node.node().get_bundle()
        for character in characters:
            for k in range(character.get_num_bundles()):
                part = character.get_bundle(k)
                # with several characters, a clip drives those whose skeleton it was made for
                if len(characters) > 1 and part.get_name() != node.node().get_name():
                    continue
                part.set_frame_blend_flag(True)
                control = part.bind_anim(anim, flags)
                if control is not None:
                    clips.setdefault(name, []).append(control)
    return clips


def _anim_nodes(root: Any) -> list[Any]:
    """AnimBundleNodes under ``root`` in the order of the file (depth first, children in order;
    ``find_all_matches`` returns siblings last first)."""
    from panda3d.core import AnimBundleNode

    out = []
    for child in root.get_children():
        if isinstance(child.node(), AnimBundleNode):
            out.append(child)
        out += _anim_nodes(child)
    return out


def bundled_models() -> Path:
    """The folder of models that ships inside the panda3d package."""
    import panda3d

    return Path(panda3d.__file__).parent / "models"


def _load_panda_file(path: Path) -> Any:
    from panda3d.core import Filename, Loader, LoaderOptions, NodePath

    # no RAM cache: every load is a fresh copy, so posing one never changes another
    options = LoaderOptions(LoaderOptions.LF_no_ram_cache | LoaderOptions.LF_report_errors)
    node = Loader.get_global_ptr().load_sync(Filename.from_os_specific(str(path)), options)
    if node is None:
        raise FourrealError(f"Panda3D could not load {path} (see its message above)")
    return NodePath(node)


def _load_gltf(path: Path) -> Any:
    import gltf
    from panda3d.core import NodePath

    # legacy materials: the software renderer has no shaders; a PBR material's diffuse color
    # would be black for the default metallic factor 1. No sRGB textures, for the same reason.
    settings = gltf.GltfSettings(legacy_materials=True, no_srgb=True)
    try:
        return NodePath(gltf.load_model(str(path), settings))
    except (ValueError, KeyError, IndexError, OSError, struct.error) as err:
        raise FourrealError(f"could not load glTF file {path}: {err}") from err


def _matrix(mat: Any) -> np.ndarray:
    return np.array([[mat.get_cell(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _triangles(geom: Any) -> np.ndarray:
    """``[F, 3]`` vertex indices of the geom's triangles (strips and fans decomposed)."""
    from panda3d.core import GeomEnums

    out = []
    for i in range(geom.get_num_primitives()):
        prim = geom.get_primitive(i)
        if prim.get_primitive_type() != GeomEnums.PT_polygons:
            continue
        prim = prim.decompose()
        if prim.is_indexed():
            dtype = {GeomEnums.NT_uint8: np.uint8, GeomEnums.NT_uint16: np.uint16}.get(
                prim.get_index_type(), np.uint32
            )
            index = np.frombuffer(prim.get_vertices().get_handle().get_data(), dtype)
        else:
            index = prim.get_first_vertex() + np.arange(prim.get_num_vertices())
        out.append(index.astype(np.int64).reshape(-1, 3))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)
