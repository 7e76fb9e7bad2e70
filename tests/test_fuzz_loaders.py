"""Fuzz every loader: malformed input gives one typed FourrealError naming the file, in bounded
time and memory; valid-looking input loads to sane values.

The default run tries about 2,100 inputs (a summary line at the end of the pytest output gives
the exact counts); ``-m slow`` runs the same tests with ten times as many.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz_inputs import (
    COUNTS,
    FAILURES,
    INTERESTING_INTS,
    UNTYPED,
    fuzz,
    json_values,
    mutate_bytes,
    mutate_json,
)
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from fourreal.errors import FourrealError, ResourceError
from fourreal.io import load_grid, read_ply, read_video, save_grid, write_ply, write_video
from fourreal.io.ply import write_point_ply
from fourreal.types import Cameras, GaussianParams, Grid

SCALE = [pytest.param(1, id="default"), pytest.param(10, id="slow", marks=pytest.mark.slow)]


class _Summary:
    """Prints the inputs tried per loader at the end of the run (the issue's 'fuzz count')."""

    def pytest_terminal_summary(self, terminalreporter):
        if not COUNTS:
            return
        total = sum(COUNTS.values())
        rows = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
        terminalreporter.write_sep("-", "loader fuzzing")
        terminalreporter.write_line(
            f"{total} inputs tried ({rows}); {sum(FAILURES.values())} rejected with a typed "
            f"FourrealError; {sum(UNTYPED.values())} untyped errors"
        )


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("fourreal-fuzz-summary"):
        plugins.register(_Summary(), "fourreal-fuzz-summary")
    yield


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Small valid files of every kind, written by fourreal's own writers."""
    root = tmp_path_factory.mktemp("seeds")
    g = torch.Generator().manual_seed(0)
    n = 4
    gaussians = GaussianParams(
        means=torch.randn(n, 3, generator=g), scales=torch.rand(n, 3, generator=g) * 0.1 + 0.01,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=torch.rand(n, generator=g) * 0.9 + 0.05, colors=torch.rand(n, 3, generator=g),
    )  # fmt: skip
    write_ply(gaussians, root / "binary.ply")
    write_point_ply(root / "points.ply", torch.randn(n, 3, generator=g), torch.rand(n, 3))
    body = (root / "binary.ply").read_bytes()
    header, data = body.split(b"end_header\n", 1)
    rows = np.frombuffer(data, dtype="<f4").reshape(n, -1)
    ascii_header = header.replace(b"binary_little_endian", b"ascii") + b"end_header\n"
    ascii_body = "".join(" ".join(f"{x:.6g}" for x in row) + "\n" for row in rows)
    (root / "ascii.ply").write_bytes(ascii_header + ascii_body.encode())
    big = header.replace(b"binary_little_endian", b"binary_big_endian") + b"end_header\n"
    (root / "big.ply").write_bytes(big + rows.astype(">f4").tobytes())

    frames = torch.rand(2, 2, 3, 6, 8, generator=g)
    K = torch.tensor([[8.0, 0, 4], [0, 8, 3], [0, 0, 1]])
    grid = Grid(
        frames=frames, known=torch.tensor([[True, True], [True, False]]),
        cameras=Cameras(K.expand(2, 3, 3).clone(), torch.eye(4).expand(2, 4, 4).clone()),
        depth=torch.rand(2, 2, 6, 8, generator=g), gt={"tracks": torch.rand(2, 2, 5, 3)},
    )  # fmt: skip
    save_grid(grid, root / "grid")
    video = torch.rand(3, 3, 16, 16, generator=g)
    write_video(video, root / "clip.mp4", fps=8)
    image = (video[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    for fmt in ("png", "jpeg"):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        (root / f"image.{fmt}").write_bytes(buffer.getvalue())
    return root


@pytest.fixture(scope="module")
def scene_seed(tmp_path_factory):
    """A tiny but real scene folder and checkpoint, written by recon.scene's writers."""
    from fourreal.recon.config import ReconConfig
    from fourreal.recon.deform import DeformConfig
    from fourreal.recon.fit import Reconstruction, make_optimizer
    from fourreal.recon.model import DynamicGaussians
    from fourreal.recon.scene import save_checkpoint, save_scene

    folder = tmp_path_factory.mktemp("scene") / "scene"
    g = torch.Generator().manual_seed(1)
    n, views = 6, 2
    config = ReconConfig(deform=DeformConfig(pos_freqs=1, time_freqs=1, width=8, depth=2))
    model = DynamicGaussians(
        torch.randn(n, 3, generator=g), torch.full((n,), 0.05), torch.full((n,), 0.7),
        torch.rand(n, 3, generator=g), torch.zeros(views, n, 3), config.deform, 1.0,
    )  # fmt: skip
    K = torch.tensor([[8.0, 0, 4], [0, 8, 3], [0, 0, 1]]).expand(views, 3, 3).clone()
    recon = Reconstruction(
        model, K, torch.eye(4).expand(views, 4, 4).clone(), torch.tensor([0.0, 0.5, 1.0]),
        torch.zeros(3), [(1, 1)], 0, [0.5, 0.25], 2,
    )  # fmt: skip
    recon.image_size = (6, 8)
    save_scene(recon, config, {"psnr": 20.0}, folder, {"test": True})
    optimizer = make_optimizer(recon, config)
    loss = model.means.sum() + model.deform(model.means, torch.tensor([0.5])).sum()
    loss.backward()
    optimizer.step()
    save_checkpoint(recon, optimizer, config, folder)
    return folder


def _fresh(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.mktemp(name)


# ------------------------------------------------------------------------------------- PLY


PLY_NAMES = ["x", "y", "z", "nx", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "red", "green", "blue", "f_rest_0",
             "f_rest_1", "f_rest_2", "f_rest_x", "x"]  # fmt: skip
PLY_TYPES = ["float", "double", "uchar", "int", "short", "uint", "char", "float32", "half", "list"]


@st.composite
def ply_files(draw) -> bytes:
    """A PLY header drawn from its grammar (good and bad parts) and a body that may not match."""
    fmt = draw(st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian", "xml"]))
    count = draw(st.sampled_from(INTERESTING_INTS) | st.integers(0, 6) | st.just("many"))
    lines = ["ply", f"format {fmt} 1.0"]
    if draw(st.booleans()):
        lines.append("element face 2\nproperty list uchar int vertex_indices")
    lines.append(f"element vertex {count}")
    for name in draw(st.lists(st.sampled_from(PLY_NAMES), max_size=14)):
        kind = draw(st.sampled_from(PLY_TYPES))
        lines.append(f"property {kind} {name}" if kind != "list" else f"property list uchar {name}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.sampled_from(["property", "element", "bogus line", "comment x"])))
    header = "\n".join(lines) + "\nend_header\n"
    if fmt == "ascii":
        numbers = st.sampled_from(["0", "1", "-1", "nan", "inf", "1e300", "-1e39", "x", "255"])
        body = "\n".join(" ".join(draw(st.lists(numbers, max_size=20))) for _ in range(3))
        return header.encode() + body.encode()
    return header.encode() + draw(st.binary(max_size=400))


def _valid_gaussians(result: GaussianParams) -> None:
    for name in ("means", "scales", "quats", "opacities", "colors"):
        assert bool(torch.isfinite(getattr(result, name)).all()), name
    assert bool(((result.opacities >= 0) & (result.opacities <= 1)).all())


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_ply_headers(scale, tmp_path_factory):
    work = _fresh(tmp_path_factory, "ply")

    def prepare(data):
        path = work / "case.ply"
        path.write_bytes(data.draw(ply_files()))
        return path, lambda: read_ply(path)

    fuzz("ply-grammar", 300 * scale, prepare, _valid_gaussians)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_ply_bytes(scale, seeds, tmp_path_factory):
    work = _fresh(tmp_path_factory, "plyb")
    sources = [(seeds / f).read_bytes() for f in ("binary.ply", "ascii.ply", "big.ply",
                                                  "points.ply")]  # fmt: skip

    def prepare(data):
        path = work / "case.ply"
        path.write_bytes(mutate_bytes(data, data.draw(st.sampled_from(sources))))
        return path, lambda: read_ply(path)

    fuzz("ply-bytes", 300 * scale, prepare, _valid_gaussians)


def test_ply_declaring_1e8_vertices_fails_before_allocating(tmp_path):
    path = tmp_path / "liar.ply"
    props = "".join(f"property float {k}\n" for k in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"))
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {10**8}\n{props}end_header\n"
    path.write_bytes(header.encode() + bytes(1024 - len(header)))
    tracemalloc.start()
    try:
        with pytest.raises(FourrealError, match=r"liar\.ply declares 100000000 vertices"):
            read_ply(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ------------------------------------------------------------------------------------ grids


def _valid_grid(grid: Grid) -> None:
    assert grid.frames.min() >= 0 and grid.frames.max() <= 1


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_grid_json(scale, seeds, tmp_path_factory):
    work = _fresh(tmp_path_factory, "gridj") / "grid"
    shutil.copytree(seeds / "grid", work)
    meta = json.loads((seeds / "grid" / "grid.json").read_text())

    def prepare(data):
        if data.draw(st.integers(0, 4)) == 0:  # raw text, possibly not JSON at all
            text = mutate_bytes(data, json.dumps(meta).encode())
        else:
            text = json.dumps(mutate_json(data, meta)).encode()
        (work / "grid.json").write_bytes(text)
        return work, lambda: load_grid(work)

    fuzz("grid.json", 200 * scale, prepare, _valid_grid)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_grid_files(scale, seeds, tmp_path_factory):
    """Frames (PNG, or JPEG bytes under a .png name), depth and ground-truth .npy files."""
    base = _fresh(tmp_path_factory, "gridf")
    files = sorted(p.relative_to(seeds / "grid") for p in (seeds / "grid").rglob("*.*")
                   if p.name != "grid.json")  # fmt: skip
    jpeg = (seeds / "image.jpeg").read_bytes()

    def prepare(data):
        work = base / "grid"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(seeds / "grid", work)
        for rel in data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=2, unique=True)):
            target = work / rel
            if data.draw(st.integers(0, 9)) == 0:
                target.unlink()
                continue
            source = jpeg if rel.suffix == ".png" and data.draw(st.booleans()) else None
            target.write_bytes(mutate_bytes(data, source or target.read_bytes()))
        return work, lambda: load_grid(work)

    fuzz("grid-files", 150 * scale, prepare, _valid_grid)


def test_npy_declaring_a_huge_shape_fails_before_allocating(seeds, tmp_path):
    grid = tmp_path / "grid"
    shutil.copytree(seeds / "grid", grid)
    depth = grid / "depth" / "v000_t000.npy"
    raw = depth.read_bytes()
    # a 4-byte-float depth map of 10^8 x 4 elements declared in a header of unchanged length
    depth.write_bytes(raw.replace(b"(6, 8), }    ", b"(400000000,)}"))
    tracemalloc.start()
    try:
        with pytest.raises(FourrealError, match=r"v000_t000\.npy"):
            load_grid(grid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_grid_too_large_for_memory_fails_with_the_option_that_helps(seeds, tmp_path):
    grid = tmp_path / "grid"
    shutil.copytree(seeds / "grid", grid)
    meta = json.loads((grid / "grid.json").read_text())
    meta.update(views=4096, times=4096, height=4096, width=4096, known=None, cameras=None)
    (grid / "grid.json").write_text(json.dumps(meta))
    with pytest.raises(ResourceError, match=r"grid\.json .*--height/--width"):
        load_grid(grid)


# ------------------------------------------------------------------------- images and video


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_images(scale, seeds, tmp_path_factory):
    base = _fresh(tmp_path_factory, "img")
    sources = {s: (seeds / f"image.{s}").read_bytes() for s in ("png", "jpeg")}

    def prepare(data):
        folder = base / "frames"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        suffix = data.draw(st.sampled_from(["png", "jpeg"]))
        (folder / "0.png").write_bytes(sources["png"])
        (folder / f"1.{suffix}").write_bytes(mutate_bytes(data, sources[suffix]))
        return folder, lambda: read_video(folder)

    fuzz("png/jpeg", 150 * scale, prepare, lambda x: None)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_video(scale, seeds, tmp_path_factory):
    work = _fresh(tmp_path_factory, "vid")
    source = (seeds / "clip.mp4").read_bytes()

    def prepare(data):
        path = work / "clip.mp4"
        path.write_bytes(mutate_bytes(data, source))
        return path, lambda: read_video(path, max_frames=8)

    def valid(frames):
        assert frames.ndim == 4 and frames.shape[1] == 3 and len(frames) >= 1

    fuzz("mp4", 100 * scale, prepare, valid)


def test_image_bomb_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height: 10^10 pixels
    (folder / "0.png").write_bytes(bytes(png))
    with pytest.raises(FourrealError, match=r"0\.png"):
        read_video(folder)


# ----------------------------------------------------------------------- zips of time steps


def _zip_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content, method in members:
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=method)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_ply_zips(scale, seeds, tmp_path_factory):
    from fourreal.viewers.sources import load_sequence_zip

    work = _fresh(tmp_path_factory, "zip")
    ply = (seeds / "binary.ply").read_bytes()
    names = st.sampled_from(["t000.ply", "t001.ply", "t002.ply", "seq/t001.ply", "../t001.ply",
                             "/abs/t000.ply", "a/../../t001.ply", "C:/t001.ply", "\\\\h\\t0.ply",
                             "t003.ply", "readme.txt", "t000.ply/"])  # fmt: skip
    methods = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])

    def prepare(data):
        members = []
        for name in data.draw(st.lists(names, min_size=1, max_size=4)):
            content = ply if data.draw(st.booleans()) else mutate_bytes(data, ply)
            members.append((name, content, data.draw(methods)))
        raw = _zip_bytes(members)
        if data.draw(st.integers(0, 3)) == 0:
            raw = mutate_bytes(data, raw)
        path = work / "steps.zip"
        path.write_bytes(raw)
        return path, lambda: load_sequence_zip(path)

    fuzz("ply-zip", 200 * scale, prepare, lambda scene: None)


def test_zip_bomb_and_traversal_names_are_refused(seeds, tmp_path):
    from fourreal.io.archive import ArchiveError
    from fourreal.viewers.sources import load_sequence_zip

    ply = (seeds / "binary.ply").read_bytes()
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip_bytes([("t000.ply", ply + bytes(64 << 20), zipfile.ZIP_DEFLATED)]))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ArchiveError, match=r"bomb\.zip: t000\.ply would expand .*zip bomb"):
        load_sequence_zip(bomb)
    for name in ("../t000.ply", "/etc/t000.ply", "x/../../t000.ply", "C:\\t000.ply"):
        path = tmp_path / "evil.zip"
        path.write_bytes(_zip_bytes([(name, ply, zipfile.ZIP_STORED)]))
        with pytest.raises(ArchiveError, match=r"evil\.zip holds a member"):
            load_sequence_zip(path)
    gap = tmp_path / "gap.zip"
    gap.write_bytes(_zip_bytes([(n, ply, 0) for n in ("t000.ply", "t002.ply")]))
    with pytest.raises(FourrealError, match=r"gap\.zip: time 1 is missing"):
        load_sequence_zip(gap)


def test_zip_member_lying_about_its_size_is_cut_off(seeds, tmp_path):
    from fourreal.io.archive import ArchiveError, copy_member

    path = tmp_path / "liar.zip"
    path.write_bytes(_zip_bytes([("t000.ply", bytes(4096), zipfile.ZIP_STORED)]))
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
        info.file_size = 100  # the central directory says 100 bytes, the data holds 4096
        sink = io.BytesIO()
        with pytest.raises((ArchiveError, zipfile.BadZipFile)):
            copy_member(archive, info, sink, path)
        assert len(sink.getvalue()) <= 100


# ------------------------------------------------------------------- scenes and checkpoints


def _tensors_mutation(data, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tensors = dict(tensors)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(tensors)))
        op = data.draw(st.sampled_from(["drop", "shape", "dtype", "nan", "extra", "scalar"]))
        value = tensors[key]
        if op == "drop" and len(tensors) > 1:
            del tensors[key]
        elif op == "shape":
            shape = list(value.shape) or [1]
            axis = data.draw(st.integers(0, len(shape) - 1))
            shape[axis] = data.draw(st.sampled_from([0, 1, 2, 3, 7]))
            tensors[key] = torch.zeros(shape, dtype=value.dtype)
        elif op == "dtype":
            kind = data.draw(
                st.sampled_from(
                    [
                        torch.int64,
                        torch.uint8,
                        torch.float16,
                        torch.float64,
                        torch.bool,
                        torch.bfloat16,
                    ]
                )
            )
            tensors[key] = value.to(kind)  # fmt: skip
        elif op == "nan" and value.is_floating_point() and value.numel():
            tensors[key] = value.clone().view(-1).index_fill(0, torch.tensor([0]), math.nan)
            tensors[key] = tensors[key].reshape(value.shape)
        elif op == "extra":
            tensors[key + ".extra"] = torch.zeros(2)
        else:
            tensors[key] = torch.tensor(1.0)
    return {k: v.contiguous() for k, v in tensors.items()}


def _safetensors_case(data, path: Path, seed: Path) -> None:
    """Overwrite ``path`` with a mutation of ``seed``: its bytes, its tensors or its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    kind = data.draw(st.sampled_from(["bytes", "tensors", "metadata"]))
    if kind == "bytes":
        path.write_bytes(mutate_bytes(data, seed.read_bytes()))
        return
    tensors = load_file(str(seed))
    with safe_open(str(seed), "pt") as f:
        metadata = dict(f.metadata() or {})
    if kind == "tensors":
        tensors = _tensors_mutation(data, tensors)
    else:
        key = data.draw(st.sampled_from(sorted(metadata)))
        try:
            value = json.loads(metadata[key])
        except ValueError:
            value = metadata[key]
        metadata[key] = json.dumps(mutate_json(data, value))
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_scene_folders(scale, scene_seed, tmp_path_factory):
    from fourreal.recon.scene import load_scene

    work = _fresh(tmp_path_factory, "scn") / "scene"
    shutil.copytree(scene_seed, work)
    meta = json.loads((scene_seed / "scene.json").read_text())

    def prepare(data):
        for name in ("scene.json", "deform.safetensors", "scene.ply"):
            shutil.copy(scene_seed / name, work / name)
        part = data.draw(st.sampled_from(["scene.json", "deform.safetensors", "scene.ply"]))
        if part == "scene.json":
            (work / part).write_text(json.dumps(mutate_json(data, meta)))
        elif part == "deform.safetensors":
            _safetensors_case(data, work / part, scene_seed / part)
        else:
            (work / part).write_bytes(mutate_bytes(data, (scene_seed / part).read_bytes()))
        return work, lambda: load_scene(work)

    def valid(result):
        _, model = result
        positions = model.positions(torch.tensor([0.0, 1.0]))
        assert bool(torch.isfinite(positions).all())

    fuzz("scene", 200 * scale, prepare, valid)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_checkpoints(scale, scene_seed, tmp_path_factory):
    from fourreal.recon.scene import CHECKPOINT, load_checkpoint

    work = _fresh(tmp_path_factory, "ckpt")

    def prepare(data):
        _safetensors_case(data, work / CHECKPOINT, scene_seed / CHECKPOINT)
        return work / CHECKPOINT, lambda: load_checkpoint(work)

    fuzz("checkpoint", 150 * scale, prepare)


def test_scene_config_asking_for_a_huge_model_fails_before_allocating(scene_seed, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fourreal.recon.scene import SceneError, load_scene

    folder = tmp_path / "scene"
    shutil.copytree(scene_seed, folder)
    path = folder / "deform.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["config"])
    config["width"] = 10**6  # hidden layers of 10^12 weights
    save_file(load_file(str(path)), str(path), metadata={**metadata, "config": json.dumps(config)})
    with pytest.raises(SceneError, match=r"deform\.safetensors does not match its config"):
        load_scene(folder)


@pytest.fixture(scope="module")
def generator_seed(tmp_path_factory):
    from fourreal.diffusion.models.checkpoint import save_generator
    from fourreal.diffusion.models.dit import DiTConfig, VideoDiT
    from fourreal.diffusion.models.two_stream import TwoStreamDiT

    torch.manual_seed(0)
    model = TwoStreamDiT(VideoDiT(DiTConfig(width=16, depth=1, heads=2, patch=2)), sync="soft")
    return save_generator(model, tmp_path_factory.mktemp("gen") / "tiny.safetensors")


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_generator_checkpoints(scale, generator_seed, tmp_path_factory):
    from fourreal.diffusion.models.checkpoint import load_generator

    work = _fresh(tmp_path_factory, "genf")

    def prepare(data):
        path = work / "model.safetensors"
        _safetensors_case(data, path, generator_seed)
        sync = data.draw(st.sampled_from([None, "average", "hard"]))
        return path, lambda: load_generator(path, sync=sync)

    fuzz("generator", 150 * scale, prepare)


def test_generator_config_asking_for_a_huge_model_fails_before_allocating(generator_seed, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fourreal.diffusion.models.checkpoint import load_generator

    with safe_open(str(generator_seed), "pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["config"])
    config["dit"]["width"] = 2**20
    path = tmp_path / "huge.safetensors"
    save_file(load_file(str(generator_seed)), str(path),
              metadata={**metadata, "config": json.dumps(config)})  # fmt: skip
    with pytest.raises(FourrealError, match=r"huge\.safetensors does not match its config"):
        load_generator(path)


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_splatv(scale, tmp_path_factory):
    from fourreal.recon.export import SPLATV_MAGIC, read_splatv

    work = _fresh(tmp_path_factory, "splatv")
    header = json.dumps({"count": 2, "times": [0.0, 1.0], "fields": []}).encode()
    seed = SPLATV_MAGIC + struct.pack("<I", len(header)) + header + bytes(2 * 17 * 4)

    def prepare(data):
        path = work / "scene.splatv"
        if data.draw(st.booleans()):
            path.write_bytes(mutate_bytes(data, seed))
        else:
            head = json.dumps(data.draw(json_values)).encode()
            path.write_bytes(SPLATV_MAGIC + struct.pack("<I", len(head)) + head + bytes(136))
        return path, lambda: read_splatv(path)

    fuzz("splatv", 100 * scale, prepare)


@pytest.fixture(scope="module")
def tracks_seed(tmp_path_factory):
    from fourreal.tracking.io import FORMAT, VERSION

    V, N, H, W = 2, 5, 4, 6
    tensors = {
        "K": torch.eye(3).expand(V, 3, 3), "T_world_cam": torch.eye(4).expand(V, 4, 4),
        "points": torch.rand(N, 3), "colors": torch.rand(N, 3), "keyframe": torch.zeros(N),
        "per_view": torch.rand(V, N, 3), "visible": torch.ones(V, N, dtype=torch.bool),
        "T_cam_canonical": torch.eye(4).expand(V, 4, 4), "offsets": torch.zeros(V, N, 3),
        "depth": torch.rand(V, H, W), "confidence": torch.rand(V, H, W),
    }  # fmt: skip
    folder = tmp_path_factory.mktemp("tracks")
    metadata = {"format": FORMAT, "version": str(VERSION), "central": "1",
                "stats": json.dumps({"num_points": N})}  # fmt: skip
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(folder / "tracks.safetensors"), metadata=metadata)
    return folder / "tracks.safetensors"


@pytest.mark.parametrize("scale", SCALE)
def test_fuzz_tracks(scale, tracks_seed, tmp_path_factory):
    from fourreal.tracking.io import load_tracks

    work = _fresh(tmp_path_factory, "trk")

    def prepare(data):
        _safetensors_case(data, work / "tracks.safetensors", tracks_seed)
        return work / "tracks.safetensors", lambda: load_tracks(work)

    fuzz("tracks", 100 * scale, prepare)
