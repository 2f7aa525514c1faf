"""The kernel's table of file locks (``/proc/locks``), read without opening any locked file.

Reading it takes no lock and touches no file descriptor of the files listed, which is why the lock probe uses it:
closing any fd of a SQLite database would drop this process's POSIX locks on it. Lines look like
``1: POSIX  ADVISORY  WRITE 7054 fe:00:2149410 120 120`` (kind, mode, pid, major:minor:inode in hex:hex:dec,
first and last byte, ``EOF`` for "to the end"); ``->`` lines are waiters and hold nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")
TO_END = 2**63 - 1
# How old a read of the table another service's lock probe took may be and still be used (seconds).
SHARED_MAX_AGE = 0.25


@dataclass(frozen=True)
class FileLock:
    kind: str  # POSIX, OFDLCK, FLOCK, ...
    mode: str  # READ or WRITE
    pid: int | None  # None for open-file-description locks (no owning process)
    device: tuple[int, int]
    inode: int
    start: int
    end: int

    def covers(self, offset: int) -> bool:
        return self.start <= offset <= self.end


def file_id(stat: os.stat_result) -> tuple[tuple[int, int], int]:
    """The (device, inode) key /proc/locks uses for the file ``stat`` describes."""
    return (os.major(stat.st_dev), os.minor(stat.st_dev)), stat.st_ino


def parse_proc_locks(text: str) -> list[FileLock]:
    """Return the held locks in a /proc/locks text (waiters left out, unreadable lines skipped)."""
    locks = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->":
            continue
        kind, mode, pid, ident, start, end = fields[1], fields[3], fields[4], fields[5], fields[6], fields[7]
        try:
            major, minor, inode = ident.split(":")
            lock = FileLock(
                kind=kind,
                mode=mode,
                pid=int(pid) if int(pid) > 0 else None,
                device=(int(major, 16), int(minor, 16)),
                inode=int(inode),
                start=int(start),
                end=TO_END if end == "EOF" else int(end),
            )
        except ValueError:
            continue
        locks.append(lock)
    return locks


def read_proc_locks(path: Path = PROC_LOCKS) -> list[FileLock]:
    """Return the system's held locks. Raise OSError when the table cannot be read (no /proc)."""
    return parse_proc_locks(path.read_text(encoding="ascii", errors="replace"))


class SharedProcLocks:
    """One read of the lock table for the lock probes of every service that run within ``max_age`` of each
    other: the kernel walks its whole lock list for each read, and 50 services at 1 s read and parsed it 50
    times a second. A caller never gets the read it got last time, nor an older one: its next run always looks
    afresh, so a lock that went away is seen gone at the next run as before, and the one thing shared is a read
    up to ``max_age`` old, taken for another service."""

    def __init__(
        self,
        path: Path = PROC_LOCKS,
        *,
        max_age: float = SHARED_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, list[FileLock]] | None = None

    def read(self, newer_than: float | None) -> tuple[float, list[FileLock]]:
        """Return (when it was read, the held locks): the last read when it is younger than ``max_age`` and was
        taken after ``newer_than``, else a new one (always when ``newer_than`` is None). Raise OSError as
        read_proc_locks does."""
        with self._lock:
            now = self._clock()
            last = self._last
            if last is not None and newer_than is not None and last[0] > newer_than and now - last[0] < self.max_age:
                return last
            self._last = (now, read_proc_locks(self.path))
            return self._last
