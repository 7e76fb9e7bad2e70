"""Estimate memory before allocating it, so a job that cannot fit fails at once with a clear
message instead of swapping the machine to a halt or being killed half-way."""

from __future__ import annotations

import os

from fourreal.errors import ResourceError

# Keep a margin: other processes, Python itself and temporaries need room too.
_USABLE_FRACTION = 0.8


def available_bytes() -> int:
    """Memory the system could give this process now (``MemAvailable`` on Linux; else physical
    memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def check_fits(nbytes: float, what: str, hint: str, available: int | None = None) -> None:
    """Raise :class:`ResourceError` if ``nbytes`` (an estimate) exceeds the usable memory.

    ``what`` says what needs it (``"the grid grid/ (64 x 64 frames of 4096x4096)"``), ``hint``
    the option that makes it smaller (``"use a smaller --height/--width"``).
    """
    limit = (available_bytes() if available is None else available) * _USABLE_FRACTION
    if nbytes > limit:
        raise ResourceError(
            f"{what} needs about {format_bytes(nbytes)} of memory but only "
            f"{format_bytes(limit)} can be used; {hint}"
        )


__all__ = ["available_bytes", "check_fits", "format_bytes"]
