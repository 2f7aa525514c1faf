"""The change watch's kept connections: one per service's database, no page cache held between stamps, and
every commit still seen."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from rollbackd.probes import ProbeContext
from rollbackd.probes.integrity import IntegrityProbe
from rollbackd.probes.rows import RowsProbe
from rollbackd.probes.schema import SchemaProbe
from rollbackd.probes.unchanged import ChangeWatch
from tests.probes.game_database import execute, make_game_database
from tests.probes.probe_support import run_once, service_config

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


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors have ``path`` open."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:  # the listing's own descriptor, closed meanwhile
            continue
    return found


def test_the_probes_of_one_service_keep_one_connection_between_them(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    config = service_config(tmp_path, database=database, versions_dir=tmp_path / "versions")
    (tmp_path / "versions").mkdir()
    probes = [IntegrityProbe(config, context), RowsProbe(config, context), SchemaProbe(config, context)]
    run_once(probes[0])
    # the kept connection, and the closed check connection's descriptor SQLite keeps while another connection of
    # this process holds a lock on the file (it reuses it at the next open)
    after_one = open_descriptors(database)
    for _ in range(2):
        for probe in probes:
            run_once(probe)
    assert open_descriptors(database) == after_one
    assert "skipped" in run_once(probes[1]).detail  # the shared stamp still proves the database unchanged
    execute(database, "DELETE FROM game_room_participants WHERE room_id = 1")
    assert "skipped" not in run_once(probes[1]).detail
    assert "database" not in str(run_once(probes[2]).detail.get("skipped", ""))  # its scripts are still the same


def test_stamps_from_many_threads_at_once_agree(tmp_path: Path) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    watch = ChangeWatch(database)
    stamps = []

    def stamp() -> None:
        for _ in range(200):
            stamps.append(watch.stamp())
            watch.read(lambda connection: connection.execute("SELECT count(*) FROM sqlite_master").fetchone())

    threads = [threading.Thread(target=stamp) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        watch.close()
    assert len(stamps) == 800
    assert len(set(stamps)) == 1
    assert stamps[0] is not None
