"""The service's connection pool, with read and write transactions.

Write transactions take the write lock up front (`BEGIN IMMEDIATE`), so two writers queue on the busy
timeout instead of one failing when its deferred transaction tries to upgrade to a write.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from vbrpg_example.sqlite_connection import DEFAULT_BUSY_TIMEOUT_SECONDS, connect


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
