"""SQLite's own proof that a database has not changed: what lets a passing check (or a count) be skipped.

A read-only connection kept open on the database reads ``PRAGMA data_version``, which SQLite moves whenever any
other connection commits to the file (rollback journal or WAL). Beside it, the size, mtime and inode of the
database and of its ``-wal``. When all of these equal the stamp taken before the last passing check, nothing that
went through SQLite changed the file, and a ``quick_check`` + ``foreign_key_check`` would read the same pages.

What it cannot see (README, "Integrity checks"): bit rot or a bad sector under an unchanged file, and a write that
bypasses SQLite and keeps size, mtime and inode (``dd`` then ``touch -r``). The scheduled full
``integrity_check`` still runs whatever the stamp says. A replaced file (a restore's rename, another disk) has
a new inode or device: that is a change, and the kept connection is reopened on the new file.

The same stat fields stamp plain files (``FileStamp``: the process probe's pidfile) and directories
(``directory_stamp``: the schema probe's versions dir and vault).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rollbackd.target.database import DatabaseUnavailable, connect_readonly

T = TypeVar("T")

# What the skipped observations say in their detail, after "unchanged since ...".
SAME_DATABASE = "same data_version, size, mtime, inode and device of the database and its -wal"


@dataclass(frozen=True, slots=True)  # slots: the schema probe keeps one per script file, twice
class FileStamp:
    size: int
    mtime_ns: int
    inode: int
    device: int = 0

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStamp:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


# A directory's own stamp and its entries' (name, stamp), sorted by name.
DirectoryStamp = tuple[FileStamp, tuple[tuple[str, FileStamp], ...]]


def directory_stamp(path: Path) -> DirectoryStamp | None:
    """The stamp of a directory and of each entry in it (not below), or None when it cannot be listed. Equal
    stamps mean no entry was added, removed, renamed, replaced or rewritten (unless a rewrite kept size and
    mtime: what the script reader's own (mtime, size) cache cannot see either)."""
    try:
        own = FileStamp.of(os.stat(path))
        with os.scandir(path) as listing:
            entries = []
            for entry in listing:
                try:
                    entries.append((entry.name, FileStamp.of(entry.stat())))
                except OSError:  # a dangling symlink, or removed meanwhile
                    entries.append((entry.name, FileStamp(-1, 0, entry.inode())))
    except OSError:
        return None
    return own, tuple(sorted(entries))


@dataclass(frozen=True, slots=True)
class DatabaseStamp:
    """Equal stamps from one watch mean no commit and no file change in between."""

    connection: int  # which kept connection read data_version: values of two connections are not comparable
    data_version: int
    database: FileStamp
    wal: FileStamp | None


class ChangeWatch:
    """Stamps a database through one read-only connection kept open for the watch's life (reopened when the file
    is replaced, e.g. by a restore). No transaction stays open between stamps; in WAL mode the connection holds the
    SHARED lock every WAL reader holds, which blocks no writer (the -wal then outlives the service's connections).

    The probes of one service share one watch (``ChangeWatches``): a watch keeps no caller's state, each caller
    compares the stamps it took, and ``data_version`` counts the commits of every other connection whichever
    caller reads it. Probes run in worker threads, so a lock serialises the uses of the connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) the kept connection has open
        self._opened = 0
        self._lock = threading.Lock()

    def stamp(self) -> DatabaseStamp | None:
        """Return the database's stamp now, or None when it cannot be told (missing, unreadable)."""
        with self._lock:
            try:
                database = os.stat(self.path)
            except OSError:
                self._close()
                return None
            try:
                if self._connection is None or self._file != (database.st_dev, database.st_ino):
                    self._close()
                    self._connection = connect_readonly(self.path)
                    self._file = (database.st_dev, database.st_ino)
                    self._opened += 1
                version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
                self._release_cache(self._connection)
            except (DatabaseUnavailable, sqlite3.Error):
                self._close()
                return None
            opened = self._opened
        try:
            wal: FileStamp | None = FileStamp.of(os.stat(f"{self.path}-wal"))
        except FileNotFoundError:
            wal = None
        return DatabaseStamp(opened, version, FileStamp.of(database), wal)

    def read(self, reader: Callable[[sqlite3.Connection], T]) -> T | None:
        """``reader`` run on the kept connection (after a stamp that was told), for a small read of the same file
        that needs no connection of its own: a statement run to its end leaves no transaction open. None when no
        connection is kept; ``reader``'s sqlite3 errors propagate."""
        with self._lock:
            if self._connection is None:
                return None
            try:
                return reader(self._connection)
            finally:
                self._release_cache(self._connection)

    @staticmethod
    def _release_cache(connection: sqlite3.Connection) -> None:
        """Free the kept connection's page cache: reading ``data_version`` (or a page of ``sqlite_master``) makes
        SQLite allocate its initial bulk of 20 pages, ~85 KiB of C heap per connection held between runs for pages
        the next stamp reads again anyway. Costs ~2 us a stamp, and a read of page 1 from the OS's cache
        (bench/RESULTS.md, "Issue 13, mem20")."""
        connection.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._file = None


class ChangeWatches:
    """One ChangeWatch per database path, for the probes built from one ProbeContext (one service): the
    integrity, rows and schema probes kept a connection each, ~20 KiB of SQLite heap apiece with its schema."""

    def __init__(self) -> None:
        self._watches: dict[Path, ChangeWatch] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> ChangeWatch:
        with self._lock:
            watch = self._watches.get(path)
            if watch is None:
                watch = self._watches[path] = ChangeWatch(path)
            return watch
