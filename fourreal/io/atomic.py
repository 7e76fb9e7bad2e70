"""Write outputs so that a crash or Ctrl-C never leaves a half-written result under a final name.

Everything is written into a hidden temporary sibling (same folder, so the final ``os.replace``
is atomic on one file system) and renamed at the end; on any failure, including
``KeyboardInterrupt``, the temporary is removed and the previous output stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fourreal.errors import FourrealError


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        # an interrupt between creating the temporary and knowing its name would leak it
        with deferred_signals():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = Path(tmp_name)
            os.close(fd)
            # mkstemp makes the file private (0600); give it the mode a plain open() would
            mode = 0o666 & ~_umask()
            os.chmod(tmp, mode)
        yield tmp
        # again: writers that remove and re-create the file (safetensors) make it 0600 too
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON to ``path`` atomically (the old file stays intact until
    the new one is complete); returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1) + "\n")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` when the block succeeds.

    An existing ``path`` is replaced only if it is empty or holds ``marker`` (e.g. ``grid.json``,
    meaning it is an earlier output of the same kind), so a mistyped ``-o`` never wipes a folder
    of other files.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FourrealError(f"{path} exists and is not a folder; choose another output path")
        if any(path.iterdir()) and (marker is None or not (path / marker).exists()):
            raise FourrealError(
                f"{path} exists and is not empty (no {marker or 'earlier output'} in it); "
                "choose another output folder or remove it first"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_dir(path, suffix=".tmp") as tmp:
        yield tmp
        _swap_in(tmp, path)


@contextlib.contextmanager
def temporary_dir(beside: str | os.PathLike[str], suffix: str = ".parts") -> Iterator[Path]:
    """A hidden temporary folder ``.NAME.*SUFFIX`` beside ``beside``, removed when the block
    ends however it ends (interrupts included); for staging files that are not outputs."""
    beside = Path(beside)
    tmp = None
    try:
        with deferred_signals():
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=suffix, dir=beside.parent)
            )
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private (0700)
        yield tmp
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``, moving an earlier ``path`` aside first.

    A folder cannot replace a non-empty folder in one rename, so there are two renames; Ctrl-C
    and SIGTERM are held back between them (and delivered right after), so an interrupt never
    leaves neither the old nor the new folder at ``path``. Should the process die there anyway
    (SIGKILL, power loss), the previous folder is in the hidden ``.NAME.*.old/previous``.
    """
    old = None
    try:
        with deferred_signals():
            if path.exists():
                old = Path(
                    tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
                )
                os.replace(path, old / "previous")
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old / "previous", path)
                    raise
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold back ``signums`` while the block runs and deliver them after it, to the handlers
    that were installed before. Only the main thread can install handlers; elsewhere (where no
    signal handler runs anyway) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, lambda n, _frame: received.append(n))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in received[:1]:
            signal.raise_signal(signum)
