"""Proof that a rehearsal left the live database alone: its revision and schema, and its files' bytes.

Taken before the rehearsal and compared after it. The revision and schema (read through SQLite, read-only) are
the hard guard: a rehearsal that migrated the live database changes them. The bytes of the database and its
-wal (sha256 of the whole file up to FULL_HASH_LIMIT, else of its first and last MiB, with size and mtime) also
change when the service itself writes meanwhile, so a difference there is reported, not fatal. The -shm is
compared by existence and size only: SQLite's WAL readers write their read marks into it (measured: one
read-only backup changed its sha256 and mtime, never the database's or the -wal's), rollbackd's copy included;
and when nobody had the database open, reading it creates an empty -wal and a -shm (READ_PROTOCOL).

The files are read with plain ``open`` only while this process holds no SQLite connection to them (closing any
fd of a database drops the process's POSIX locks on it): the rehearsal runs in the CLI, before and after its
copy's connection.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbackd.target.database import connect_readonly, read_revision, schema_fingerprint

FULL_HASH_LIMIT = 64 * 1024**2
# A WAL database nobody has open has no -wal/-shm; any reader, read-only ones included (rollbackd's copy, the
# daemon's probes), makes SQLite create an empty -wal and a -shm, which stay until a read-write connection
# closes last. Measured; no byte of the database changes.
READ_PROTOCOL_WAL = "an empty -wal appeared (SQLite's WAL read protocol)"
READ_PROTOCOL_SHM = "a -shm appeared (SQLite's WAL read protocol)"
READ_PROTOCOL = frozenset({READ_PROTOCOL_WAL, READ_PROTOCOL_SHM})
EDGE_BYTES = 1024**2


@dataclass(frozen=True)
class FileMark:
    exists: bool
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"exists": self.exists, "size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256}


@dataclass(frozen=True)
class LiveMarks:
    revision: str | None
    schema_fingerprint: str | None
    database: FileMark
    wal: FileMark
    shm: FileMark

    def schema_changes(self, later: LiveMarks) -> list[str]:
        """What moved in revision or schema between this mark and ``later``: a rehearsal must never cause this."""
        changes = []
        if later.revision != self.revision:
            changes.append(f"revision {self.revision} → {later.revision}")
        if later.schema_fingerprint != self.schema_fingerprint:
            changes.append("schema fingerprint changed")
        return changes

    def byte_changes(self, later: LiveMarks) -> list[str]:
        """How the files differ: the database's or the -wal's bytes, the -shm's presence or size."""
        changes = []
        if later.database != self.database:
            changes.append("database bytes")
        if later.wal != self.wal:
            appeared = not self.wal.exists and later.wal.exists and later.wal.size == 0
            changes.append(READ_PROTOCOL_WAL if appeared else "-wal bytes")
        if (later.shm.exists, later.shm.size) != (self.shm.exists, self.shm.size):
            changes.append(READ_PROTOCOL_SHM if not self.shm.exists else "-shm size")
        return changes


def mark_live(database: Path) -> LiveMarks:
    """Mark the live database now: its files first (reading it through SQLite may create its -wal/-shm), then its
    revision and schema. Raise DatabaseUnavailable when it cannot be read."""
    files = (
        mark_file(database),
        mark_file(Path(f"{database}-wal")),
        mark_file(Path(f"{database}-shm"), content=False),
    )
    with contextlib.closing(connect_readonly(database)) as connection:
        revision = read_revision(connection)
        fingerprint = schema_fingerprint(connection)
    return LiveMarks(revision, fingerprint, *files)


def mark_file(path: Path, *, content: bool = True) -> FileMark:
    try:
        info = path.stat()
    except FileNotFoundError:
        return FileMark(exists=False)
    digest = hashlib.sha256()
    if content:
        with path.open("rb") as handle:
            if info.st_size <= FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(EDGE_BYTES), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(EDGE_BYTES))
                handle.seek(info.st_size - EDGE_BYTES)
                digest.update(handle.read(EDGE_BYTES))
    return FileMark(True, info.st_size, info.st_mtime_ns, digest.hexdigest() if content else "")
