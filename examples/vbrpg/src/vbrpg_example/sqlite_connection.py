"""One SQLite connection as everything here opens it: the service's pool, the health check, seeding, faults.

Every connection enforces foreign keys (SQLite leaves them off by default) and waits for a busy timeout
instead of failing at once. A connection never creates a missing database file: a service started against
a missing file must say so, not answer from a fresh empty database. Plain sqlite3, so that commands which
need no SQLAlchemy (stop, lock, corrupt) start fast.
"""

import sqlite3
from pathlib import Path
from urllib.parse import quote

from vbrpg_example.errors import VbrpgError

DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0


class DatabaseMissing(VbrpgError):
    """The database file does not exist."""


def connect(path: Path, busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """Open `path` with foreign keys on, in autocommit mode: callers issue their own BEGIN.

    Raise DatabaseMissing if the file does not exist.
    """
    if not path.exists():
        raise DatabaseMissing(f"database file {path} does not exist")
    # mode=rw: even if the file vanishes between the check and the open, SQLite must not create it.
    connection = sqlite3.connect(
        f"file:{quote(str(path.resolve()))}?mode=rw",
        uri=True,
        timeout=busy_timeout_seconds,
        isolation_level=None,
        check_same_thread=False,
    )
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def read_revision(connection: sqlite3.Connection) -> str | None:
    """Return the Alembic revision stored in the database, or None if it was never migrated.

    Raise sqlite3.DatabaseError if the table is unreadable, ValueError if it holds several heads.
    """
    has_table = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if has_table is None:
        return None
    rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    if not rows:
        return None
    if len(rows) > 1:
        raise ValueError(f"alembic_version holds {len(rows)} revisions; this service has one branch")
    return str(rows[0][0])
