"""Safe by default: nothing executes code from a file it opens, the viewer stays on this machine
unless told otherwise (and says so), interrupts never lose an output, jobs that cannot fit in
memory fail before allocating."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

from fourreal.errors import FourrealError, ResourceError
from fourreal.io.atomic import atomic_dir, deferred_signals

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    p
    for folder in ("fourreal", "recon", "tracking", "viewers", "plugins", "bench", "examples")
    if (ROOT / folder).is_dir()
    for p in sorted((ROOT / folder).rglob("*.py"))
]
UNSAFE = {
    r"\bimport pickle\b|\bpickle\.load": "pickle runs code from the file",
    r"\bimport (c?Pickle|dill|shelve|marshal)\b": "pickle-like formats run code from the file",
    r"torch\.load\((?![^)]*weights_only\s*=\s*True)": "torch.load without weights_only=True",
    r"yaml\.(unsafe_)?load\(|yaml\.full_load|yaml\.Loader\b": "use yaml.safe_load",
    r"allow_pickle\s*=\s*True": "np.load with allow_pickle=True",
    r"\.extractall\(": "zip extraction by member name (use fourreal.io.archive)",
}


def test_sources_never_unpickle_or_unsafe_load():
    assert len(SOURCES) > 50
    problems = []
    for path in SOURCES:
        text = path.read_text()
        for pattern, why in UNSAFE.items():
            for match in re.finditer(pattern, text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(ROOT)}:{line}: {why}")
    assert not problems, "\n".join(problems)


def test_viewer_binds_loopback_by_default_and_warns_otherwise(tmp_path, monkeypatch, capsys):
    import inspect

    from fourreal.cli import view
    from fourreal.io import write_ply
    from fourreal.types import GaussianParams
    from fourreal.viewers import server

    assert inspect.signature(view).parameters["host"].default == "127.0.0.1"
    assert server.ViewOptions().host == "127.0.0.1"
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert server.is_loopback(host), host
    for host in ("0.0.0.0", "", "::", "192.168.1.5", "example.org"):
        assert not server.is_loopback(host), host

    n = 3
    ply = write_ply(
        GaussianParams(
            means=torch.zeros(n, 3), scales=torch.full((n, 3), 0.1), quats=torch.eye(4)[:n],
            opacities=torch.full((n,), 0.5), colors=torch.full((n, 3), 0.5),
        ),
        tmp_path / "s.ply",
    )  # fmt: skip

    class FakeViewer:  # no server: only what run_viewer prints is checked
        url, display_note = "http://x", ""

        def __init__(self, scene, options):
            pass

        def stop(self):
            pass

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "Viewer", FakeViewer)
    monkeypatch.setattr(server.clock, "sleep", interrupt)
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True), ("10.0.0.2", True)):
        server.run_viewer(ply, server.ViewOptions(host=host), quiet=True)
        err = capsys.readouterr().err
        assert ("warning" in err and host in err) == warned, (host, err)


def test_interrupt_during_the_folder_swap_keeps_an_output(tmp_path, monkeypatch):
    """Ctrl-C between the two renames of atomic_dir is held back until the new folder is in
    place; if the second rename itself fails, the previous folder is put back."""
    out = tmp_path / "out"
    with atomic_dir(out, marker="a.txt") as tmp:
        (tmp / "a.txt").write_text("old")
    real_replace = os.replace
    calls = []

    def replace_and_interrupt(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:  # after moving the previous folder aside
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, marker="a.txt") as tmp:
            (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left behind

    def failing_second_replace(src, dst):
        if Path(dst) == out and Path(src).name.endswith(".tmp"):  # the new folder cannot move
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second_replace)
    with pytest.raises(OSError):
        with atomic_dir(out, marker="a.txt") as tmp:
            (tmp / "a.txt").write_text("newer")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_deferred_signals_deliver_after_the_block():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_restores_the_sigterm_handler_and_reports_errors(capsys):
    from fourreal.cli import main

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "-o", "/nonexistent/x", "--views", "0"])
    assert exit_info.value.code == 2
    assert "fourreal: error: --views must be at least 1" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_jobs_too_large_for_memory_fail_before_allocating(capsys):
    from fourreal.cli import main
    from fourreal.memory import check_fits

    with pytest.raises(ResourceError, match=r"needs about 1.0 TiB .* use a smaller --height"):
        check_fits(1 << 40, "a test job", "use a smaller --height", available=1 << 30)
    assert issubclass(ResourceError, FourrealError) and issubclass(ResourceError, MemoryError)
    with pytest.raises(SystemExit):
        main(["synth", "-o", "/nonexistent/x", "--views", "64", "--times", "64",
              "--height", "8192", "--width", "8192"])  # fmt: skip
    err = capsys.readouterr().err
    assert "fourreal: error:" in err and "--height/--width" in err


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    """Outputs are not left private (mkstemp's 0600), also when the writer re-creates the file
    (safetensors does)."""
    from fourreal.diffusion.models import DiTConfig, TwoStreamDiT, VideoDiT, save_generator
    from fourreal.io.atomic import write_json

    mask = os.umask(0o022)
    try:
        model = TwoStreamDiT(VideoDiT(DiTConfig(width=16, depth=1, heads=2, patch=4)), "soft")
        for path in (save_generator(model, tmp_path / "m.safetensors"),
                     write_json(tmp_path / "x.json", {})):  # fmt: skip
            assert path.stat().st_mode & 0o777 == 0o644, path
    finally:
        os.umask(mask)
