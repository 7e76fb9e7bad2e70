"""The browser viewer: a viser server with one splat node, a time slider and playback.

Playback keeps **one** splat node and replaces its buffer per time step: viser sorts every
splat node of a scene together, hidden ones included, so one node per step makes each frame
cost as much as all steps (as measured when the viewer was planned, in software WebGL: 30
hidden nodes × 20k splats ~4.5 s per frame, one replaced node ~31 ms). The buffers of all
steps are packed before the server starts.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import math
import sys
import threading
import time as clock
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fourreal.errors import FourrealError
from fourreal.io.atomic import atomic_file
from fourreal.viewers.cameras import (
    AXES,
    ViewPose,
    frame_bounds,
    frame_cameras,
    matrix_to_wxyz,
    robust_bounds,
)
from fourreal.viewers.sources import ViewScene
from fourreal.viewers.splats import PackedStep, pack_steps


@dataclass
class ViewOptions:
    """How ``fourreal view`` serves a scene (defaults that work for a local browser)."""

    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 serves only this machine (0.0.0.0: every interface)."""
    port: int = 8080
    """Port to listen on (the next free one if taken; 0: any free port)."""
    time: int = 0
    """Initial time index."""
    max_gaussians: int = 500_000
    """At most this many Gaussians go to the browser (a fixed random subset beyond that)."""
    opacity_threshold: float = 0.0
    """Hide Gaussians less opaque than this."""
    fps: float | None = None
    """Playback speed in time steps per second (default: the scene's)."""
    loop: bool = True
    up: str | None = None
    """World up axis (+x, -y, ...; default: from the scene's cameras, else +z)."""
    screenshots: Path = Path("screenshots")
    """Folder the screenshot button writes PNGs into."""

    def check(self, scene: ViewScene) -> None:
        """Raise one :class:`FourrealError` for the first option that cannot work."""
        if not 0 <= self.time < scene.num_times:
            raise FourrealError(
                f"--time {self.time} is out of range: {scene.path} has {scene.num_times} time "
                f"step(s), so --time takes 0..{scene.num_times - 1}"
            )
        if not 0 <= self.port <= 65535:
            raise FourrealError(f"--port must be in 0..65535, got {self.port}")
        if self.max_gaussians < 1:
            raise FourrealError(f"--max-gaussians must be at least 1, got {self.max_gaussians}")
        if not 0 <= self.opacity_threshold <= 1:
            raise FourrealError(
                f"--opacity-threshold must be in [0, 1], got {self.opacity_threshold}"
            )
        if self.fps is not None and not (0 < self.fps <= 240):
            raise FourrealError(f"--fps must be in (0, 240], got {self.fps}")
        if self.up is not None and self.up not in AXES:
            raise FourrealError(f"--up must be one of {', '.join(AXES)}, got {self.up!r}")


class Viewer:
    """A running viewer of one :class:`ViewScene`. Create it, read :attr:`url`, call
    :meth:`stop` at the end. :meth:`set_time`, :meth:`play`, :meth:`pause` drive it from
    Python (the GUI follows)."""

    def __init__(self, scene: ViewScene, options: ViewOptions | None = None) -> None:
        options = options or ViewOptions()
        options.check(scene)
        self.scene, self.options = scene, options
        self.fps = float(options.fps or scene.fps)
        self._lock = threading.RLock()
        self._time = options.time
        self._playing = False
        self._stopped = threading.Event()
        self._splats: Any = None
        self._frustums: list[Any] = []
        self._packed: list[PackedStep] = []
        self.display_note = ""
        if scene.steps:  # pack before serving: errors and the heavy work come first
            self._packed, self.display_note = pack_steps(
                scene.steps, options.opacity_threshold, options.max_gaussians
            )
        self.up = self._up_direction()
        self.center = self._scene_center()
        self.initial_pose = self._initial_pose()
        self.server = _start_server(options.host, options.port)
        try:
            from fourreal.viewers.gui import build_gui

            self._set_initial_camera()
            self._add_cameras()
            self.gui = build_gui(self)
            self._show(self._time)
        except BaseException:
            self.stop()
            raise
        self._player = threading.Thread(target=self._play_loop, name="fourreal-play", daemon=True)
        self._player.start()

    # ------------------------------------------------------------------ public controls

    @property
    def url(self) -> str:
        host = self.options.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.server.get_port()}"

    @property
    def time(self) -> int:
        return self._time

    @property
    def playing(self) -> bool:
        return self._playing

    def set_time(self, t: int) -> None:
        """Show time step ``t`` in every connected browser."""
        t = int(t)
        if not 0 <= t < self.scene.num_times:
            raise FourrealError(f"time {t} is out of range 0..{self.scene.num_times - 1}")
        with self._lock:
            self._time = t
            self._show(t)
            if self.gui.time is not None and self.gui.time.value != t:
                self.gui.time.value = t

    def play(self) -> None:
        with self._lock:
            self._playing = self.scene.num_times > 1
            self.gui.sync_play_button(self._playing)

    def pause(self) -> None:
        with self._lock:
            self._playing = False
            self.gui.sync_play_button(False)

    def set_display(self, opacity_threshold: float, max_gaussians: int) -> None:
        """Re-select and re-pack what the browser gets, then show the current step again."""
        if not self.scene.steps:
            return
        with self._lock:
            self._packed, self.display_note = pack_steps(
                self.scene.steps, float(opacity_threshold), max(1, int(max_gaussians))
            )
            self._show(self._time)
            self.gui.sync_notes()

    def go_to_view(self, v: int, clients: list[Any] | None = None) -> ViewPose:
        """Move the browsers' cameras (all, or ``clients``) to the scene's camera ``v``."""
        pose = self.camera_pose(v)
        for client in clients or list(self.server.get_clients().values()):
            with client.atomic():
                client.camera.fov = pose.fov
                client.camera.up_direction = self.up
                client.camera.position = pose.position
                client.camera.look_at = pose.look_at
        return pose

    def camera_pose(self, v: int) -> ViewPose:
        cameras = self.scene.cameras
        if cameras is None or not cameras.has_poses or not 0 <= v < len(cameras):
            raise FourrealError(f"{self.scene.path} has no camera {v}")
        return cameras.pose(v, self.center)

    def screenshot(self, client: Any) -> Path:
        """Render ``client``'s current view in its browser and save it as a PNG."""
        camera = client.camera
        height, width = camera.image_height or 720, camera.image_width or 1280
        image = client.get_render(height, width, transport_format="png", timeout=60)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        name = f"{self.scene.path.stem}_t{self._time:03d}_{stamp}.png"
        path = self.options.screenshots / name
        with atomic_file(path) as tmp:
            Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
        return path

    def stop(self) -> None:
        """Stop playback and the server (idempotent)."""
        self._stopped.set()
        player = getattr(self, "_player", None)
        if player is not None and player is not threading.current_thread():
            player.join(timeout=2)
        server = getattr(self, "server", None)
        if server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser prints "Server stopped"
                server.stop()
            self.server = None

    # ------------------------------------------------------------------ scene content

    def _show(self, t: int) -> None:
        with self._lock:
            if self._packed:
                self._show_splats(self._packed[t])
            if self.scene.images is not None:
                with self.server.atomic():
                    for v, frustum in enumerate(self._frustums):
                        frustum.image = self.scene.images[v, t]
            if getattr(self, "gui", None) is not None:
                self.gui.sync_time(t)

    def _show_splats(self, packed: PackedStep) -> None:
        if len(packed.centers) == 0:
            if self._splats is not None:
                self._splats.visible = False
            return
        if self._splats is None:
            # created from one placeholder Gaussian; the real buffer follows in the same batch
            with self.server.atomic():
                self._splats = self.server.scene.add_gaussian_splats(
                    "/splats", centers=np.zeros((1, 3)), covariances=np.eye(3)[None] * 1e-6,
                    rgbs=np.zeros((1, 3)), opacities=np.zeros((1, 1)),
                )  # fmt: skip
                self._splats.buffer = packed.buffer()
        else:
            self._splats.buffer = packed.buffer()
        self._splats.visible = True

    def _scene_center(self) -> np.ndarray:
        """What camera presets look at: the middle of the Gaussians at the initial time, or
        what the cameras look at."""
        if self.scene.steps:
            return robust_bounds(self.scene.steps[self._time].centers)[0]
        cameras = self.scene.cameras
        if cameras is not None and cameras.has_poses:
            return _cameras_target(cameras.T_world_cam)
        return np.zeros(3)

    def _up_direction(self) -> np.ndarray:
        if self.options.up is not None:
            return np.array(AXES[self.options.up])
        cameras = self.scene.cameras
        up = cameras.up() if cameras is not None else None
        return np.array(AXES["+z"]) if up is None else up

    def _initial_pose(self) -> ViewPose:
        cameras = self.scene.cameras
        if cameras is not None and cameras.has_poses:
            if self.scene.kind == "grid":  # from behind the cameras, so all frustums show
                return frame_cameras(cameras.T_world_cam, self._frustum_size(), self.up, 0.9)
            return cameras.pose(0, self.center)
        if self.scene.steps:
            center, radius = robust_bounds(self.scene.steps[self._time].centers)
            return frame_bounds(center, radius, self.up, math.radians(50))
        # a grid without poses: frames side by side along x, facing +y (see _add_cameras)
        views = 1 if self.scene.images is None else self.scene.images.shape[0]
        center = np.array([(views - 1) * 0.6, 0.0, 0.0])
        return ViewPose(center - [0, 0.8 + 0.6 * views, 0], center, np.array(AXES["+z"]), 0.9)

    def _set_initial_camera(self) -> None:
        pose = self.initial_pose
        self.server.scene.set_up_direction(tuple(self.up))
        camera = self.server.initial_camera
        camera.fov = pose.fov
        camera.up = tuple(self.up)
        camera.position = tuple(pose.position)
        camera.look_at = tuple(pose.look_at)

    def _add_cameras(self) -> None:
        """Frustums of the scene's cameras (with the frames on them for a grid)."""
        scene, cameras = self.scene, self.scene.cameras
        grid = scene.kind == "grid"
        if not grid and (cameras is None or not cameras.has_poses):
            return
        images = scene.images
        views = len(cameras) if cameras is not None else images.shape[0]
        if cameras is not None and cameras.has_poses:
            poses = [(cameras.T_world_cam[v, :3, :3], cameras.T_world_cam[v, :3, 3])
                     for v in range(views)]  # fmt: skip
            size = self._frustum_size()
        else:  # no poses: side by side along x, looking along +y, image up = +z
            R = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
            poses = [(R, np.array([1.2 * v, 0.0, 0.0])) for v in range(views)]
            size = 0.5
        for v, (R, t) in enumerate(poses):
            if cameras is not None:
                fov, aspect = cameras.fov_y(v), cameras.width / cameras.height
            else:
                fov, aspect = 0.8, images.shape[3] / images.shape[2]
            self._frustums.append(
                self.server.scene.add_camera_frustum(
                    f"/cameras/v{v:03d}",
                    fov=fov,
                    aspect=aspect,
                    scale=size,
                    thickness=0.01 * size,
                    image=None if images is None else images[v, 0],
                    wxyz=matrix_to_wxyz(R),
                    position=t,
                    visible=grid,
                )
            )

    def _frustum_size(self) -> float:
        T_world_cam = self.scene.cameras.T_world_cam
        distances = np.linalg.norm(T_world_cam[:, :3, 3] - self.center, axis=1)
        return max(0.2 * float(np.median(distances)), 1e-3)

    def _play_loop(self) -> None:
        while not self._stopped.is_set():
            if not self._playing:
                self._stopped.wait(0.05)
                continue
            started = clock.monotonic()
            with self._lock:
                t = self._time + 1
                if t >= self.scene.num_times:
                    if not self.gui.loop.value:
                        self.pause()
                        continue
                    t = 0
                self.set_time(t)
            self._stopped.wait(max(0.0, 1.0 / self.fps - (clock.monotonic() - started)))

    def set_cameras_visible(self, visible: bool) -> None:
        with self.server.atomic():
            for frustum in self._frustums:
                frustum.visible = visible


def _cameras_target(T_world_cam: np.ndarray) -> np.ndarray:
    """The point closest to all the cameras' optical axes (least squares), e.g. what a ring of
    cameras looks at; the mean camera center plus one unit forward if the axes are parallel."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for T in T_world_cam:
        d = T[:3, 2] / np.linalg.norm(T[:3, 2])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ T[:3, 3]
    if np.linalg.cond(A) > 1e6:
        return T_world_cam[:, :3, 3].mean(0) + T_world_cam[:, :3, 2].mean(0)
    return np.linalg.solve(A, b)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.x, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: may resolve to anything
        return False


def _start_server(host: str, port: int):
    import viser

    # viser prints its own banner; fourreal prints the URL itself (and nothing with --quiet)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            server = viser.ViserServer(host=host, port=port, verbose=False)
        except OSError as err:
            raise FourrealError(f"cannot serve on {host}:{port} ({err.strerror or err})") from err
    server.gui.main_panel.dock_right()
    server.gui.configure_theme(show_share_button=False, show_logo=False)
    return server


def run_viewer(path: Path, options: ViewOptions, quiet: bool = False) -> None:
    """``fourreal view``: load and check ``path``, serve it, block until Ctrl-C."""
    from fourreal.viewers.sources import load_view_scene

    scene = load_view_scene(path)
    if not is_loopback(options.host):
        # printed even with --quiet: serving a scene to the network should never go unnoticed
        print(
            f"fourreal view: warning: --host {options.host or '0.0.0.0'} serves the scene to "
            "other machines on the network, with no password; use --host 127.0.0.1 (the "
            "default) to keep it on this machine",
            file=sys.stderr,
            flush=True,
        )
    viewer = Viewer(scene, options)
    try:
        if not quiet:
            shown = f"; {viewer.display_note}" if viewer.display_note else ""
            print(f"fourreal view: {scene.kind} scene {scene.path}, {scene.num_times} time "
                  f"step(s){shown}")  # fmt: skip
            for note in scene.notes:
                print(f"note: {note}")
            listening = f", listening on {options.host}" if options.host != "127.0.0.1" else ""
            print(f"fourreal view: open {viewer.url} (Ctrl-C to stop{listening})", flush=True)
        while True:
            clock.sleep(3600)
    except KeyboardInterrupt:
        if not quiet:
            print("fourreal view: stopped", flush=True)
    finally:
        viewer.stop()
