"""kill -9 of `rollbackd backup` and `rollbackd restore` at random points, 50 times each.

Delays are random, drawn over the span between the moment the command holds the service lock (its imports are
done) and the moment an uninterrupted run of it ends, so kills land across every step: copy, check, manifest,
link; stop, copy, quarantine, swap, check, start. Half the restore's kills are aimed instead at the moment its
journal names each step, because a step of one fsync or one rename is too short for a random instant to hit on a
fast machine (CI once saw only 'none', 'copying' and 'done'). No test-only hooks slow the steps down.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.backup.catalog import backup_pattern, list_backups
from rollbackd.backup.manifest import manifest_path
from rollbackd.backup.restore import resume_interrupted_restore
from rollbackd.backup.restore_journal import journal_path, read_journal
from rollbackd.state.state_dir import StateDir
from rollbackd.target.control import ServiceControl

from .helpers import grow_database, make_database, make_service, rollbackd, wait_until

RUNS = 50


def spawn(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rollbackd", "--config", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def holds_lock(lock: Path, pid: int) -> bool:
    try:
        return bool(json.loads(lock.read_text() or "{}").get("pid") == pid)
    except (OSError, ValueError):
        return False


def run_until_locked(config: Path, lock: Path, *args: str) -> subprocess.Popen[bytes]:
    process = spawn(config, *args)
    wait_until(lambda: process.poll() is not None or holds_lock(lock, process.pid), interval=0.001)
    return process


def measure_work(config: Path, lock: Path, *args: str) -> float:
    """Seconds from holding the lock to exit, for an uninterrupted run."""
    process = run_until_locked(config, lock, *args)
    locked = time.monotonic()
    assert process.wait(timeout=60) == 0
    return time.monotonic() - locked


def data_digest(database: Path) -> str:
    """Every row of every table, as SQLite reads it (WAL included), hashed."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        digest = hashlib.sha256()
        for table in ("players", "game_rooms", "game_room_participants", "alembic_version"):
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1"):  # noqa: S608
                digest.update(repr(row).encode())
        return digest.hexdigest()


@pytest.mark.e2e
def test_kill_9_of_backup_never_leaves_a_file_that_looks_like_a_backup(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=500)
    grow_database(service.database, 16)
    config = tmp_path / "rollbackd.toml"
    lock = tmp_path / "state" / "locks" / "vbrpg.lock"
    work = measure_work(config, lock, "backup")
    pattern = backup_pattern("vbrpg")
    rng = random.Random(4)  # noqa: S311 - reproducible kill points
    completed = 0
    for _ in range(RUNS):
        process = run_until_locked(config, lock, "backup")
        time.sleep(rng.uniform(0, work * 1.1))
        process.send_signal(signal.SIGKILL)
        completed += process.wait() == 0
        listing = list_backups(service.backups.dir, "vbrpg", verify=True)
        for name in os.listdir(service.backups.dir):
            if pattern.match(name):
                entry = next(entry for entry in listing.backups if entry.name == name)
                assert entry.verified, (name, entry.problem)  # anything named like a backup is a whole, proven one
        assert not listing.unverified
        for entry in listing.backups:  # checked: clear them so each run checks only its own
            entry.path.unlink()
            manifest_path(entry.path).unlink()
    assert 0 < completed < RUNS  # some runs were killed, some finished: the kills spanned the whole run
    assert rollbackd(config, "backup").returncode == 0  # and the next backup clears the debris of the killed ones
    assert list_backups(service.backups.dir, "vbrpg").partials == ()


# The restore's steps a kill is aimed at, in the order the journal names them (restore_journal.STATES).
TARGET_STATES = ("stopping", "copying", "copied", "swapping", "swapped", "starting")


def kill_when(
    process: subprocess.Popen[bytes], db: Path, journal_file: Path, target: str | None, deadline: float
) -> int:
    """kill -9 ``process`` at ``deadline``, or as soon as the journal names ``target`` (then the deadline is
    ignored; None: the deadline only). All along, count the instants at which the database file was missing."""
    missing = 0
    while process.poll() is None:
        if not db.exists():
            missing += 1
        if target is None:
            if time.monotonic() >= deadline:
                break
        elif journal_state(journal_file) == target:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    return missing


def journal_state(journal_file: Path) -> str | None:
    try:  # written whole by a rename, so any text read is one whole journal
        return str(json.loads(journal_file.read_bytes())["state"])
    except FileNotFoundError:
        return None


def make_wal_database(path: Path, players: int) -> None:
    """A database whose newest rows are still only in its -wal, as a killed service leaves it."""
    make_database(path, players=players)
    script = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA wal_autocheckpoint = 0')\n"
        "for i in range(50): c.execute('INSERT INTO players (name) VALUES (?)', (f'wal-only-{i}',))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert Path(f"{path}-wal").stat().st_size > 0


@pytest.mark.e2e
def test_kill_9_of_restore_leaves_old_or_new_database_and_resume_finishes_or_undoes(tmp_path: Path) -> None:
    control = 'kind = "command"\nstart = ["true"]\nstop = ["true"]'
    service = make_service(tmp_path, control=control)
    db = service.database
    make_database(db, players=300)
    grow_database(db, 8)
    config = tmp_path / "rollbackd.toml"
    assert rollbackd(config, "backup").returncode == 0
    backup_digest = data_digest(list_backups(service.backups.dir, "vbrpg").backups[0].path)
    # The "old" database: different rows, some only in its -wal. Kept as a template to put back before each run.
    template = tmp_path / "template"
    template.mkdir()
    shutil.copy(db, template / "vbrpg.db")
    with closing(sqlite3.connect(template / "vbrpg.db", isolation_level=None)) as connection:
        connection.execute("DELETE FROM players WHERE id > 100")
    make_wal_database_files = template / "vbrpg.db"
    make_wal_database_files.unlink()
    make_wal_database(make_wal_database_files, players=120)
    old_digest = data_digest(make_wal_database_files)
    assert old_digest != backup_digest
    template_files = sorted(os.listdir(template))

    def put_back_the_old_database() -> None:
        for name in os.listdir(db.parent):
            if name != "backups":
                os.unlink(db.parent / name)
        for name in template_files:
            shutil.copy(template / name, db.parent / name)
        journal = StateDir(tmp_path / "state").service_dir("vbrpg") / "restore-journal.json"
        journal.unlink(missing_ok=True)

    lock = tmp_path / "state" / "locks" / "vbrpg.lock"
    put_back_the_old_database()
    work = measure_work(config, lock, "restore", "--yes")
    rng = random.Random(9)  # noqa: S311 - reproducible kill points
    outcomes = {"old": 0, "backup": 0}
    states = set()
    journal_file = journal_path(StateDir(tmp_path / "state").service_dir("vbrpg"))
    for run in range(RUNS):
        put_back_the_old_database()
        # Even runs: a random instant. Odd runs: the moment the journal first names a step, each step in turn, so
        # the short steps (a fsync, a rename, a start command) are hit on any machine's speed, not by luck.
        target = None if run % 2 == 0 else TARGET_STATES[(run // 2) % len(TARGET_STATES)]
        process = run_until_locked(config, lock, "restore", "--yes")
        missing = kill_when(process, db, journal_file, target, deadline=time.monotonic() + rng.uniform(0, work * 1.1))
        assert missing == 0, "the database file was missing at some instant"
        journal = read_journal(StateDir(tmp_path / "state").service_dir("vbrpg"))
        states.add(journal.state if journal else "none")
        if run % 10 == 0:  # as a person runs it
            resumed = rollbackd(config, "restore", "--resume", "--json")
            assert resumed.returncode == 0, resumed.stderr
        else:  # as the daemon does at start
            resume_interrupted_restore(service, control=ServiceControl(service), state_dir=StateDir(tmp_path / "state"))
        digest = data_digest(db)
        assert digest in (old_digest, backup_digest)
        outcomes["old" if digest == old_digest else "backup"] += 1
        assert not db.with_name(".vbrpg.db.restore.partial").exists()
        journal = read_journal(StateDir(tmp_path / "state").service_dir("vbrpg"))
        assert journal is None or journal.finished
        if digest == old_digest:  # undone: nothing quarantined is left behind as a stray copy of the old data
            assert not [name for name in os.listdir(db.parent) if "_corrupted_" in name]
    assert outcomes["old"] > 0 and outcomes["backup"] > 0, outcomes
    # kills landed in the steps between (most of the aimed ones: a step of one fsync can pass unseen under load)
    assert len(states & set(TARGET_STATES)) >= 4, states
