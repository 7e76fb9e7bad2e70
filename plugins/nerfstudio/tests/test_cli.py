"""The commands a nerfstudio user runs: ns-train (2 steps, CPU), ns-eval, fourreal-ns-export,
then fourreal view and fourreal export on the exported scene (in fourreal's own environment)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import MAIN_PYTHON, NS_BIN, quiet_env

from fourreal.recon.scene import load_scene


def run(command: list[str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=quiet_env(), capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, (
        f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_ns_train_help_lists_the_method(tmp_path):
    out = run([str(NS_BIN / "ns-train"), "--help"], tmp_path).stdout
    assert "fourreal-splat" in out


@pytest.fixture(scope="module")
def trained(grid_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("ns")
    run(
        [
            str(NS_BIN / "ns-train"), "fourreal-splat", "--machine.device-type", "cpu",
            "--max-num-iterations", "2", "--viewer.quit-on-train-completion", "True",
            "--vis", "tensorboard", "--output-dir", str(work / "outputs"),
            "--pipeline.model.prune-iterations", "10",
            "fourreal-grid", "--data", str(grid_dir),
        ],
        work,
    )  # fmt: skip
    configs = sorted((work / "outputs").glob("*/fourreal-splat/*/config.yml"))
    assert len(configs) == 1
    assert list(configs[0].parent.glob("nerfstudio_models/step-*.ckpt"))
    return work, configs[0]


def test_ns_eval_reports_psnr_and_ssim(trained):
    work, config = trained
    run([str(NS_BIN / "ns-eval"), "--load-config", str(config), "--output-path",
         str(work / "eval.json")], work)  # fmt: skip
    results = json.loads((work / "eval.json").read_text())["results"]
    assert 5 < results["psnr"] < 40 and 0 < results["ssim"] <= 1
    assert "lpips" not in results


@pytest.fixture(scope="module")
def exported(trained):
    work, config = trained
    out = run([str(NS_BIN / "fourreal-ns-export"), "--load-config", str(config), "-o",
               str(work / "scene")], work).stdout  # fmt: skip
    assert "wrote" in out
    return work / "scene"


def test_export_writes_a_fourreal_scene(exported, grid_dir):
    meta, model = load_scene(exported)
    assert meta["format"] == "fourreal-scene" and len(meta["times"]) == 4
    assert meta["cameras"]["width"] == 128 and len(meta["cameras"]["K"]) == 4
    assert meta["config"]["method"] == "fourreal-splat"
    metrics = json.loads((exported / "metrics.json").read_text())
    assert metrics["num_gaussians"] == len(model) > 100 and metrics["steps"] == 1
    assert list((exported / "renders").glob("holdout_v*_t*.png"))


needs_main_env = pytest.mark.skipif(
    not MAIN_PYTHON.exists(), reason=f"fourreal's own environment ({MAIN_PYTHON}) is not built"
)


@needs_main_env
def test_fourreal_view_opens_the_exported_scene(exported, tmp_path):
    command = [str(MAIN_PYTHON), "-m", "fourreal", "view", str(exported / "scene.ply"),
               "--port", "0"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=quiet_env(), cwd=tmp_path)  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("fourreal view: open http://"):
                url = line.split()[3]
        assert url is not None and url.startswith("http://127.0.0.1:"), process.stderr.read()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "Traceback" not in err
    loaded = run([str(MAIN_PYTHON), "-c",
                  "import sys; from fourreal.viewers.sources import load_view_scene; "
                  "s = load_view_scene(sys.argv[1]); print(s.num_times, s.num_gaussians)",
                  str(exported)], tmp_path).stdout.split()  # fmt: skip
    assert int(loaded[0]) == 4 and int(loaded[1]) > 100


@needs_main_env
def test_fourreal_export_reads_the_exported_scene(exported, tmp_path):
    run([str(MAIN_PYTHON), "-m", "fourreal", "export", str(exported), "--format",
         "ply-sequence"], tmp_path)  # fmt: skip
    assert sorted(p.name for p in (exported / "export").glob("t*.ply")) == [
        "t000.ply",
        "t001.ply",
        "t002.ply",
        "t003.ply",
    ]
