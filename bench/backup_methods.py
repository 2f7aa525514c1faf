"""Backup methods side by side on one large SQLite database while a writer inserts every 5 ms.

For each method: wall time (and its ratio to cp + fsync, the physical limit), whether it finished within the
limit, and the writer's latency (p50, p99, max) and errors during it. Then the verification costs (quick_check,
integrity_check, sha256) and rollbackd's restore and drill of the same file.

    .venv/bin/python bench/backup_methods.py                      # 1 GiB, WAL (what bench/RESULTS.md reports)
    .venv/bin/python bench/backup_methods.py --size-mib 256 --journal-mode delete

The database is generated once under --work (default /var/tmp/rollbackd-bench) and reused. Not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rollbackd.backup.catalog import inspect_backup
from rollbackd.backup.drill import run_drill
from rollbackd.backup.restore import restore_backup
from rollbackd.backup.snapshot import snapshot_database
from rollbackd.config.model import parse_config
from rollbackd.host.atomic_files import file_sha256
from rollbackd.state.state_dir import StateDir

WRITER = r"""
import json, signal, sqlite3, sys, time
stop = False
def handle(*_): 
    global stop; stop = True
signal.signal(signal.SIGTERM, handle)
c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
latencies, errors = [], []
while not stop:
    t = time.perf_counter()
    try:
        c.execute("INSERT INTO events (room_id, name, payload) VALUES "
                  "(abs(random()) % 10000, hex(randomblob(16)), randomblob(200))")
    except sqlite3.Error as e:
        errors.append(str(e))
    latencies.append(time.perf_counter() - t)
    time.sleep(0.005)
c.close()
print(json.dumps({"latencies": latencies, "errors": errors[:5], "error_count": len(errors)}))
"""


class Writer:
    def __init__(self, database: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(database)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # let it settle into its rhythm

    def stop(self) -> dict[str, float | int | str]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        data = json.loads(out)
        latencies = sorted(data["latencies"])
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return {
            "inserts": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 1),
            "errors": data["error_count"],
        }


def generate(path: Path, size_mib: int, journal_mode: str) -> None:
    if path.exists() and path.stat().st_size >= size_mib * 1024**2 * 0.98:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.monotonic()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, room_id INTEGER, name TEXT, payload BLOB)")
    connection.execute("CREATE INDEX ix_events_room_id ON events (room_id)")  # indexes: what integrity_check costs
    connection.execute("CREATE UNIQUE INDEX ix_events_name ON events (name)")
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    connection.execute("INSERT INTO alembic_version VALUES ('bench0000001')")
    rows = size_mib * 1024 * 1024 // 4096
    connection.execute("BEGIN")
    for _ in range(0, rows, 1000):
        connection.executemany(
            "INSERT INTO events (room_id, name, payload) VALUES (abs(random()) % 10000, hex(randomblob(16)), "
            "randomblob(3700))",
            [()] * 1000,
        )
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    print(f"generated {path} ({path.stat().st_size / 1024**3:.2f} GiB) in {time.monotonic() - started:.0f}s")


def fresh(path: Path) -> Path:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def method_cp(source: Path, target: Path, limit: float) -> str:
    subprocess.run(["cp", str(source), str(target)], check=True, timeout=limit)
    fsync(target)
    return "finished (not a consistent copy of a live database: the bound, not a method)"


def method_cli_backup(source: Path, target: Path, limit: float) -> str:
    try:
        subprocess.run(
            ["sqlite3", str(source), ".timeout 30000", f".backup '{target}'"],
            check=True,
            timeout=limit,
            capture_output=True,
        )
    except subprocess.TimeoutExpired:
        return f"DID NOT FINISH in {limit:.0f}s"
    return "finished"


def python_backup(source: Path, target: Path, limit: float, *, pages: int, hold: bool) -> str:
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30, isolation_level=None)
    writer = sqlite3.connect(target, isolation_level=None)
    deadline = time.monotonic() + limit
    restarts, last = 0, None

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal restarts, last
        if last is not None and remaining > last:
            restarts += 1
        last = remaining
        if time.monotonic() > deadline:
            raise TimeoutError

    try:
        writer.execute("PRAGMA journal_mode = OFF")
        writer.execute("PRAGMA synchronous = OFF")
        if hold:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        try:
            reader.backup(writer, pages=pages, progress=progress)
        except TimeoutError:
            return f"DID NOT FINISH in {limit:.0f}s ({restarts} restarts)"
        finally:
            if hold:
                reader.execute("COMMIT")
    finally:
        reader.close()
        writer.close()
    fsync(target)
    return f"finished ({restarts} restarts)"


def method_vacuum_into(source: Path, target: Path, limit: float) -> str:
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        reader.execute("VACUUM INTO ?", (str(target),))
    finally:
        reader.close()
    fsync(target)
    return "finished"


def method_rollbackd(check: str) -> Callable[[Path, Path, float], str]:
    def run(source: Path, target: Path, limit: float) -> str:
        folder = target.parent / "rollbackd"
        shutil.rmtree(folder, ignore_errors=True)
        result = snapshot_database(source, folder, tables=["events"], reason="manual", check=check, timeout=limit)
        shutil.move(result.path, target)
        result.path.with_name(result.path.name + ".json").unlink()
        return f"finished, verified ({check} + sha256 + manifest)"

    return run


def timed(
    name: str, method: Callable[[Path, Path, float], str], source: Path, target: Path, limit: float, repeat: int
) -> dict:  # type: ignore[type-arg]
    """Run ``method`` under a fresh writer ``repeat`` times (once if it does not finish); keep the median run."""
    runs = []
    for _ in range(repeat):
        fresh(target)
        writer = Writer(source)
        started = time.monotonic()
        try:
            outcome = method(source, target, limit)
        except Exception as error:  # noqa: BLE001 - a bench reports every failure and goes on
            outcome = f"FAILED: {error}"
        seconds = time.monotonic() - started
        stats = writer.stop()
        runs.append({"method": name, "seconds": round(seconds, 2), "outcome": outcome, **stats})
        print(json.dumps(runs[-1]), flush=True)
        if not outcome.startswith("finished"):
            break
    runs.sort(key=lambda run: run["seconds"])
    row = dict(runs[len(runs) // 2])
    row["all_seconds"] = [run["seconds"] for run in runs]
    return row


def check_costs(copy: Path) -> dict[str, float]:
    costs = {}
    for pragma in ("quick_check", "integrity_check"):
        connection = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        started = time.monotonic()
        assert connection.execute(f"PRAGMA {pragma}").fetchall() == [("ok",)]
        costs[pragma] = round(time.monotonic() - started, 2)
        connection.close()
    started = time.monotonic()
    file_sha256(copy)
    costs["sha256"] = round(time.monotonic() - started, 2)
    return costs


def restore_costs(work: Path, source: Path) -> dict[str, object]:
    """rollbackd's restore of a 1 GiB backup (service stopped by hand), before and after a drill."""
    app = work / "app"
    shutil.rmtree(app, ignore_errors=True)
    (app / "data").mkdir(parents=True)
    text = f"""
[daemon]
state_dir = "{work / "state"}"
[[service]]
name = "bench"
workdir = "{app}"
database = "data/bench.db"
base_url = "http://127.0.0.1:1"
[service.backups]
dir = "data/backups"
min_free_bytes = 0
min_free_ratio = 0.0
[service.probes.rows]
tables = ["events"]
"""
    service = parse_config(text, work / "bench.toml").service[0]
    state = StateDir(work / "state")
    shutil.rmtree(work / "state", ignore_errors=True)
    state.ensure()
    shutil.copy(source, service.database)
    result = snapshot_database(service.database, service.backups.dir, tables=["events"], reason="manual")
    costs: dict[str, object] = {}
    for label in ("restore (integrity_check first)", "drill", "restore (drilled: quick_check first)"):
        started = time.monotonic()
        if label == "drill":
            assert run_drill(service, state_dir=state).ok
        else:
            entry = inspect_backup(result.path, "bench")
            (state.service_dir("bench") / "restore-journal.json").unlink(missing_ok=True)
            report = restore_backup(service, entry, control=None, state_dir=state, service_stopped=True)
            assert report.outcome == "restored"
            steps = {step.name: round(step.seconds, 2) for step in report.steps}
            costs[f"{label} steps"] = steps  # type: ignore[assignment]
            for quarantined in report.quarantined:
                os.unlink(quarantined)
        costs[label] = round(time.monotonic() - started, 2)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--journal-mode", choices=("wal", "delete"), default="wal")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds before a method counts as not finishing")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/rollbackd-bench"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per method that finishes (the median is shown)")
    args = parser.parse_args()
    work = args.work / f"{args.size_mib}MiB-{args.journal_mode}"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source.db"
    generate(source, args.size_mib, args.journal_mode)
    target = work / "copy.db"
    methods: list[tuple[str, Callable[[Path, Path, float], str]]] = [
        ("cp + fsync (physical limit)", method_cp),
        ("sqlite3 CLI .backup", method_cli_backup),
        ("Connection.backup(pages=-1)", lambda s, t, limit: python_backup(s, t, limit, pages=-1, hold=False)),
        ("backup(pages=4096) stepped", lambda s, t, limit: python_backup(s, t, limit, pages=4096, hold=False)),
        ("stepped 1% + read txn held", lambda s, t, limit: python_backup(s, t, limit, pages=2621, hold=True)),
        ("VACUUM INTO", method_vacuum_into),
        ("rollbackd (stepped + read txn, quick_check)", method_rollbackd("quick_check")),
        ("rollbackd with integrity_check instead", method_rollbackd("integrity_check")),
    ]
    print(f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, {os.cpu_count()} cores")
    rows = [timed(name, method, source, target, args.limit, args.repeat) for name, method in methods]
    baseline = rows[0]["seconds"]
    print()
    print("| method | seconds (median; all runs) | × cp | outcome | writer p50 / p99 / max ms | writer errors |")
    print("|---|---|---:|---|---|---:|")
    for row in rows:
        runs = ", ".join(str(seconds) for seconds in row["all_seconds"])
        print(
            f"| {row['method']} | {row['seconds']} ({runs}) | {row['seconds'] / baseline:.2f} | {row['outcome']} | "
            f"{row['p50_ms']} / {row['p99_ms']} / {row['max_ms']} | {row['errors']} |"
        )
    fresh(target)
    python_backup(source, target, 600, pages=-1, hold=False)
    print()
    print("verification of the copy (no writer):", json.dumps(check_costs(target)))
    fresh(target)
    print("restore of the same file:", json.dumps(restore_costs(work, source)))
    with contextlib.suppress(OSError):
        fresh(target)


if __name__ == "__main__":
    main()
