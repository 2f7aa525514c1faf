"""The kernel's table of file locks (``/proc/locks``), read without opening any locked file.

Reading it takes no lock and touches no file descriptor of the files listed, which is why the lock probe uses it:
closing any fd of a SQLite database would drop this process's POSIX locks on it. Lines look like
``1: POSIX  ADVISORY  WRITE 7054 fe:00:2149410 120 120`` (kind, mode, pid, major:minor:inode in hex:hex:dec,
first and last byte, ``EOF`` for "to the end"); ``->`` lines are waiters and hold nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")
TO_END = 2**63 - 1


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
