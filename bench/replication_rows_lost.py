"""Rows lost on a corruption outside a deploy: the newest local backup against a point-in-time restore from the
Litestream replica (issue 16's goal: at most 2 s of writes lost with replication, against up to
``backups.every`` without).

Real parts: a writer process inserting one row every ``--interval`` (default 50 ms) into a WAL database; a real
``litestream replicate`` child shipping it to a ``file`` replica; a local backup taken by rollbackd's own
``take_backup`` at the start (the "hourly" backup, here ``--backup-age`` seconds before the fault); the
integrity probe's cadence (``PRAGMA quick_check`` every ``--check-every`` seconds, in its own connection), which
gives the last moment the database was proven good. At the fault the rows committed so far are counted; then
rollbackd's ``fetch_point`` restores the replica at the last passing check (what the integrity-failed rule's
replica rung does) and the rows in that copy are counted. Rows lost = rows before the fault minus rows restored;
seconds lost = rows lost x interval. Each trial is repeated ``--trials`` times. ``litestream restore -timestamp
T`` gives the transactions whose LTX file was shipped by T, so the loss is up to one check interval plus one
``sync_interval`` (default 1 s).

    .venv/bin/python bench/replication_rows_lost.py --trials 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.replication import litestream
from rollbackd.replication.restore import fetch_point
from rollbackd.state.state_dir import StateDir

WRITER = textwrap.dedent(
    """
    import signal, sqlite3, sys, time
    connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    connection.execute("PRAGMA busy_timeout = 30000")
    interval = float(sys.argv[2])
    running = True
    def stop(*_):
        global running
        running = False
    signal.signal(signal.SIGTERM, stop)
    while running:
        connection.execute("INSERT INTO events (at) VALUES (?)", (time.time(),))
        time.sleep(interval)
    """
)


def make_service(root: Path) -> ServiceConfig:
    text = f"""
[daemon]
state_dir = "{root / "state"}"

[[service]]
name = "bench"
workdir = "{root}"
database = "data/bench.db"
base_url = "http://127.0.0.1:9"
probes.rows = {{ tables = ["events"] }}
backups = {{ dir = "data/backups", min_free_bytes = 0, min_free_ratio = 0.0 }}
replication = {{ replicas = [{{ type = "file", path = "{root / "offsite"}" }}] }}
"""
    return parse_config(text, root / "rollbackd.toml").service[0]


def count(database: Path, before: float | None = None) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as connection:
        if before is None:
            return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])
        return int(connection.execute("SELECT count(*) FROM events WHERE at <= ?", (before,)).fetchone()[0])


def quick_check(database: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as connection:
        return [tuple(row) for row in connection.execute("PRAGMA quick_check").fetchall()] == [("ok",)]


def trial(root: Path, args: argparse.Namespace) -> dict[str, float]:
    service = make_service(root)
    service.database.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(service.database, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    state_dir = StateDir(root / "state")
    state_dir.ensure()
    runner = litestream.prepare(service, state_dir)
    child = subprocess.Popen(
        runner.replicate_argv(), env=dict(runner.env), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )  # noqa: S603, E501
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(service.database), str(args.interval)])  # noqa: S603
    try:
        time.sleep(1.0)
        backup = take_backup(service, reason="scheduled")
        # The fault falls at a random phase of the check cadence, as it would in life.
        fault = time.time() + args.backup_age + random.uniform(0, args.check_every)  # noqa: S311
        proven = backup.manifest.created_at
        while True:
            now = time.time()
            if now >= fault:
                break
            started = now
            if quick_check(service.database):
                proven = started
            time.sleep(min(args.check_every, max(0.0, fault - time.time())))
        rows_at_fault = count(service.database, before=fault)
        time.sleep(args.settle)  # the restore runs after detection; by then the point has been shipped
        copy = fetch_point(service, proven, state_dir=state_dir, scratch_dir=root / "scratch")
        restored = count(copy.path)
    finally:
        writer.terminate()
        writer.wait(timeout=30)
        child.terminate()
        child.wait(timeout=30)
    backup_rows = int(backup.manifest.row_counts["events"] or 0)
    return {
        "rows_at_fault": rows_at_fault,
        "lost_local": rows_at_fault - backup_rows,
        "lost_replica": rows_at_fault - restored,
        "proven_before_fault_s": fault - proven,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between the writer's inserts")
    parser.add_argument("--check-every", type=float, default=1.0, help="the integrity probe's quick_every")
    parser.add_argument("--backup-age", type=float, default=20.0, help="seconds from the local backup to the fault")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds from the fault to the restore")
    parser.add_argument("--every", type=float, default=3600.0, help="backups.every, for the expected local loss")
    args = parser.parse_args()
    results = []
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="rows-lost-") as folder:
            results.append(trial(Path(folder), args))
    lost = [result["lost_replica"] for result in results]
    summary = {
        "trials": results,
        "replica_rows_lost_median": statistics.median(lost),
        "replica_rows_lost_max": max(lost),
        "replica_seconds_lost_max": max(lost) * args.interval,
        "local_rows_lost_median_at_backup_age": statistics.median(result["lost_local"] for result in results),
        "local_seconds_lost_expected_with_every": args.every / 2,
        "local_seconds_lost_worst_with_every": args.every,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
