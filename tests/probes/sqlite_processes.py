"""Real processes that use a SQLite database the way the monitored service does: hold the write lock, or write."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOLDER = """
import sqlite3, sys
path, mode = sys.argv[1], sys.argv[2]
connection = sqlite3.connect(path, isolation_level=None)
connection.execute(f"PRAGMA journal_mode={mode}")
connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO t VALUES (1)")
print("held", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
connection.close()
"""

WRITER = """
import sqlite3, sys
path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
connection = sqlite3.connect(path, timeout=0, isolation_level=None)  # busy_timeout = 0: any wait is an error
connection.execute(f"PRAGMA journal_mode={mode}")
connection.execute("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY, v TEXT)")
print("ready", flush=True)
sys.stdin.readline()
busy = 0
for i in range(count):
    try:
        connection.execute("INSERT INTO w (v) VALUES (?)", ("x" * 100,))
    except sqlite3.OperationalError as error:
        busy += 1
        last = str(error)
print(busy, flush=True)
connection.close()
"""


def create_database(path: Path, mode: str) -> None:
    """Make a database in ``mode`` (wal or delete) from a separate process, so the test process never holds it."""
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1]); c.execute(f'PRAGMA journal_mode={sys.argv[2]}')\n"
        "c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.commit(); c.close()"
    )
    subprocess.run([sys.executable, "-c", script, str(path), mode], check=True, timeout=30)


@contextmanager
def write_lock_held(path: Path, mode: str) -> Iterator[subprocess.Popen[str]]:
    """A process that holds ``BEGIN IMMEDIATE`` on ``path`` until the block ends (then it commits and exits)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        yield holder
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def busy_intolerant_writer(path: Path, mode: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """A writer with busy_timeout=0 doing ``count`` single-row transactions once its stdin gets a line; its last
    stdout line is how many of them failed with SQLITE_BUSY."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        yield writer
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        for stream in (writer.stdin, writer.stdout):
            if stream is not None:
                stream.close()
