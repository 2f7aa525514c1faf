"""Pidfiles: written atomically by the serving process, read by stop, restart and the kill fault."""

import os
from pathlib import Path


def write_pidfile(path: Path, pid: int) -> None:
    """Write `pid` to `path` via a temp file and rename, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{pid}.tmp")
    try:
        temporary.write_text(f"{pid}\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_pidfile(path: Path) -> int | None:
    """Return the pid in `path`, or None if the file is missing or does not hold a pid."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def remove_pidfile(path: Path, pid: int) -> None:
    """Remove `path` if it still names `pid` (a newer instance may have replaced it)."""
    if read_pidfile(path) == pid:
        path.unlink(missing_ok=True)
