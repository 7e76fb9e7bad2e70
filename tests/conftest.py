import pytest
import torch

from fourreal.synth import synth_grid


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_grid():
    """A small synthetic grid with every kind of ground truth (shared, do not modify)."""
    return synth_grid("default", seed=3, views=4, times=5, height=48, width=80, num_tracks=512)
