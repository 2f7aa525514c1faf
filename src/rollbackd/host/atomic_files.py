"""Files that are either the old version or the new one, never half of each: temp name, fsync, rename, fsync dir.

A crash (or a full disk) in the middle of a write leaves the previous file intact; the temp file is removed on
failure. Temp files are created 0600 in the target's folder. Used for backups' manifests, the restore journal,
the state dir's baselines and the script vault; never on the monitored database itself (opening and closing an fd
of that file would drop SQLite's POSIX locks in this process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHUNK = 4 * 1024 * 1024


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically, with permissions ``mode``. Raise OSError (nothing changed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """Return the JSON in ``path``, or None when it is missing or unreadable (a lost baseline is relearned)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_hashed(
    source: Path,
    target: Path,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Copy ``source`` to a new file ``target`` (created with ``mode``, then owned by ``owner`` when root), fsync
    it, and return the sha256 of the bytes written. Raise FileExistsError when ``target`` exists, OSError."""
    digest = hashlib.sha256()
    total = source.stat().st_size
    copied = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        with source.open("rb") as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                copied += len(chunk)
                if progress is not None:
                    progress(copied, total)
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
