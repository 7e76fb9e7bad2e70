"""SIGINT and SIGTERM at random points of ``reconstruct``, ``generate`` and ``export`` leave the
previous complete output, a complete new one, or a resumable checkpoint; never a partial file
under a final name, never a temporary left behind (tests/interrupt_harness.py).

``fourreal train`` has its own kill test (tests/test_train.py::test_train_survives_kills). The
number of kill points is printed at the end of the run; ``-m slow`` tries five times as many.
"""

from __future__ import annotations

import json
import signal
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from interrupt_harness import Outcome, kill_points, run_in_process, startup_seconds
from PIL import Image

from fourreal.io import load_grid, read_ply, read_video, save_grid
from fourreal.synth import synth_grid

SCALE = [pytest.param(1, id="default"), pytest.param(5, id="slow", marks=pytest.mark.slow)]
KILLS: Counter[str] = Counter()
KILLED: Counter[str] = Counter()
STATES: Counter[str] = Counter()


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not KILLS:
            return
        rows = ", ".join(f"{k} {v}" for k, v in sorted(KILLS.items()))
        states = ", ".join(f"{k} {v}" for k, v in sorted(STATES.items()))
        terminalreporter.write_sep("-", "interrupts")
        terminalreporter.write_line(
            f"{sum(KILLS.values())} kill points tried ({rows}); {sum(KILLED.values())} stopped "
            f"the process (the others came after it finished); outputs found: {states}"
        )


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("fourreal-interrupt-summary"):
        plugins.register(_Summary(), "fourreal-interrupt-summary")
    yield


def _record(name: str, outcomes: list[Outcome]) -> None:
    KILLS[name] += len(outcomes)
    KILLED[name] += sum(o.returncode != 0 for o in outcomes)
    STATES.update(o.state for o in outcomes)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny synthetic grid, a copy with unknown frames to generate, and one reconstruction."""
    root = tmp_path_factory.mktemp("interrupts")
    grid = synth_grid("default", seed=0, views=3, times=3, height=24, width=32, num_tracks=64,
                      progress=False)  # fmt: skip
    save_grid(grid, root / "grid")
    known = torch.zeros(3, 3, dtype=torch.bool)
    known[0, :] = True
    known[:, 0] = True
    save_grid(grid.replace(known=known, depth=None, gt={}), root / "partial")
    return root


# ----------------------------------------------------------------------------- validators


def _every_file_opens(path: Path) -> None:
    """No partial file under a final name: every file parses in full by its kind."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        suffix = file.suffix
        if suffix == ".json":
            json.loads(file.read_text())
        elif suffix == ".yaml":
            yaml.safe_load(file.read_text())
        elif suffix == ".png":
            with Image.open(file) as image:
                image.load()
        elif suffix == ".ply":
            read_ply(file)
        elif suffix == ".npy":
            np.load(file, allow_pickle=False)
        elif suffix == ".mp4":
            read_video(file)
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(file))
        elif suffix == ".zip":
            with zipfile.ZipFile(file) as archive:
                assert archive.testzip() is None


def _grid_state(path: Path) -> str:
    _every_file_opens(path)
    load_grid(path)
    return "complete"


def _scene_state(path: Path) -> str:
    from fourreal.recon.scene import CHECKPOINT, load_checkpoint, load_scene

    _every_file_opens(path)
    if (path / "scene.json").exists():
        load_scene(path)
        assert json.loads((path / "metrics.json").read_text())["psnr"] > 0
        return "complete"
    if (path / CHECKPOINT).exists():
        load_checkpoint(path)
        return "resumable"
    names = {p.name for p in path.iterdir()}
    assert names <= {"log.txt"}, f"{path} holds {names} but no scene and no checkpoint"
    return "started"


def _export_state(path: Path) -> str:
    from fourreal.recon.export import read_splatv
    from fourreal.viewers.sources import load_sequence_folder, load_sequence_zip

    _every_file_opens(path)
    if path.suffix == ".zip":
        assert load_sequence_zip(path).num_times == 3
    elif path.suffix == ".splatv":
        assert read_splatv(path)[0]["count"] > 0
    else:
        assert load_sequence_folder(path).num_times == 3
    return "complete"


# --------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def startup():
    return startup_seconds()


RECONSTRUCT = ["--iterations", "30", "--quiet", "--holdout", "0.5"]


@pytest.fixture(scope="module")
def scene(work, startup):
    """A complete reconstruction (the 'previous output' of later runs) and how long the command
    takes (in-process run plus start-up)."""
    seconds = run_in_process(["reconstruct", str(work / "grid"), "-o", str(work / "scene"),
                              *RECONSTRUCT])  # fmt: skip
    assert _scene_state(work / "scene") == "complete"
    return work / "scene", seconds + startup


@pytest.mark.parametrize("scale", SCALE)
def test_reconstruct_survives_kills(scale, work, scene, startup):
    previous, seconds = scene
    args = ["reconstruct", "grid", "-o", "out", *RECONSTRUCT]
    outcomes = kill_points(args, work / "out", _scene_state, cwd=work, count=3 * scale,
                           seconds=seconds, previous=previous, seed=scale,
                           earliest=startup)  # fmt: skip
    _record("reconstruct", outcomes)


def test_reconstruct_killed_after_its_checkpoint_resumes(work, scene):
    _, seconds = scene
    out = work / "resume"
    args = ["reconstruct", "grid", "-o", "resume", *RECONSTRUCT]
    outcomes = kill_points(args, out, _scene_state, cwd=work, count=1, seconds=seconds,
                           signals=(signal.SIGTERM,),
                           when=lambda: (out / "checkpoint.safetensors").exists())  # fmt: skip
    _record("reconstruct", outcomes)
    assert outcomes[0].state in ("resumable", "complete")
    run_in_process(["reconstruct", str(work / "grid"), "-o", str(out), "--resume", "--quiet"])
    assert _scene_state(out) == "complete"


@pytest.mark.parametrize("scale", SCALE)
def test_generate_survives_kills(scale, work, startup):
    previous = work / "gen.previous"
    seconds = startup + run_in_process(["generate", "--grid", str(work / "partial"), "-o",
                                        str(previous), "--quiet"])  # fmt: skip
    args = ["generate", "--grid", "partial", "-o", "gen", "--quiet"]
    outcomes = kill_points(args, work / "gen", _grid_state, cwd=work, count=3 * scale,
                           seconds=seconds, previous=previous, seed=scale,
                           earliest=startup)  # fmt: skip
    _record("generate", outcomes)


@pytest.mark.parametrize("scale", SCALE)
@pytest.mark.parametrize(
    ("fmt", "name"), [("ply-sequence", "export"), ("zip", "steps.zip"), ("splatv", "s.splatv")]
)
def test_export_survives_kills(scale, fmt, name, work, scene, startup):
    folder, _ = scene
    previous = work / f"previous-{name}"
    seconds = startup + run_in_process(["export", str(folder), "--format", fmt, "-o",
                                        str(previous)])  # fmt: skip
    args = ["export", str(folder), "--format", fmt, "-o", str(work / name)]
    outcomes = kill_points(args, work / name, _export_state, cwd=work, count=2 * scale,
                           seconds=seconds, previous=previous, seed=scale,
                           earliest=startup)  # fmt: skip
    _record(f"export {fmt}", outcomes)
