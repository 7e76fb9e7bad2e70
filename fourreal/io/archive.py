"""Reading zip archives from anywhere without trusting them.

A zip names its members with paths and declares their sizes; both can be hostile. Member names
that are absolute or climb out with ``..`` are refused (even though fourreal never extracts by
member name, a later tool might), and the declared uncompressed sizes and compression ratios
are bounded before anything is decompressed; the copy itself stops at the declared size, so a
member that lies about its size cannot fill the disk.
"""

from __future__ import annotations

import lzma
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fourreal.errors import FourrealError
from fourreal.memory import check_fits, format_bytes

MAX_RATIO = 200  # float PLY data compresses ~1.1-3x; zip bombs compress ~1000x
_RATIO_FLOOR = 1 << 20  # small members may compress well (headers, constant columns)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(FourrealError):
    """A zip file is unreadable or unsafe (absolute or ``..`` member names, a zip bomb)."""


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open ``path`` as a zip, with every member name checked (see :func:`check_member_name`)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ArchiveError(f"{path} is not a readable zip file ({err})") from err
    try:
        for info in archive.infolist():
            check_member_name(info.filename, path)
    except BaseException:
        archive.close()
        raise
    return archive


def check_member_name(name: str, where: Path) -> None:
    """Refuse absolute names (``/x``, ``C:x``, ``\\\\host``) and names with ``..`` parts."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if "\x00" in name or posix.startswith("/") or _DRIVE.match(posix):
        raise ArchiveError(f"{where} holds a member with an absolute name {name!r}; refusing it")
    if ".." in parts:
        raise ArchiveError(f"{where} holds a member whose name climbs out with '..' ({name!r})")


def check_sizes(
    members: list[zipfile.ZipInfo], where: Path, *, available: int | None = None
) -> None:
    """Bound what ``members`` would decompress to: their declared total must fit in memory, and
    no member larger than 1 MiB may claim a compression ratio above :data:`MAX_RATIO`."""
    total = 0
    for info in members:
        if info.file_size < 0 or info.compress_size < 0:
            raise ArchiveError(f"{where}: {info.filename} declares a negative size")
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > _RATIO_FLOOR and ratio > MAX_RATIO:
            raise ArchiveError(
                f"{where}: {info.filename} would expand {info.compress_size} bytes to "
                f"{format_bytes(info.file_size)} (ratio {ratio:.0f}, more than {MAX_RATIO}); "
                "this looks like a zip bomb, refusing it"
            )
        total += info.file_size
    try:
        check_fits(total, f"unpacking {where} ({len(members)} members)",
                   "unzip fewer steps or open the PLYs from a folder", available)  # fmt: skip
    except FourrealError as err:
        raise ArchiveError(str(err)) from None


def copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dst: BinaryIO, where: Path) -> int:
    """Decompress ``info`` into ``dst``, never writing more than its declared size."""
    limit = info.file_size
    written = 0
    try:
        with archive.open(info) as src:
            while chunk := src.read(min(1 << 20, limit - written + 1)):
                written += len(chunk)
                if written > limit:
                    raise ArchiveError(
                        f"{where}: {info.filename} decompresses to more than the {limit} bytes "
                        "it declares; the zip is corrupt or hostile"
                    )
                dst.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
            zlib.error, lzma.LZMAError) as err:  # fmt: skip
        raise ArchiveError(f"{where}: {info.filename} is unreadable ({err})") from None
    return written


__all__ = [
    "MAX_RATIO",
    "ArchiveError",
    "check_member_name",
    "check_sizes",
    "copy_member",
    "open_zip",
]
