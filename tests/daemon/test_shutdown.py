"""SIGTERM while the daemon is in the middle of something: a long backup of a large database, a restore. Either
way `rollbackd run` exits 0 and leaves a state the runbook can trust: every file that looks like a backup is whole
and verified, no temp file is left, the database file exists at every instant, and no restore is left pending."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.probes.example_app import VbrpgApp, serving
from tests.support.notify_listener import NotifyListener
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import rollbackd_run, wait_for
from tests.support.stack import running_stack
from tests.support.vbrpg_service import CLEAN_HEAD

pytestmark = pytest.mark.e2e

BALLAST_ROWS = 100_000  # random 4000-byte blobs: a ~390 MiB database
WATCHDOG_USEC = 400_000  # a tick every 0.2 s: the loop-lag gauge is sampled often during the backup
TABLES = ("players", "game_rooms", "game_room_participants", "ballast")


def inflate(database: Path) -> None:
    """Make the example's database large in about a second: a table of random blobs beside the service's own,
    written with a rollback journal and no syncs (nobody else has it open yet), then back in WAL mode, the mode
    the service runs it in."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        assert connection.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO ballast (payload) SELECT randomblob(4000) FROM n",
            (BALLAST_ROWS,),
        )
        assert connection.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    finally:
        connection.close()


def read_database(database: Path) -> tuple[list[tuple[str]], dict[str, int]]:
    """quick_check and the row counts, read-only."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        check = connection.execute("PRAGMA quick_check").fetchall()
        counts = {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}  # noqa: S608 - fixed names
    finally:
        connection.close()
    return check, counts


def partials(backup_dir: Path) -> list[str]:
    return sorted(path.name for path in backup_dir.glob(".*.partial")) if backup_dir.is_dir() else []


@dataclass
class LoopLagSampler:
    """Scrapes rollbackd_loop_lag_seconds continuously on a thread, noting whether a backup temp file existed."""

    scrape: Callable[[], object]
    backup_dir: Path
    samples: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.05):
            samples = self.scrape()
            lag = getattr(samples, "get", lambda *_: None)("rollbackd_loop_lag_seconds")
            if lag is not None:
                self.samples.append((lag, bool(partials(self.backup_dir))))

    @contextlib.contextmanager
    def running(self) -> Iterator[LoopLagSampler]:
        thread = threading.Thread(target=self.run, name="lag-sampler")
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)

    def during_backup(self) -> list[float]:
        return [lag for lag, backing_up in self.samples if backing_up]


def test_sigterm_during_a_long_backup_exits_0_and_leaves_only_whole_verified_backups(
    tmp_path: Path,
    make_app: Callable[[str], VbrpgApp],
    notify: NotifyListener,
    metrics_port: int,
    record_property: Callable[[str, object], None],
) -> None:
    app = make_app("vbrpg")
    inflate(app.database)
    check, counts = read_database(app.database)
    assert check == [("ok",)]
    backup_dir = app.database.parent / "backups"
    config = tmp_path / "rollbackd.toml"
    state = tmp_path / "state"
    with serving(app):
        # Quick checks of 390 MiB once, at the first round, so the backups are what the loop lives with.
        config.write_text(daemon_toml(state, metrics_port) + service_toml(app, "vbrpg", integrity_every="1h"))
        environment = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        with rollbackd_run(config, state, metrics_port, **environment) as daemon:
            sampler = LoopLagSampler(daemon.scrape, backup_dir)
            with sampler.running():
                # The start-up backup (there is none yet), start to end.
                first = wait_for(lambda: partials(backup_dir), "the start-up backup's temp file", log=daemon.log_tail)
                wait_for(
                    lambda: not partials(backup_dir) and list(backup_dir.glob("vbrpg_backup_*.db")),
                    "the start-up backup",
                    log=daemon.log_tail,
                )
            lags = sampler.during_backup()
            record_property("max_loop_lag_during_390MiB_backup_seconds", max(lags, default=None))
            print(
                f"rollbackd_loop_lag_seconds during the backup: max {max(lags, default=0):.4f} over {len(lags)} scrapes"
            )

            # A deploy arrives (a file changes in the code dir): the pre-deploy backup starts at once. SIGTERM it.
            (app.app_dir / "RELEASE").write_text("v2\n")
            wait_for(lambda: set(partials(backup_dir)) - set(first), "the pre-deploy backup's temp file", step=0.005)
            daemon.signal(signal.SIGTERM)
            code = daemon.process.wait(timeout=120)
            notify.wait_index("STOPPING", "1")
        log = daemon.log_text()
        assert code == 0, log[-3000:]

        # Nothing half-written: no temp file, no manifest without its backup, every backup whole and verified.
        assert partials(backup_dir) == []
        listing = json.loads(daemon.cli("backups", "list", "vbrpg", "--json").stdout)
        assert listing["partials"] == [] and listing["orphan_manifests"] == []
        reasons = [entry["manifest"]["reason"] for entry in listing["backups"]]
        assert reasons[0] == "startup"
        verify = daemon.cli("backups", "verify", "vbrpg", "--json")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        verified = json.loads(verify.stdout)["backups"]
        names = sorted(path.name for path in backup_dir.glob("vbrpg_backup_*.db"))
        assert sorted(entry["name"] for entry in verified) == names
        assert all(entry["status"] == "verified" for entry in verified), verified
        # The live database is untouched.
        assert read_database(app.database) == ([("ok",)], counts)
        assert "received SIGTERM, shutting down" in log
        assert "Traceback" not in log
        print("backups after SIGTERM:", reasons)


@dataclass
class FileWatch:
    """Stats a path as fast as it can on a thread and counts the moments it did not exist."""

    path: Path
    looks: int = 0
    missing: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            self.looks += 1
            if not os.path.exists(self.path):
                self.missing += 1
            time.sleep(0.0005)

    @contextlib.contextmanager
    def running(self) -> Iterator[FileWatch]:
        thread = threading.Thread(target=self.run, name="file-watch")
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)


def test_sigterm_during_a_restore_lets_it_finish_and_leaves_no_pending_journal(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.daemon is not None
        before = stack.counts()
        journal = stack.state_dir / "services" / "vbrpg" / "restore-journal.json"
        with FileWatch(stack.database).running() as watch:
            # The runbook's Scenario 3: a migration that deletes rows. The daemon restores the pre-migration backup;
            # the journal appears as its first step (stopping the service) begins, and SIGTERM comes right then.
            assert stack.fault("data-loss").returncode == 0
            wait_for(journal.exists, "the restore to begin", log=stack.log_tail, step=0.002)
            started = json.loads(journal.read_text())["state"]
            stack.daemon.send_signal(signal.SIGTERM)  # to the daemon alone, as systemd's KillMode=mixed does
            code = stack.daemon.wait(timeout=120)
        log = stack.log_tail(200)
        assert code == 0, log
        assert started in ("planned", "stopping", "copying", "copied", "swapping", "swapped", "starting"), started
        assert "waiting up to 20s for 1 running recovery action(s)" in log  # SIGTERM came during the recovery
        assert watch.missing == 0 and watch.looks > 100  # the database file existed at every look

        # The restore reached its end before the exit (or `restore --resume` finishes it).
        if json.loads(journal.read_text())["state"] not in ("done", "undone"):
            resumed = stack.rollbackd("restore", "--resume", "--yes")
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert json.loads(journal.read_text())["state"] == "done"
        assert stack.revision() == CLEAN_HEAD
        after = stack.counts()
        assert after["game_rooms"] == before["game_rooms"]
        assert after["game_room_participants"] == before["game_room_participants"]
        assert stack.health() == 200
        [incident] = stack.incidents()
        assert (incident.rule, incident.outcome) == ("data-loss", "recovered"), incident.notes

        # The next start finds nothing to resume.
        with rollbackd_run(stack.config_path, stack.state_dir, stack.metrics_port) as daemon:
            daemon.wait_ready()  # the next start
            assert daemon.stop() == 0
        assert json.loads(journal.read_text())["state"] == "done"
        assert "resuming the restore" not in daemon.log_text()
        assert "interrupted restore" not in daemon.log_text()
