"""The write-lock probe against real SQLite processes, in both journal modes, without disturbing them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.observation import Observation
from rollbackd.probes import ProbeContext, observe
from rollbackd.probes.proc_locks import TO_END, SharedProcLocks, parse_proc_locks
from rollbackd.probes.sqlite_lock import SqliteLockProbe
from tests.probes.example_app import VbrpgApp
from tests.probes.probe_support import run_once, service_config
from tests.probes.sqlite_processes import busy_intolerant_writer, create_database, write_lock_held
from tests.support.vbrpg_service import VBRPG_EXAMPLE

MODES = ["wal", "delete"]
EXPECTED_MODE = {"wal": "wal", "delete": "rollback"}


def lock_probe(tmp_path: Path, context: ProbeContext, database: Path, **kwargs: object) -> SqliteLockProbe:
    return SqliteLockProbe(service_config(tmp_path, database=database), context, **kwargs)  # type: ignore[arg-type]


def test_parses_proc_locks_lines_and_skips_waiters() -> None:
    text = (
        "1: POSIX  ADVISORY  WRITE 7054 fe:00:2149410 120 120\n"
        "1: -> POSIX  ADVISORY  WRITE 7060 fe:00:2149410 120 120\n"
        "2: OFDLCK ADVISORY  READ  -1 08:01:42 128 EOF\n"
        "3: garbage\n"
    )
    first, second = parse_proc_locks(text)
    assert (first.kind, first.mode, first.pid, first.device, first.inode) == ("POSIX", "WRITE", 7054, (254, 0), 2149410)
    assert first.covers(120) and not first.covers(121)
    assert (second.kind, second.pid, second.device, second.end) == ("OFDLCK", None, (8, 1), TO_END)


@pytest.mark.parametrize("mode", MODES)
def test_free_database_has_no_holder_and_its_journal_mode_is_read(
    tmp_path: Path, context: ProbeContext, mode: str
) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, mode)
    observation = run_once(lock_probe(tmp_path, context, database))
    assert observation.ok, observation
    assert observation.values["held"] == 0
    assert observation.detail["method"] == "proc_locks"
    assert observation.detail["journal_mode"] == EXPECTED_MODE[mode]


@pytest.mark.parametrize("mode", MODES)
def test_writer_holding_begin_immediate_is_named_then_seen_to_release(
    tmp_path: Path, context: ProbeContext, mode: str
) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, mode)
    probe = lock_probe(tmp_path, context, database)
    with write_lock_held(database, mode) as holder:
        held = run_once(probe)
        assert held.values["held"] == 1
        [named] = held.detail["holders"]
        assert named["pid"] == holder.pid
        assert "python" in named["name"]
        assert held.detail["journal_mode"] == EXPECTED_MODE[mode]
        assert held.ok  # held, but not for long
    released = run_once(probe)
    assert released.values["held"] == 0
    assert released.values["held_seconds"] == 0
    assert released.detail["holders"] == []


def test_same_holder_past_the_threshold_fails_with_lock_held(tmp_path: Path, context: ProbeContext) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, "wal")
    now = [1000.0]
    probe = lock_probe(tmp_path, dataclasses.replace(context, clock=lambda: now[0]), database, held_threshold=30.0)
    with write_lock_held(database, "wal"):
        first = run_once(probe)
        now[0] += 31
        later = run_once(probe)
    assert first.ok and first.values["held_seconds"] == 0
    assert not later.ok
    assert later.reason == "lock_held"
    assert later.values["held_seconds"] == 31
    assert later.detail["held_since"] == 1000.0


def test_a_new_holder_restarts_the_count(tmp_path: Path, context: ProbeContext) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, "delete")
    now = [1000.0]
    probe = lock_probe(tmp_path, dataclasses.replace(context, clock=lambda: now[0]), database)
    with write_lock_held(database, "delete"):
        run_once(probe)
    now[0] += 60
    with write_lock_held(database, "delete"):
        observation = run_once(probe)
    assert observation.ok
    assert observation.values["held_seconds"] == 0


def test_journal_left_by_a_killed_writer_is_reported_hot(tmp_path: Path, context: ProbeContext) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, "delete")
    # Small cache: the update spills pages into the database file, so the journal is synced and carries its magic.
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('PRAGMA cache_size=2')\n"
        "c.execute('BEGIN'); [c.execute('INSERT INTO t VALUES (randomblob(3000))') for _ in range(50)]\n"
        "c.execute('COMMIT'); c.execute('BEGIN IMMEDIATE'); c.execute('UPDATE t SET x = randomblob(3000)')\n"
        "print('spilled', flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(database)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "spilled"
        during = run_once(lock_probe(tmp_path, context, database))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    after = run_once(lock_probe(tmp_path, context, database))
    assert during.values["held"] == 1 and during.values["hot_journal"] == 0
    assert not after.ok
    assert after.reason == "hot_journal"
    assert after.values["hot_journal"] == 1


def test_without_proc_locks_falls_back_to_begin_immediate_and_says_so(tmp_path: Path, context: ProbeContext) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, "delete")
    probe = lock_probe(tmp_path, context, database, proc_locks=tmp_path / "no-proc-locks")
    with write_lock_held(database, "delete"):
        held = run_once(probe)
    free = run_once(probe)
    assert held.detail["method"] == "begin_immediate"
    assert held.values["held"] == 1
    assert held.detail["holders"] == []
    assert free.values["held"] == 0


def test_missing_database_is_unavailable(tmp_path: Path, context: ProbeContext) -> None:
    observation = run_once(lock_probe(tmp_path, context, tmp_path / "missing.db"))
    assert not observation.ok
    assert observation.reason == "unavailable"


@pytest.mark.parametrize("mode", MODES)
def test_probing_every_10ms_never_makes_a_busy_intolerant_writer_fail(
    tmp_path: Path, context: ProbeContext, mode: str
) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, mode)
    probe = lock_probe(tmp_path, context, database)

    async def probe_while(writer: subprocess.Popen[str]) -> list[float]:
        held = []
        while writer.poll() is None:
            observation = await observe(probe)
            assert observation.detail.get("method") == "proc_locks", observation
            held.append(observation.values["held"])
            await asyncio.sleep(0.01)
        return held

    with busy_intolerant_writer(database, mode, count=3000) as writer:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        held = asyncio.run(probe_while(writer))
        busy = int(writer.stdout.read().strip())
    assert writer.returncode == 0
    assert busy == 0
    assert len(held) > 1  # the probe really ran alongside the writes
    assert 1.0 in held  # and saw the writer's lock at least once


def test_example_lock_fault_is_seen_with_its_pid(tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp) -> None:
    holder = subprocess.Popen(
        [*VBRPG_EXAMPLE, "fault", "lock", "--db", str(vbrpg_app.database), "--seconds", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        announced = holder.stdout.readline()  # "fault lock: pid P holding the write lock on ..."
        probe = lock_probe(tmp_path, context, vbrpg_app.database)
        held = run_once(probe)
        holder.send_signal(signal.SIGTERM)  # ends the fault early, cleanly (rolled back)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    free = run_once(probe)
    assert f"pid {holder.pid} holding the write lock" in announced
    assert held.values["held"] == 1
    assert [entry["pid"] for entry in held.detail["holders"]] == [holder.pid]
    assert held.detail["journal_mode"] == "wal"
    assert free.values["held"] == 0


def test_two_services_sharing_one_lock_table_each_see_a_real_holder_come_and_go(
    tmp_path: Path, context: ProbeContext
) -> None:
    """The daemon's lock probes share /proc/locks reads (SharedProcLocks): a write lock held by a real process
    is still seen, with its pid, by the probes of both services, and once it is released each probe's next run
    sees it free: a probe never reuses the read it used last."""
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"
    create_database(first_db, "wal")
    create_database(second_db, "wal")
    shared = ProbeContext(http=context.http, state_dir=context.state_dir, proc_locks=SharedProcLocks(max_age=60.0))
    first, second = lock_probe(tmp_path, shared, first_db), lock_probe(tmp_path, shared, second_db)
    with write_lock_held(first_db, "wal") as holder:
        held = run_once(first)
        free = run_once(second)  # within max_age of the first probe's read: that read serves it too
        assert held.values["held"] == 1 and [entry["pid"] for entry in held.detail["holders"]] == [holder.pid]
        assert free.values["held"] == 0
    released = run_once(first)
    assert released.values["held"] == 0 and released.detail["holders"] == []
    with write_lock_held(second_db, "wal") as holder:
        # What sharing costs: a read up to max_age old (60 s here, 0.25 s in the daemon), taken for the other
        # service before this lock was taken, may serve one run; the probe's next run reads afresh.
        stale = run_once(second)
        assert stale.values["held"] == 0
        now_held = run_once(second)
        assert [entry["pid"] for entry in now_held.detail["holders"]] == [holder.pid]


def test_a_shared_lock_table_read_serves_others_only_while_young_and_never_the_same_caller_twice(
    tmp_path: Path,
) -> None:
    table_file = tmp_path / "locks"
    table_file.write_text("1: POSIX  ADVISORY  WRITE 7054 fe:00:2149410 120 120\n")
    now = [100.0]
    table = SharedProcLocks(table_file, max_age=0.25, clock=lambda: now[0])
    read_at, locks = table.read(None)
    assert [lock.pid for lock in locks] == [7054]
    table_file.write_text("")
    now[0] += 0.1
    assert table.read(read_at - 1.0) == (read_at, locks)  # another caller, within max_age: the same read
    later, fresh = table.read(read_at)  # the caller that used it: a new read
    assert later > read_at and fresh == []
    table_file.write_text("1: POSIX  ADVISORY  WRITE 7060 fe:00:2149410 120 120\n")
    now[0] += 0.3
    assert [lock.pid for lock in table.read(read_at)[1]] == [7060]  # older than max_age: read again
    table_file.write_text("")
    assert table.read(None)[1] == []  # None: always a new read


def test_lock_probes_of_many_services_in_one_round_each_see_their_own_real_holder(
    tmp_path: Path, context: ProbeContext
) -> None:
    """The daemon's lock probes due in one turn of the loop share one thread hop (probes/lock_rounds.py): each
    still sees the write lock a real process holds on its own database, in either journal mode, with that
    process's pid and name; a free database is seen free, a missing one unavailable, and once the writers let go
    the next round sees every lock gone."""
    databases = {name: tmp_path / f"{name}.db" for name in ("wal-held", "rollback-held", "wal-free")}
    for name, database in databases.items():
        create_database(database, "delete" if name.startswith("rollback") else "wal")
    probes = {name: lock_probe(tmp_path, context, database) for name, database in databases.items()}
    probes["missing"] = lock_probe(tmp_path, context, tmp_path / "missing.db")

    async def one_round() -> dict[str, Observation]:
        observations = await asyncio.gather(*(observe(probe) for probe in probes.values()))
        return dict(zip(probes, observations, strict=True))

    first = asyncio.run(
        one_round()
    )  # the rollback database's journal mode is read by a subprocess, in a hop of its own
    assert first["rollback-held"].detail["journal_mode"] == "rollback"
    rounds = context.lock_rounds.hops
    with (
        write_lock_held(databases["wal-held"], "wal") as wal_writer,
        write_lock_held(databases["rollback-held"], "delete") as rollback_writer,
    ):
        held = asyncio.run(one_round())
        assert context.lock_rounds.hops == rounds + 1  # all four in one hop
        for name, writer in (("wal-held", wal_writer), ("rollback-held", rollback_writer)):
            assert held[name].values["held"] == 1, held[name]
            [holder] = held[name].detail["holders"]
            assert holder["pid"] == writer.pid
            assert "python" in holder["name"]
        assert held["wal-free"].values["held"] == 0 and held["wal-free"].detail["holders"] == []
        assert held["missing"].reason == "unavailable"
    released = asyncio.run(one_round())
    assert context.lock_rounds.hops == rounds + 2
    assert all(released[name].values["held"] == 0 for name in databases)
    assert all(released[name].detail["holders"] == [] for name in databases)
