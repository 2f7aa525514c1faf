"""The `lock` fault: hold the database's write lock, as a stuck writer or a long batch job does.

`BEGIN IMMEDIATE` takes the write lock (RESERVED in rollback-journal mode, the WAL write lock in WAL mode)
and a write into the transaction makes it a real writer. The transaction is rolled back at the end, so the
database is unchanged. SIGTERM or SIGINT ends the hold early, still releasing cleanly.
"""

import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from vbrpg_example.errors import VbrpgError
from vbrpg_example.sqlite_connection import connect

# A schema write: it works on any database, migrated or not, and is undone by the rollback.
_WRITE = "CREATE TABLE vbrpg_example_lock_held (id INTEGER)"


class LockFailed(VbrpgError):
    """The write lock could not be taken within the busy timeout."""


def hold_write_lock(
    database: Path,
    seconds: float,
    busy_timeout_seconds: float,
    announce: Callable[[str], None],
) -> None:
    """Hold the write lock on `database` for `seconds`; call `announce` once it is held and once released."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    connection = connect(database, busy_timeout_seconds)
    try:
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(_WRITE)
        except sqlite3.Error as error:
            raise LockFailed(f"could not take the write lock on {database}: {error}") from error
        announce(f"holding the write lock on {database} for {seconds:g} s")
        stop.wait(seconds)
        connection.execute("ROLLBACK")
        announce(f"released the write lock on {database}")
    finally:
        connection.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
