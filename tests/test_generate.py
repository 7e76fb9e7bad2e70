"""``fourreal generate``: inputs, methods, checkpoints and the errors users meet."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from fourreal.cli import main
from fourreal.diffusion.generate import GenerateOptions, fill_grid
from fourreal.diffusion.models import (
    CONFIGS,
    DiTConfig,
    TwoStreamDiT,
    VideoDiT,
    load_generator,
    save_generator,
)
from fourreal.errors import FourrealError
from fourreal.io import load_grid, save_grid, write_video
from fourreal.synth import synth_grid


def random_checkpoint(path, config=CONFIGS["tiny"], sync="soft", sampling=None):
    torch.manual_seed(0)
    model = TwoStreamDiT(VideoDiT(config), sync)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_generator(model, path, window=(4, 4), sampling=sampling), model


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    grid = synth_grid("orbit", seed=1, views=4, times=5, height=32, width=48, num_tracks=8)
    write_video(grid.frames[0], folder / "fixed.mp4", fps=5)
    write_video(grid.frames[:, 0], folder / "freeze.mp4", fps=5)
    write_video(grid.frames[1], folder / "other.mp4", fps=5)
    return folder


def test_generate_with_a_random_tiny_checkpoint_writes_a_valid_grid(tmp_path, videos):
    checkpoint, _ = random_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "grid"
    main([
        "generate", "--fixed-view", str(videos / "fixed.mp4"), "--freeze-time",
        str(videos / "freeze.mp4"), "--method", "model", "--checkpoint", str(checkpoint),
        "--steps", "2", "--seed", "1", "-o", str(out), "--quiet",
    ])  # fmt: skip
    grid = load_grid(out)
    assert (grid.views, grid.times, grid.height, grid.width) == (4, 5, 32, 48)
    assert grid.known[0].all() and grid.known[:, 0].all() and not grid.known[1:, 1:].any()
    assert grid.source["generate"]["method"] == "model"
    assert grid.source["generate"]["sync"] == "soft"
    assert (out / "previews" / "contact_sheet.png").is_file()
    assert (out / "previews" / "rows" / "v000.mp4").is_file()
    # the generated frames are the model's, not the black placeholders of the import
    assert float(grid.frames[1:, 1:].std()) > 0.01


def test_generate_from_image_folders(tmp_path):
    """A and B as folders of images in natural order (frame_2 before frame_10)."""
    from PIL import Image

    truth = synth_grid("orbit", seed=1, views=3, times=11, height=16, width=24, num_tracks=8)
    for name, frames in (("fixed", truth.frames[0]), ("freeze", truth.frames[:3, 0])):
        (tmp_path / name).mkdir()
        for i, frame in enumerate(frames):
            array = (frame.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            Image.fromarray(array).save(tmp_path / name / f"frame_{i}.png")
    config = DiTConfig(width=24, depth=1, heads=2, patch=4)
    checkpoint, _ = random_checkpoint(tmp_path / "m.safetensors", config)
    out = tmp_path / "grid"
    main([
        "generate", "--fixed-view", str(tmp_path / "fixed"), "--freeze-time",
        str(tmp_path / "freeze"), "--method", "model", "--checkpoint", str(checkpoint),
        "--steps", "1", "-o", str(out), "--quiet", "--no-previews",
    ])  # fmt: skip
    grid = load_grid(out)
    assert (grid.views, grid.times) == (3, 11)
    # row 0 in natural order: frame_10 is the last time, not the third
    assert float((grid.frames[0] - truth.frames[0]).abs().max()) < 1 / 255 + 1e-6
    assert float((grid.frames[1:, 0] - truth.frames[1:, 0]).abs().max()) < 1 / 255 + 1e-6


def test_model_fills_a_partial_grid_and_keeps_its_known_frames(tmp_path, small_grid):
    """--grid with any known pattern (here a diagonal besides row 0), model method, heun."""
    config = DiTConfig(width=48, depth=2, heads=2, patch=4)  # smaller than tiny: a fast test
    checkpoint, _ = random_checkpoint(tmp_path / "m.safetensors", config, sync="hard")
    known = torch.zeros(small_grid.views, small_grid.times, dtype=torch.bool)
    known[0] = True
    known[1, 1] = known[2, 2] = known[3, 3] = True
    partial = small_grid.replace(known=known, depth=None, gt={})
    save_grid(partial, tmp_path / "partial")
    out = tmp_path / "out"
    main([
        "generate", "--grid", str(tmp_path / "partial"), "--method", "model", "--checkpoint",
        str(checkpoint), "--sync", "weighted", "--steps", "2", "--solver", "heun",
        "--precision", "fp32", "-o", str(out), "--quiet", "--no-previews",
    ])  # fmt: skip
    grid = load_grid(out)
    given = load_grid(tmp_path / "partial")
    assert torch.equal(grid.known, known)
    assert torch.equal(grid.frames[known], given.frames[known])
    assert not torch.equal(grid.frames[~known], given.frames[~known])
    info = grid.source["generate"]
    assert (info["sync"], info["solver"], info["precision"], info["device"]) == (
        "weighted", "heun", "fp32", "cpu",
    )  # fmt: skip
    assert not (out / "previews").exists()


def test_model_samples_as_its_checkpoint_records_unless_told(tmp_path, small_grid):
    """A checkpoint's recorded sampling (steps, samples) is the default; options override it."""
    config = DiTConfig(width=24, depth=1, heads=2, patch=4)
    sampling = {"steps": 1, "samples": 3}
    checkpoint, _ = random_checkpoint(tmp_path / "m.safetensors", config, sampling=sampling)
    known = torch.zeros(small_grid.views, small_grid.times, dtype=torch.bool)
    known[0], known[:, 0] = True, True
    save_grid(small_grid.replace(known=known, depth=None, gt={}), tmp_path / "partial")
    for extra, want in (([], (1, 3)), (["--steps", "2", "--samples", "1"], (2, 1))):
        out = tmp_path / f"out{len(extra)}"
        main(["generate", "--grid", str(tmp_path / "partial"), "--method", "model",
              "--checkpoint", str(checkpoint), "-o", str(out), "--quiet", "--no-previews",
              *extra])  # fmt: skip
        info = load_grid(out).source["generate"]
        assert (info["steps"], info["samples"]) == want
    with pytest.raises(FourrealError, match="sampling"):
        random_checkpoint(tmp_path / "bad.safetensors", config, sampling={"steps": 0})


def test_output_must_not_replace_the_input(tmp_path, small_grid, capsys):
    partial = small_grid.replace(known=torch.eye(small_grid.views, small_grid.times) > 0)
    save_grid(partial, tmp_path / "g")
    with pytest.raises(SystemExit):
        main(["generate", "--grid", str(tmp_path / "g"), "-o", str(tmp_path / "g"), "--quiet"])
    assert "would replace the input" in capsys.readouterr().err
    assert torch.equal(load_grid(tmp_path / "g").known, partial.known)


def test_checkpoint_round_trip_and_training_free_sync_override(tmp_path):
    path, model = random_checkpoint(tmp_path / "m.safetensors", sync="hard")
    loaded, config = load_generator(path)
    assert config["window"] == [4, 4] and loaded.sync == "hard"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert load_generator(path, "weighted")[0].sync == "weighted"
    with pytest.raises(FourrealError, match="trained with hard sync"):
        load_generator(path, "soft")


def test_bad_checkpoints_are_clear_errors(tmp_path):
    path, model = random_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(FourrealError, match="does not exist"):
        load_generator(tmp_path / "missing.safetensors")
    pickle = tmp_path / "m.pt"
    pickle.write_bytes(b"not a pickle we would ever load")
    with pytest.raises(FourrealError, match="safetensors only"):
        load_generator(pickle)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(FourrealError, match="no fourreal generator metadata"):
        load_generator(plain)
    # right metadata, wrong tensors
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = "stack.patch_embed.weight"
    state[key] = torch.zeros(3, 3)
    del state["stack.final.proj.bias"]
    state["stack.extra"] = torch.zeros(1)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=metadata)
    with pytest.raises(FourrealError) as err:
        load_generator(bad)
    message = str(err.value)
    assert "stack.final.proj.bias" in message and "stack.extra" in message
    assert f"{key} [3, 3]" in message
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 10)
    with pytest.raises(FourrealError, match="not a readable safetensors"):
        load_generator(corrupt)


def test_model_method_defaults_to_the_bundled_checkpoint_at_its_resolution(tmp_path, videos):
    from fourreal.diffusion.models.checkpoint import bundled_checkpoint, read_generator_config

    size = read_generator_config(bundled_checkpoint())["resolution"]
    out = tmp_path / "g"
    main([
        "generate", "--fixed-view", str(videos / "fixed.mp4"), "--freeze-time",
        str(videos / "freeze.mp4"), "--method", "model", "--steps", "1", "-o", str(out),
        "--quiet", "--no-previews",
    ])  # fmt: skip
    grid = load_grid(out)
    info = grid.source["generate"]
    assert [grid.height, grid.width] == size and info["resized_from"] == [32, 48]
    assert info["checkpoint"] == str(bundled_checkpoint().resolve())
    assert (grid.views, grid.times) == (4, 5) and not grid.known[1:, 1:].any()


def test_first_frames_must_agree(tmp_path, videos, capsys):
    with pytest.raises(SystemExit):
        main([
            "generate", "--fixed-view", str(videos / "other.mp4"), "--freeze-time",
            str(videos / "freeze.mp4"), "-o", str(tmp_path / "g"), "--quiet",
        ])  # fmt: skip
    assert "frame (0, 0) differs" in capsys.readouterr().err


def test_missing_input_is_a_clear_error(tmp_path, videos, capsys):
    with pytest.raises(SystemExit):
        main([
            "generate", "--fixed-view", str(tmp_path / "nope.mp4"), "--freeze-time",
            str(videos / "freeze.mp4"), "-o", str(tmp_path / "g"),
        ])  # fmt: skip
    assert "nope.mp4 does not exist" in capsys.readouterr().err


def psnr(a, b):
    return 10 * math.log10(1 / float((a.double() - b.double()).pow(2).mean()))


def test_warp_fills_a_partial_grid(tmp_path):
    truth = synth_grid("default", seed=2, views=5, times=4, height=72, width=128, num_tracks=8)
    known = torch.zeros(5, 4, dtype=torch.bool)
    known[0] = True
    known[:, 0] = True
    partial = truth.replace(
        frames=torch.where(known[:, :, None, None, None], truth.frames, 0.0),
        known=known, depth=None, gt={},
    )  # fmt: skip
    save_grid(partial, tmp_path / "partial")
    main(["generate", "--grid", str(tmp_path / "partial"), "-o", str(tmp_path / "out"), "--quiet"])
    grid = load_grid(tmp_path / "out")
    assert torch.equal(grid.known, known)
    assert grid.source["generate"]["method"] == "warp"
    assert grid.source["generate"]["intrinsics"] == "given"
    assert torch.equal(grid.frames[known], load_grid(tmp_path / "partial").frames[known])
    unknown = ~known
    warp = psnr(grid.frames[unknown], truth.frames[unknown])
    copy_row = psnr(truth.frames[0:1].expand(5, -1, -1, -1, -1)[unknown], truth.frames[unknown])
    copy_column = psnr(
        truth.frames[:, 0:1].expand(-1, 4, -1, -1, -1)[unknown], truth.frames[unknown]
    )
    # at this small size the margin over copying the column is small (20.2 vs 20.0 dB); the
    # 8x8, 144x256 figures are bench/generate_warp.py's and the slow test's
    assert warp > copy_row + 2 and warp > copy_column, (warp, copy_row, copy_column)
    meta = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert meta["known"][1][1] is False


def test_warp_needs_row_and_column(small_grid):
    known = torch.ones(small_grid.views, small_grid.times, dtype=torch.bool)
    known[0, 2] = False
    known[1, 1] = False
    with pytest.raises(FourrealError, match="row 0"):
        fill_grid(small_grid.replace(known=known), GenerateOptions(progress=False))


def test_grid_without_unknown_frames_is_refused(tmp_path, small_grid):
    save_grid(small_grid, tmp_path / "full")
    from fourreal.diffusion.generate import grid_from_inputs

    with pytest.raises(FourrealError, match="nothing to generate"):
        grid_from_inputs(grid=tmp_path / "full")


def test_bench_generate_writes_json(tmp_path, monkeypatch):
    from fourreal.diffusion import benchmark

    # the real run uses tiny and small on an 8x8 grid of 32x32 frames; this checks the plumbing
    monkeypatch.setitem(benchmark.CONFIGS, "tiny", DiTConfig(width=24, depth=2, heads=2, patch=4))
    monkeypatch.setitem(benchmark.CONFIGS, "small", DiTConfig(width=48, depth=1, heads=2, patch=4))
    monkeypatch.setattr(benchmark, "GRID", (3, 2))
    monkeypatch.setattr(benchmark, "FRAME", 8)
    monkeypatch.setattr(benchmark, "MATMUL_SIZE", 128)
    out = tmp_path / "generate.json"
    main(["bench", "generate", "--repeats", "1", "-o", str(out), "--quiet"])
    result = json.loads(out.read_text())
    assert set(result["matmul_gflops_per_s"]) == {"mm_fp32", "linear_fp32", "linear_bf16"}
    assert result["precision"] in ("fp32", "bf16 autocast") and result["load_average"]
    rows = {(r["config"], r["variant"]): r for r in result["results"]}
    assert set(rows) == {(c, v) for c in ("tiny", "small") for v in benchmark.VARIANTS}
    for config in ("tiny", "small"):
        separate, soft, hard = (rows[config, v] for v in ("separate", "soft", "hard"))
        assert separate["forward_vs_separate"] == 1.0 and soft["forward_ms"] > 0
        # the sync layers add matmuls: soft's 2C x 2C map more than hard's two C x C ones
        assert soft["forward_flops"] > hard["forward_flops"] > separate["forward_flops"]
        assert soft["train_flops"] > 2 * soft["forward_flops"]
        assert soft["parameters"] > hard["parameters"] > separate["parameters"]
