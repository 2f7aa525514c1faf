"""Read-only questions to a monitored SQLite database: revision, row counts, indexes, schema.

Every function takes an open connection so callers choose its lifetime; ``connect_readonly`` opens one that can
never write (``mode=ro``) and never creates a missing file. SQLite's own connections are safe to open and close
inside the daemon (SQLite keeps one set of POSIX locks per inode per process); what is not safe is an
``os.open``/``os.close`` of the database file itself, which drops every lock this process holds on it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

# SQLite's page cache for a connection that reads each page about once and is then closed (a row count, a
# quick_check): a larger cache only holds pages that will not be read again. Measured on a 32 MiB database:
# quick_check + foreign_key_check + count(*) held 2.12 MiB of C heap per open connection with the default
# (2000 KiB), 0.36 MiB with this, the same CPU (bench/RESULTS.md, "Issue 13, lazy").
SCAN_CACHE_KIB = 256


class DatabaseUnavailable(Exception):
    """The database file is missing, unreadable or not a database."""


def connect_readonly(path: Path, timeout: float = 5.0, *, cache_kib: int | None = None) -> sqlite3.Connection:
    """Open ``path`` read-only (URI ``mode=ro``), its page cache at most ``cache_kib`` KiB if given (SQLite's
    default otherwise). Raise DatabaseUnavailable if it is missing or unreadable."""
    if not path.is_file():
        raise DatabaseUnavailable(f"database {path} does not exist")
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        if cache_kib is not None:
            connection.execute(f"PRAGMA cache_size = -{int(cache_kib)}")  # negative: KiB, not pages
    except sqlite3.Error as error:
        raise DatabaseUnavailable(f"cannot open {path} read-only: {error}") from error
    return connection


def read_revisions(connection: sqlite3.Connection) -> tuple[str, ...]:
    """Return the Alembic revision(s) in ``alembic_version`` (empty when the table is absent or empty)."""
    try:
        rows = connection.execute("SELECT version_num FROM alembic_version ORDER BY version_num").fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return ()
        raise
    return tuple(str(row[0]) for row in rows)


def read_revision(connection: sqlite3.Connection) -> str | None:
    """Return the single current revision, the heads joined by '+' when branched, or None when unversioned."""
    revisions = read_revisions(connection)
    return "+".join(revisions) if revisions else None


def known_counts(counts: Mapping[str, int | None]) -> dict[str, int]:
    """The counts of the tables that exist (count_rows gives None for a missing one)."""
    return {table: count for table, count in counts.items() if count is not None}


def count_rows(connection: sqlite3.Connection, tables: Iterable[str]) -> dict[str, int | None]:
    """Return {table: row count}, None for a table that does not exist. Table names must be identifiers."""
    existing = table_names(connection)
    counts: dict[str, int | None] = {}
    for table in tables:
        if table not in existing:
            counts[table] = None
            continue
        counts[table] = int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608
    return counts


def table_names(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def index_names(connection: sqlite3.Connection) -> set[str]:
    """Return the names of explicitly created indexes (SQLite's automatic ones for UNIQUE are left out)."""
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'"
    ).fetchall()
    return {str(row[0]) for row in rows}


def schema_fingerprint(connection: sqlite3.Connection) -> str:
    """Return a sha256 of the schema's SQL, to tell a partial migration from the schema it should have."""
    rows = connection.execute(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
    ).fetchall()
    digest = hashlib.sha256()
    for kind, name, sql in rows:
        digest.update(f"{kind}\0{name}\0{' '.join(str(sql).split())}\n".encode())
    return digest.hexdigest()


def journal_mode(connection: sqlite3.Connection) -> str:
    return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def page_count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA page_count").fetchone()[0])
