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
import tempfile
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private (0700)
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
