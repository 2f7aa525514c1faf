"""The change watch's kept connections: they hold no page cache between stamps, and still see every commit."""

from __future__ import annotations

import ctypes
from pathlib import Path

from rollbackd.probes.unchanged import ChangeWatch
from tests.probes.game_database import execute, make_game_database

# The libsqlite3 that Python's sqlite3 module loaded: dlopen hands back the same library, so this counter is the
# one every connection of this process allocates from.
_SQLITE = ctypes.CDLL("libsqlite3.so.0")
_SQLITE.sqlite3_memory_used.restype = ctypes.c_int64
WATCHES = 10
PAGE_CACHE_BULK = 20 * 4096  # what SQLite allocates at a connection's first page read (SQLITE_DEFAULT_PCACHE_INITSZ)


def test_kept_connections_release_their_page_cache_after_each_stamp(tmp_path: Path) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    before = _SQLITE.sqlite3_memory_used()
    watches = [ChangeWatch(database) for _ in range(WATCHES)]
    try:
        for watch in watches:
            assert watch.stamp() is not None
            assert watch.stamp() is not None
        held = (_SQLITE.sqlite3_memory_used() - before) / WATCHES
    finally:
        for watch in watches:
            watch.close()
    assert held < PAGE_CACHE_BULK / 2


def test_a_commit_after_a_released_cache_changes_the_stamp(tmp_path: Path) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    watch = ChangeWatch(database)
    try:
        first = watch.stamp()
        assert watch.stamp() == first
        execute(database, "UPDATE players SET name = name || 'x'")
        assert watch.stamp() != first
    finally:
        watch.close()
