"""Shared fixtures: a tiny synthetic grid (4 views × 4 times at 72×128) and paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fourreal.io import save_grid
from fourreal.synth import synth_grid

REPO = Path(__file__).resolve().parents[3]
NS_BIN = Path(sys.executable).parent
"""Where ns-train, ns-eval and fourreal-ns-export of this environment live."""
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"
"""fourreal's own environment (viser 1.x), where `fourreal view` runs."""


def quiet_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "grid"
    grid = synth_grid("default", seed=0, views=4, times=4, height=72, width=128)
    save_grid(grid, path)
    return path
