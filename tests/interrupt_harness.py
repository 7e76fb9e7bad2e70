"""Kill a ``fourreal`` command at random points and check what it leaves behind.

Generic over commands: give the command line, its output path and a ``validate`` function that
says what a folder or file at that path is (``"complete"``, ``"resumable"``) or raises
``AssertionError`` if it is neither. Usable for any subcommand, ``fourreal train`` included
once it exists::

    outcomes = kill_points(["train", ...], output, validate, signals=[SIGINT, SIGTERM], ...)

For each kill point the harness

1. optionally puts a previous complete output in place (``previous``),
2. starts ``python -m fourreal ...`` and sends the signal either after a random delay within
   the command's measured running time, or as soon as a temporary output (``.NAME.*.tmp``)
   appears beside or inside the output (the moment a write is under way),
3. waits for the process to exit, then checks that the output is the previous one unchanged,
   a complete new one, or a resumable checkpoint, that no file under a final name is partial
   (``validate`` opens every one), and that no temporary file or folder is left behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TEMP_SUFFIXES = (".tmp", ".old", ".parts")


@dataclass
class Outcome:
    """One kill point: what was sent when, how the process ended, what the output was."""

    signal: str
    trigger: str  # "delay 2.31 s" or "temporary output"
    returncode: int
    state: str  # absent, previous, complete, resumable


def run_fourreal(args: list[str], cwd: Path, timeout: float = 300) -> float:
    """Run ``fourreal ARGS`` to completion in a subprocess; returns the wall time."""
    start = time.perf_counter()
    done = subprocess.run(_command(args), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"fourreal {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def run_in_process(args: list[str]) -> float:
    """Run ``fourreal ARGS`` in this process (paths must be absolute); returns the wall time.
    Cheaper than :func:`run_fourreal` where only the result and a duration are needed."""
    from fourreal.cli import main

    start = time.perf_counter()
    main(args)
    return time.perf_counter() - start


def startup_seconds() -> float:
    """How long ``python -m fourreal`` takes to start (imports), measured once."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import fourreal.cli"], env=_env(), check=True)
    return time.perf_counter() - start


def kill_points(
    args: list[str],
    output: Path,
    validate: Callable[[Path], str],
    *,
    cwd: Path,
    count: int,
    seconds: float,
    previous: Path | None = None,
    seed: int = 0,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    when: Callable[[], bool] | None = None,
    earliest: float = 0.0,
) -> list[Outcome]:
    """Run ``fourreal ARGS`` ``count`` times, each killed at a random point (see the module
    docstring). ``seconds`` is the command's uninterrupted running time; ``previous`` a
    complete earlier output to restore before half of the kill points. Even kill points fire as
    soon as a temporary output appears, odd ones after a random delay between ``earliest`` (the
    start-up time, before which nothing happens) and ``seconds``; ``when``, if given, replaces
    both: the signal goes as soon as it returns True."""
    rng = random.Random(seed)
    outcomes = []
    for k in range(count):
        _remove(output)
        before = None
        if previous is not None and k % 4 in (0, 3):
            _copy(previous, output)
            before = fingerprint(output)
        sig = signals[k % len(signals)]
        on_temp = k % 2 == 0
        delay = rng.uniform(min(earliest, seconds), 1.05 * seconds)
        proc = subprocess.Popen(_command(args), cwd=cwd, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        started = time.perf_counter()
        trigger = "temporary output" if on_temp else f"delay {delay:.2f} s"
        if when is not None:
            on_temp, delay, trigger = True, math.inf, "condition"
        ready = when or (lambda: bool(_temporaries(output)))
        while proc.poll() is None:
            elapsed = time.perf_counter() - started
            if (on_temp and ready()) or (not on_temp and elapsed >= delay):
                proc.send_signal(sig)
                break
            if on_temp and elapsed > 4 * seconds + 30:  # never saw a temporary: kill anyway
                trigger = "timeout"
                proc.send_signal(sig)
                break
            time.sleep(0.002)
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"fourreal {' '.join(args)} ignored {sig.name}") from None
        state = _check(output, validate, before, proc.returncode, stderr.decode(errors="replace"))
        outcomes.append(Outcome(sig.name, trigger, proc.returncode, state))
    return outcomes


def fingerprint(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (or of ``path`` itself), by relative name."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _check(output: Path, validate, before, returncode: int, stderr: str) -> str:
    if returncode not in (0, 130, 143, -2, -15, 1):
        raise AssertionError(f"unexpected exit status {returncode}:\n{stderr[-3000:]}")
    if returncode == 1 and "KeyboardInterrupt" not in stderr:
        raise AssertionError(f"the command failed:\n{stderr[-3000:]}")
    left = _temporaries(output)
    assert not left, f"temporary outputs left behind: {left}"
    if not output.exists():
        assert before is None, f"{output}: the previous output was lost"
        return "absent"
    if before is not None and _same_final_files(before, fingerprint(output)):
        validate(output)  # still whole
        return "previous"
    return validate(output)


def _same_final_files(before: dict[str, str], after: dict[str, str]) -> bool:
    """Equal apart from files a run may update in place atomically (log, checkpoint)."""
    volatile = ("log.txt", "checkpoint.safetensors")
    keep = lambda d: {k: v for k, v in d.items() if Path(k).name not in volatile}  # noqa: E731
    return keep(before) == keep(after)


def _temporaries(output: Path) -> list[str]:
    found = []
    for folder in (output.parent, output):
        if folder.is_dir():
            found += [
                str(p) for p in folder.iterdir()
                if p.name.startswith(".") and p.name.endswith(_TEMP_SUFFIXES)
            ]  # fmt: skip
    return found


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fourreal", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
