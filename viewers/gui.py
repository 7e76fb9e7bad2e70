"""The viewer's control panel: time slider, play/pause, fps, loop, camera presets, display
limits (opacity threshold, max Gaussians) and a screenshot button, built from viser handles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fourreal.viewers.server import Viewer


class ViewerGui:
    """Handles of the panel's controls (``None`` where the scene has nothing to control)."""

    def __init__(self, viewer: Viewer) -> None:
        import viser

        self.viewer = viewer
        self._icons = viser.Icon
        gui = viewer.server.gui
        scene = viewer.scene
        gui.set_panel_label("fourreal")
        self.info = gui.add_markdown(self._info_text())
        self.time: Any = None
        self.time_label: Any = None
        self.play: Any = None
        self.fps: Any = None
        self.loop: Any = None
        if scene.num_times > 1:
            self._add_time_controls()
        cameras = scene.cameras
        self.view: Any = None
        self.show_cameras: Any = None
        if (cameras is not None and cameras.has_poses) or scene.kind == "grid":
            self._add_camera_controls()
        self.opacity: Any = None
        self.max_gaussians: Any = None
        if scene.steps:
            self._add_display_controls()
        self.screenshot = gui.add_button("Save screenshot", icon=viser.Icon.CAMERA)
        self.screenshot.on_click(self._on_screenshot)

    # ------------------------------------------------------------------ building

    def _add_time_controls(self) -> None:
        gui, viewer = self.viewer.server.gui, self.viewer
        last = viewer.scene.num_times - 1
        with gui.add_folder("Time"):
            self.time = gui.add_slider(
                "time step", min=0, max=last, step=1, initial_value=viewer.time
            )
            self.time_label = gui.add_markdown("")
            self.play = gui.add_button("Play", icon=self._icons.PLAYER_PLAY)
            fps = min(max(viewer.fps, 0.5), 60.0)
            self.fps = gui.add_slider("fps", min=0.5, max=60.0, step=0.5, initial_value=fps)
            self.loop = gui.add_checkbox("loop", initial_value=viewer.options.loop)

        @self.time.on_update
        def _(_event) -> None:
            if int(self.time.value) != viewer.time:
                viewer.set_time(int(self.time.value))

        @self.play.on_click
        def _(_event) -> None:
            viewer.pause() if viewer.playing else viewer.play()

        @self.fps.on_update
        def _(_event) -> None:
            viewer.fps = float(self.fps.value)

    def _add_camera_controls(self) -> None:
        gui, viewer = self.viewer.server.gui, self.viewer
        cameras = viewer.scene.cameras
        with gui.add_folder("Cameras"):
            if cameras is not None and cameras.has_poses:
                options = tuple(f"view {v}" for v in range(len(cameras)))
                self.view = gui.add_dropdown("jump to", options, initial_value=options[0])
                go = gui.add_button("Go to view")

                def jump(event) -> None:
                    v = int(str(self.view.value).split()[-1])
                    viewer.go_to_view(v, None if event.client is None else [event.client])

                self.view.on_update(jump)
                go.on_click(jump)
            grid = viewer.scene.kind == "grid"
            self.show_cameras = gui.add_checkbox("show cameras", initial_value=grid)

        @self.show_cameras.on_update
        def _(_event) -> None:
            viewer.set_cameras_visible(bool(self.show_cameras.value))

    def _add_display_controls(self) -> None:
        gui, viewer = self.viewer.server.gui, self.viewer
        with gui.add_folder("Display"):
            self.opacity = gui.add_slider(
                "opacity threshold", min=0.0, max=1.0, step=0.01,
                initial_value=viewer.options.opacity_threshold,
            )  # fmt: skip
            self.max_gaussians = gui.add_number(
                "max Gaussians", initial_value=viewer.options.max_gaussians, min=1, step=1000
            )
            apply = gui.add_button("Apply")
            self.display_note = gui.add_markdown(self._display_text())

        @apply.on_click
        def _(_event) -> None:
            viewer.set_display(float(self.opacity.value), int(self.max_gaussians.value))

    # ------------------------------------------------------------------ callbacks and sync

    def _on_screenshot(self, event) -> None:
        client = event.client
        if client is None:
            return
        try:
            path = self.viewer.screenshot(client)
        except (TimeoutError, OSError, RuntimeError) as err:
            client.add_notification("Screenshot failed", str(err), auto_close_seconds=8)
            return
        client.add_notification("Screenshot saved", str(path), auto_close_seconds=5)

    def sync_time(self, t: int) -> None:
        if self.time_label is not None:
            value = self.viewer.scene.time_values[t]
            last = self.viewer.scene.num_times - 1
            self.time_label.content = f"step {t} of 0–{last} · time {value:.3g}"

    def sync_play_button(self, playing: bool) -> None:
        if self.play is not None:
            self.play.label = "Pause" if playing else "Play"
            self.play.icon = self._icons.PLAYER_PAUSE if playing else self._icons.PLAYER_PLAY

    def sync_notes(self) -> None:
        if self.max_gaussians is not None:
            self.display_note.content = self._display_text()

    def _display_text(self) -> str:
        return f"*{self.viewer.display_note}*" if self.viewer.display_note else ""

    def _info_text(self) -> str:
        scene = self.viewer.scene
        lines = [f"**{scene.kind} scene** `{scene.path.name}`"]
        facts = [f"{scene.num_times} time step(s)"]
        if scene.steps:
            facts.append(f"{scene.num_gaussians:,} Gaussians")
        if scene.cameras is not None:
            facts.append(f"{len(scene.cameras)} camera(s)")
        lines.append(" · ".join(facts))
        lines += [f"- {note}" for note in scene.notes]
        return "\n\n".join(lines)


def build_gui(viewer: Viewer) -> ViewerGui:
    return ViewerGui(viewer)
