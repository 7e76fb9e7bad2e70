"""Command line (tyro). Subcommands only: every command calls into the library."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("fourreal: no commands yet")
