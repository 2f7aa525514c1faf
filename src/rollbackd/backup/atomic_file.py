"""Writing and copying files so that a crash leaves the old content or the new, never a torn one.

Temp file in the same folder (created 0600, never chmod-ed later), fsync, ``os.replace``, fsync the folder. Never
used on the monitored database itself: opening and closing an fd of that file would drop SQLite's POSIX locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def fsync_dir(folder: Path) -> None:
    """Make renames and creations in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably. Raise OSError (the temp file is removed)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


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
