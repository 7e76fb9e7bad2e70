"""``fourreal eval generate``: held-out grids, the metrics, the CLI, and the bundled checkpoint
reproducing the held-out figures recorded beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fourreal.cli import main
from fourreal.diffusion import evaluate as ev
from fourreal.diffusion.models import DiTConfig, TwoStreamDiT, VideoDiT
from fourreal.diffusion.models.checkpoint import BUNDLED, bundled_checkpoint, save_generator
from fourreal.errors import FourrealError

SMALL = ev.HeldOut(count=1, views=4, times=4, height=32, width=32)


@pytest.fixture(scope="module")
def grid():
    return ev.held_out_grids(SMALL)[0]


def test_held_out_grids_are_fixed_by_index_and_known_on_row_and_column_0(grid):
    again = ev.held_out_grids(ev.HeldOut(count=2, views=4, times=4, height=32, width=32))
    assert torch.equal(again[0].frames, grid.frames)
    assert not torch.equal(again[1].frames, grid.frames)
    assert grid.known[0].all() and grid.known[:, 0].all() and not grid.known[1:, 1:].any()
    assert grid.depth is not None and grid.cameras.T_world_cam is not None


def test_scores_rank_the_truth_above_the_copy_baselines(grid):
    truth = ev.score(grid.frames, grid)
    row, column = ev.score(ev.copy_row(grid), grid), ev.score(ev.copy_column(grid), grid)
    assert truth["psnr"] > 100 and truth["ssim"] > 0.999
    assert row["psnr"] < 40 and column["psnr"] < 40
    # copying one view into all views breaks multi-view consistency; the truth is the floor
    assert truth["reprojection"] < row["reprojection"]
    noisy = (grid.frames + 0.2 * torch.randn_like(grid.frames)).clamp(0, 1)
    assert ev.reprojection_error(noisy, grid) > truth["reprojection"] + 5


def test_model_specs_are_checked():
    assert ev.parse_model("a=x.safetensors@average").sync == "average"
    spec = ev.parse_model("b=dir/x.safetensors,steps=2,samples=8")
    assert (spec.path, spec.sync, spec.steps, spec.samples) == (
        Path("dir/x.safetensors"),
        None,
        2,
        8,
    )
    for bad in ("x.safetensors", "a=x.safetensors@nope", "=x", "a=x,steps=0", "a=x,seed=3"):
        with pytest.raises(FourrealError, match="--models"):
            ev.parse_model(bad)


def test_cli_scores_checkpoints_and_writes_the_table(tmp_path, capsys):
    torch.manual_seed(0)
    model = TwoStreamDiT(VideoDiT(DiTConfig(width=32, depth=2, heads=2, patch=8)), "soft")
    ckpt = save_generator(model, tmp_path / "m.safetensors", window=(4, 4), resolution=(64, 64))
    out = tmp_path / "ablation.json"
    main(["eval", "generate", "--models", f"mine={ckpt}", f"free={ckpt}@average",
          "--no-baselines", "--grids", "1", "--steps", "1", "-o", str(out), "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    names = [row["method"] for row in result["rows"]]
    assert names == ["ground truth", "mine", "free"] and "mine" in printed
    assert result["rows"][2]["info"]["sync"] == "average"
    assert all(len(row["per_grid"]) == 1 for row in result["rows"])


def test_eval_of_a_scene_keeps_its_help_and_points_to_eval_generate(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    printed = capsys.readouterr().out
    assert exit_.value.code == 0 and "SCENE" in printed and "fourreal eval generate" in printed


def test_bundled_checkpoint_is_small_and_recorded():
    path = bundled_checkpoint()
    record = json.loads((BUNDLED / "tiny.json").read_text())
    assert path.stat().st_size <= 25 * 2**20
    assert record["commands"] and record["held_out"]["rows"]
    assert record["held_out"]["held_out"]["data_seed"] == ev.HELD_OUT_SEED
    # the CPU stages name their data seed; the GPU fine-tune's script fixes it
    gpu_script = Path(__file__).parents[1] / "bench" / "generator_gpu.sh"
    assert "--data-seed 0" in gpu_script.read_text()
    assert all("--data-seed 0" in c or "generator_gpu.sh" in c for c in record["commands"])
    assert record["sampling"] == {"steps": 2, "samples": 8}


def test_bundled_checkpoint_reproduces_its_recorded_held_out_figures():
    """Grid 0 of the recorded evaluation, sampled again: within 0.1 dB of the record."""
    record = json.loads((BUNDLED / "tiny.json").read_text())
    held = record["held_out"]
    row = next(r for r in held["rows"] if r["method"] == record["label"])
    info = row["info"]
    fill, _ = ev.checkpoint_filler(bundled_checkpoint(), None, info["steps"],
                                   held["sampling"]["seed"], samples=info["samples"])  # fmt: skip
    spec = {k: v for k, v in held["held_out"].items() if k != "data_seed"}
    grid = ev.held_out_grids(ev.HeldOut(**(spec | {"count": 1})))[0]
    got = ev.score(fill(grid), grid)
    assert abs(got["psnr"] - row["per_grid"][0]["psnr"]) < 0.1
    assert abs(got["ssim"] - row["per_grid"][0]["ssim"]) < 0.01
