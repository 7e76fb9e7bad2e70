"""Driving the viewer in a real browser: Debian's chromium, headless, software WebGL.

Used by ``tests/test_viewer_browser.py`` and, run as a script, to take the screenshot in
``docs/view.md``::

    python tests/viewer_browser.py SCENE OUT.jpg [--time T] [--view V]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
# no sandbox (root in CI), no GPU (SwiftShader's software WebGL instead), nothing fetched from
# the network by the browser itself
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]  # fmt: skip


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def browser_page(url: str, width: int = 800, height: int = 480) -> Iterator:
    """A Playwright page of headless chromium (fresh profile) showing ``url``."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="fourreal-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={"width": width, "height": height}, accept_downloads=False,
            )  # fmt: skip
            try:
                page = context.new_page()
                page.goto(url)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def canvas_image(page) -> np.ndarray:
    """What the 3D view shows now: ``[H, W, 3]`` uint8 of the canvas's area of the page."""
    box = page.locator("canvas").first.bounding_box()
    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def colored(image: np.ndarray) -> np.ndarray:
    """Pixels of saturated color (the test scenes' splats), not the white background or grey."""
    image = image.astype(np.int16)
    return (image.max(-1) - image.min(-1)) > 80


def wait_stable(
    page, until: Callable[[np.ndarray], bool] = lambda _: True, timeout: float = 40.0
) -> np.ndarray:
    """Poll the canvas until ``until(image)`` holds and the colored-pixel count has stopped
    changing (splats fade in over about a second in software WebGL); returns the last image."""
    counts: list[int] = []
    deadline = time.monotonic() + timeout
    image = canvas_image(page)
    while time.monotonic() < deadline:
        image = canvas_image(page)
        counts.append(int(colored(image).sum()))
        settled = len(counts) >= 3 and max(counts[-3:]) - min(counts[-3:]) <= 0.01 * counts[-1]
        if counts[-1] > 0 and settled and until(image):
            break
        time.sleep(0.3)
    return image


def wait_for_client(viewer, timeout: float = 30.0):
    """The first browser connected to ``viewer``, once it has reported its camera."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clients = list(viewer.server.get_clients().values())
        if clients and clients[0].camera.image_width > 0:
            return clients[0]
        time.sleep(0.1)
    raise TimeoutError("no browser connected to the viewer")


def project(camera, points: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` of world ``points [N, 3]`` in a viser client's camera
    (OpenCV axes, vertical ``fov``, principal point at the image center)."""
    from viser import transforms

    R_world_cam = transforms.SO3(np.asarray(camera.wxyz)).as_matrix()
    local = (np.atleast_2d(points) - np.asarray(camera.position)) @ R_world_cam  # R^T (p - c)
    width, height = camera.image_width, camera.image_height
    f = (height / 2) / np.tan(camera.fov / 2)
    return np.stack([width / 2 + f * local[:, 0] / local[:, 2],
                     height / 2 + f * local[:, 1] / local[:, 2]], axis=1)  # fmt: skip


def disc_fraction(mask: np.ndarray, center: np.ndarray, radius: float) -> float:
    """Fraction of the pixels of ``mask`` within ``radius`` of ``center`` (x, y) that are set."""
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    inside = (xs + 0.5 - center[0]) ** 2 + (ys + 0.5 - center[1]) ** 2 <= radius**2
    return float(mask[inside].mean()) if inside.any() else 0.0


def main() -> None:
    """Screenshot of the viewer (panel included) showing a scene, for the docs."""
    from fourreal.viewers.server import Viewer, ViewOptions
    from fourreal.viewers.sources import load_view_scene

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("scene", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--time", type=int, default=0)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=560)
    args = parser.parse_args()
    viewer = Viewer(load_view_scene(args.scene), ViewOptions(port=0, time=args.time))
    try:
        with browser_page(viewer.url, args.width, args.height) as page:
            wait_for_client(viewer)
            wait_stable(page)
            for close in page.locator(".mantine-Notification-closeButton").all():
                close.click()  # the "software WebGL rendering detected" notice
            time.sleep(1.0)
            png = page.screenshot()
        image = Image.open(io.BytesIO(png)).convert("RGB")
        image.save(args.output, quality=85, optimize=True)
        print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB)")
    finally:
        viewer.stop()


if __name__ == "__main__":
    main()
