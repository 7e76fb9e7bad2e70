import json
import subprocess
import sys

import pytest
import torch

from fourreal.cli import main
from fourreal.io import load_grid, read_video, write_video
from fourreal.recon.render.benchmark import available_backends
from fourreal.synth import ArcConfig, synth_grid


def test_synth_writes_the_same_grid_as_the_library(tmp_path):
    args = ["synth", "--scene", "spin", "--seed", "4", "--views", "3", "--times", "2"]
    args += [
        "--height",
        "24",
        "--width",
        "40",
        "--arc-deg",
        "40",
        "--quiet",
        "-o",
        str(tmp_path / "g"),
    ]
    main(args)
    grid = load_grid(tmp_path / "g")
    expected = synth_grid("spin", 4, 3, 2, 24, 40, ArcConfig(arc_deg=40.0))
    assert torch.equal(grid.frames, expected.frames)
    assert torch.equal(grid.depth, expected.depth)
    assert grid.source["scene"] == "spin" and grid.source["arc"]["arc_deg"] == 40.0
    meta = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert meta["depth_pattern"] == "depth/v{v:03d}_t{t:03d}.npy"
    assert meta["cameras"]["T_world_cam"] is not None


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path, capsys):
    main(["demo", "-o", str(tmp_path / "demo"), "--iterations", "30", "--quiet"])
    grid = load_grid(tmp_path / "demo" / "grid")
    assert (grid.views, grid.times, grid.height, grid.width) == (8, 8, 144, 256)
    assert (tmp_path / "demo" / "previews" / "contact_sheet.png").stat().st_size > 10_000
    video = read_video(tmp_path / "demo" / "grid.mp4")
    assert video.shape[0] == 2 * (2 * 8 - 2)  # ping-pong loop, twice
    assert (tmp_path / "demo" / "scene" / "export" / "t007.ply").is_file()
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "Metrics on held-out frames" in report and "data:image/png;base64" in report
    assert capsys.readouterr().out == ""


def test_import_two_videos_then_preview(tmp_path):
    grid = synth_grid("orbit", views=4, times=6, height=32, width=48, num_tracks=8)
    write_video(grid.frames[0], tmp_path / "fixed.mp4", fps=6)
    write_video(grid.frames[:, 0], tmp_path / "freeze.mp4", fps=6)
    out = tmp_path / "imported"
    fixed, freeze = str(tmp_path / "fixed.mp4"), str(tmp_path / "freeze.mp4")
    main(["import", "--fixed-view", fixed, "--freeze-time", freeze, "-o", str(out), "--quiet"])
    imported = load_grid(out)
    assert (imported.views, imported.times) == (4, 6)
    assert (
        imported.known[0].all() and imported.known[:, 0].all() and not imported.known[1:, 1:].any()
    )
    assert (imported.frames[0] - grid.frames[0]).abs().mean() < 0.03
    main(["preview", str(out)])
    assert (out / "previews" / "contact_sheet.png").is_file()
    assert read_video(out / "previews" / "cols" / "t000.mp4").shape[0] == 4


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["preview", str(tmp_path / "missing")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "fourreal: error:" in err and "missing" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["import", "--rig", str(tmp_path), "--fixed-view", "a.mp4", "-o", str(tmp_path / "x")])
    assert "either --fixed-view and --freeze-time, or --rig" in capsys.readouterr().err


def test_python_dash_m_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "fourreal", "synth", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "--scene" in out.stdout and "--views" in out.stdout and "-o" in out.stdout


def test_bench_render_writes_json(tmp_path, capsys):
    out = tmp_path / "render.json"
    main(
        ["bench", "render", "--counts", "300", "--sizes", "16x24", "--repeats", "1", "-o", str(out)]
    )
    report = json.loads(out.read_text())
    rows = {row["backend"]: row for row in report["results"]}
    assert set(rows) == set(available_backends())
    for row in rows.values():
        assert row["num_gaussians"] == 300 and row["height"] == 16 and row["width"] == 24
        assert 0 < row["forward_ms"] < row["forward_backward_ms"] * 10
        assert row["peak_memory_mb"] >= 0
    assert report["machine"]["cpus"] >= 1
    assert "fwd+bwd ms" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "render", "--sizes", "big", "-o", str(out)])
