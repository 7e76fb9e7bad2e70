"""The viewer in a real browser: splats appear where the scene is, and move with the time slider.

Runs Debian's chromium headless with software WebGL; skips (with the reason) where the browser
or Playwright is missing. About 20-30 s.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from viewer_browser import (
    browser_page,
    colored,
    disc_fraction,
    missing_browser,
    project,
    wait_for_client,
    wait_stable,
)
from viewer_scenes import write_dynamic_scene

from fourreal.viewers.server import Viewer, ViewOptions
from fourreal.viewers.sources import load_view_scene

BLOB_RADIUS = 0.3  # world units, see viewer_scenes.blob


def test_browser_shows_splats_where_the_scene_is_and_follows_the_time_slider(tmp_path):
    reason = missing_browser()
    if reason:
        pytest.skip(f"browser test: {reason}")
    scene = load_view_scene(write_dynamic_scene(tmp_path / "scene", times=5, n=2000))
    viewer = Viewer(scene, ViewOptions(port=0, screenshots=tmp_path / "shots"))
    try:
        with browser_page(viewer.url) as page:
            client = wait_for_client(viewer)
            first = wait_stable(page)
            camera = client.camera  # the scene's first camera, as the browser reports it
            np.testing.assert_allclose(camera.position, scene.cameras.T_world_cam[0, :3, 3], 1e-4)
            start, end = project(camera, np.stack([s.centers.mean(0) for s in scene.steps[::4]]))
            edge = project(camera, scene.steps[0].centers.mean(0) + np.array([BLOB_RADIUS, 0, 0]))[
                0
            ]
            radius = 0.6 * np.linalg.norm(edge - start)  # well inside the blob's disc
            assert np.linalg.norm(end - start) > 2.5 * radius  # the two places do not overlap

            at_start, at_end = (disc_fraction(colored(first), c, radius) for c in (start, end))
            assert at_start > 0.6 and at_end < 0.1, (at_start, at_end)

            viewer.gui.time.value = 4  # the slider, moved from Python
            last = wait_stable(page, until=lambda im: disc_fraction(colored(im), end, radius) > 0.6)
            at_start, at_end = (disc_fraction(colored(last), c, radius) for c in (start, end))
            assert viewer.time == 4 and at_end > 0.6 and at_start < 0.1, (at_start, at_end)
            changed = np.abs(first.astype(int) - last.astype(int)).sum(-1) > 60
            assert disc_fraction(changed, start, radius) > 0.5
            assert disc_fraction(changed, end, radius) > 0.5

            # the panel's screenshot button saves what the browser shows
            page.get_by_role("button", name="Save screenshot").click()
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob("shots/*.png")) and time.monotonic() < deadline:
                time.sleep(0.2)
            (saved,) = tmp_path.glob("shots/*.png")
            shot = np.asarray(Image.open(saved).convert("RGB"))
            assert saved.name.startswith("scene_t004_") and colored(shot).sum() > 1000

            # camera presets move the browser's camera
            viewer.go_to_view(1)
            target = scene.cameras.T_world_cam[1, :3, 3]
            deadline = time.monotonic() + 10
            while np.linalg.norm(client.camera.position - target) > 1e-3:
                assert time.monotonic() < deadline, client.camera.position
                time.sleep(0.1)
    finally:
        viewer.stop()
