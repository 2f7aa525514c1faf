"""The `corrupt` fault: damage a core table's b-tree pages in the database file, as a disk or a bad copy
would, so that integrity_check fails and queries touching the table fail.

The WAL is checkpointed (and truncated) first, so the damage is in the main file and no newer copy of a
page in the WAL hides it. Pages come from `dbstat` (every page of the table's b-tree); the root page is
always among them, so every query on the table fails, not only scans that reach a damaged leaf. Page 1
(the schema) is never touched. The garbage is a fixed pattern whose first byte is no valid page type.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from vbrpg_example.errors import VbrpgError
from vbrpg_example.sqlite_connection import connect

GARBAGE = bytes.fromhex("deadbeef")
DEFAULT_TABLE = "game_rooms"
DEFAULT_PAGES = 3


class CorruptionFailed(VbrpgError):
    """The damage could not be placed where it belongs."""


@dataclass(frozen=True)
class Corruption:
    table: str
    page_size: int
    pages: tuple[int, ...]


def corrupt_table(database: Path, table: str = DEFAULT_TABLE, pages: int = DEFAULT_PAGES) -> Corruption:
    """Overwrite the root page and up to `pages - 1` more pages (from the middle) of `table`'s b-tree.

    Raise CorruptionFailed if the table does not exist or the WAL cannot be checkpointed.
    """
    connection = connect(database)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise CorruptionFailed("could not checkpoint the WAL (a reader or writer is busy); retry")
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if root is None:
            raise CorruptionFailed(f"no table {table} in {database}")
        table_pages = [
            int(row[0])
            for row in connection.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (table,))
        ]
    finally:
        # Close before writing: our own open connection must not see or cache the file mid-damage.
        connection.close()
    chosen = _choose_pages(int(root[0]), table_pages, pages)
    descriptor = os.open(database, os.O_WRONLY)
    try:
        for page in chosen:
            os.pwrite(descriptor, GARBAGE * (page_size // len(GARBAGE)), (page - 1) * page_size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return Corruption(table, page_size, chosen)


def _choose_pages(root: int, table_pages: list[int], count: int) -> tuple[int, ...]:
    """Return the root plus pages from the middle of the rest, never page 1."""
    others = [page for page in table_pages if page not in (root, 1)]
    middle = len(others) // 2
    start = max(0, middle - (count - 1) // 2)
    extra = others[start : start + max(0, count - 1)]
    return tuple(sorted({root, *extra} - {1}))
