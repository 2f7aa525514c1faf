"""SQLite connections as the service needs them.

Every connection enforces foreign keys (SQLite leaves them off by default) and waits for a busy timeout
instead of failing at once. Connections never create a missing database file: a service started against a
missing file must say so, not answer from a fresh empty database. Write transactions take the write lock up
front (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of one failing on upgrade.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from vbrpg_example.errors import VbrpgError

DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0


class DatabaseMissing(VbrpgError):
    """The database file does not exist."""


def sqlite_uri(path: Path, *, create: bool = False) -> str:
    """Return a `file:` URI for `path` that opens read-write, creating the file only if `create`."""
    mode = "rwc" if create else "rw"
    return f"file:{quote(str(path.resolve()))}?mode={mode}"


def connect(
    path: Path, busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS, *, create: bool = False
) -> sqlite3.Connection:
    """Open `path` with foreign keys on, in autocommit mode: callers issue their own BEGIN.

    Raise DatabaseMissing if the file does not exist and `create` is false.
    """
    if not create and not path.exists():
        raise DatabaseMissing(f"database file {path} does not exist")
    connection = sqlite3.connect(
        sqlite_uri(path, create=create),
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


class Database:
    """The service's connection pool with read and write transactions."""

    def __init__(self, path: Path, busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        # "sqlite://" with a creator would get SQLAlchemy's in-memory pool; a file wants a QueuePool.
        self.engine: Engine = create_engine(
            "sqlite://",
            creator=lambda: connect(path, busy_timeout_seconds),
            poolclass=QueuePool,
            pool_size=5,
            max_overflow=10,
        )
        event.listen(self.engine, "begin", _begin)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Yield a session in a deferred transaction: one consistent snapshot for a multi-query read."""
        with Session(self.engine) as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """Yield a session holding the write lock; commit on success, roll back on error."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


_BEGIN_STATEMENTS = {"DEFERRED": "BEGIN DEFERRED", "IMMEDIATE": "BEGIN IMMEDIATE"}


def _begin(connection: Connection) -> None:
    """Emit BEGIN ourselves: the driver runs in autocommit mode so that we choose the lock mode."""
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(_BEGIN_STATEMENTS[mode])
