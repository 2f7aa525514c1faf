"""The `lock` fault: hold the database's write lock, as a stuck writer or a long batch job does.

`BEGIN IMMEDIATE` takes the write lock (RESERVED in rollback-journal mode, the WAL write lock in WAL mode)
and a write into the transaction makes it a real writer. The transaction is rolled back at the end, so the
database is unchanged. SIGTERM or SIGINT ends the hold early, still releasing cleanly: they are blocked and
waited for with sigtimedwait, not handled (a handler calling Event.set() can deadlock when it interrupts the main
thread inside the same Event's wait, and then the hold never ends).
"""

import signal
import sqlite3
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
    ending = {signal.SIGTERM, signal.SIGINT}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ending)
    connection = connect(database, busy_timeout_seconds)
    try:
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(_WRITE)
        except sqlite3.Error as error:
            raise LockFailed(f"could not take the write lock on {database}: {error}") from error
        announce(f"holding the write lock on {database} for {seconds:g} s")
        signal.sigtimedwait(ending, seconds)  # a signal sent before this point is pending, and ends it at once
        connection.execute("ROLLBACK")
        announce(f"released the write lock on {database}")
        while signal.sigtimedwait(ending, 0) is not None:  # a second one must not kill the clean exit
            pass
    finally:
        connection.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
