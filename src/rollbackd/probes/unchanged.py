"""SQLite's own proof that a database has not changed: what lets a passing check be skipped.

A read-only connection kept open on the database reads ``PRAGMA data_version``, which SQLite moves whenever any
other connection commits to the file (rollback journal or WAL). Beside it, the size, mtime and inode of the
database and of its ``-wal``. When all of these equal the stamp taken before the last passing check, nothing that
went through SQLite changed the file, and a ``quick_check`` + ``foreign_key_check`` would read the same pages.

What it cannot see (README, "Integrity checks"): bit rot or a bad sector under an unchanged file, and a write that
bypasses SQLite and keeps size, mtime and inode (``dd`` then ``touch -r``). The scheduled full
``integrity_check`` still runs whatever the stamp says.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rollbackd.target.database import DatabaseUnavailable, connect_readonly


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStamp:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


@dataclass(frozen=True)
class DatabaseStamp:
    """Equal stamps from one watch mean no commit and no file change in between."""

    connection: int  # which kept connection read data_version: values of two connections are not comparable
    data_version: int
    database: FileStamp
    wal: FileStamp | None


class ChangeWatch:
    """Stamps a database through one read-only connection kept open for the watch's life (reopened when the file
    is replaced, e.g. by a restore). No transaction stays open between stamps; in WAL mode the connection holds the
    SHARED lock every WAL reader holds, which blocks no writer (the -wal then outlives the service's connections)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._opened = 0

    def stamp(self) -> DatabaseStamp | None:
        """Return the database's stamp now, or None when it cannot be told (missing, unreadable)."""
        try:
            database = os.stat(self.path)
        except OSError:
            self.close()
            return None
        try:
            if self._connection is None or self._inode != database.st_ino:
                self.close()
                self._connection = connect_readonly(self.path)
                self._inode = database.st_ino
                self._opened += 1
            version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except (DatabaseUnavailable, sqlite3.Error):
            self.close()
            return None
        try:
            wal: FileStamp | None = FileStamp.of(os.stat(f"{self.path}-wal"))
        except FileNotFoundError:
            wal = None
        return DatabaseStamp(self._opened, version, FileStamp.of(database), wal)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._inode = None
