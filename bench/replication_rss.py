"""The daemon's own memory with replication on, its ``litestream replicate`` child counted separately, against
the same daemon with replication off (issue 16, "Measure").

Sets up the example service (seeded, tests/support/stack.py) and runs a real `rollbackd run` over it twice: once
without `[service.replication]`, once with it (a `file` replica, or with ``--s3`` an S3 bucket on a real
`rclone serve s3` started and stopped by the bench). A writer adds a player every ``--write-every`` seconds
throughout, so Litestream has WAL to ship and the probes have changes to see. Every second for ``--seconds``
the VmRSS of the daemon process (from /proc) and of its Litestream child (the daemon's child whose argv is
`litestream replicate`) are read; short-lived children (`litestream ltx` of the replication probe, the WAL-header
check) are not counted. Reported: median and maximum of each.

    .venv/bin/python bench/replication_rss.py --seconds 120
    .venv/bin/python bench/replication_rss.py --seconds 120 --s3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.replication.s3_server import rclone_s3  # noqa: E402
from tests.support.stack import Stack  # noqa: E402


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def litestream_child(pid: int) -> int | None:
    for child in children(pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"litestream") and b"replicate" in argv:
                return child
    return None


@contextlib.contextmanager
def writer(database: Path, every: float) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        with contextlib.closing(sqlite3.connect(database, isolation_level=None, timeout=30)) as connection:
            serial = 0
            while not stop.wait(every):
                serial += 1
                connection.execute("INSERT INTO players (name) VALUES (?)", (f"rss-{time.time_ns()}-{serial}",))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sample(stack: Stack, seconds: float, write_every: float, replicated: bool) -> dict[str, object]:
    assert stack.daemon is not None  # noqa: S101 - started by the caller
    pid = stack.daemon.pid
    if replicated:  # the child is up and has shipped its first sync
        deadline = time.monotonic() + 60
        while litestream_child(pid) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no litestream replicate child of {pid}:\n{stack.log_tail()}")
            time.sleep(0.5)
    daemon: list[int] = []
    child: list[int] = []
    with writer(stack.database, write_every):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (value := rss_kib(pid)) is not None:
                daemon.append(value)
            if replicated and (found := litestream_child(pid)) is not None and (value := rss_kib(found)) is not None:
                child.append(value)
            time.sleep(1.0)
    result: dict[str, object] = {
        "daemon_rss_mib_median": statistics.median(daemon) / 1024,
        "daemon_rss_mib_max": max(daemon) / 1024,
        "samples": len(daemon),
    }
    if child:
        result["litestream_rss_mib_median"] = statistics.median(child) / 1024
        result["litestream_rss_mib_max"] = max(child) / 1024
    return result


def run_stack(root: Path, args: argparse.Namespace, extra_config: str, replicated: bool) -> dict[str, object]:
    stack = Stack(
        root, rooms=args.rooms, players=args.rooms // 2, probe_every=args.probe_every, extra_config=extra_config
    )
    try:
        stack.set_up()
        stack.start_daemon()
        time.sleep(args.warm_up)
        result = sample(stack, args.seconds, args.write_every, replicated)
        result["database_mb"] = stack.database.stat().st_size / 1e6
        return result
    finally:
        stack.tear_down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long each daemon is sampled")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds after the daemon is ready")
    parser.add_argument("--rooms", type=int, default=2000, help="seeded rooms (players: half)")
    parser.add_argument("--probe-every", default="1s", help="every probe's interval (the stack's)")
    parser.add_argument("--write-every", type=float, default=0.1, help="seconds between the writer's inserts")
    parser.add_argument("--s3", action="store_true", help="an S3 replica on rclone serve s3, not a file replica")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="rollbackd-rss-") as folder:
        root = Path(folder)
        results["replication off"] = run_stack(root / "off", args, "", replicated=False)
        if args.s3:
            with rclone_s3(root / "s3", root / "rclone.log") as server:
                credentials = root / "s3.env"
                credentials.write_text(f"AWS_ACCESS_KEY_ID={server.key}\nAWS_SECRET_ACCESS_KEY={server.secret}\n")
                credentials.chmod(0o600)
                replica = (
                    f'type = "s3"\nendpoint = "{server.endpoint}"\nbucket = "{server.bucket("replicas")}"\n'
                    'path = "vbrpg"\nforce_path_style = true'
                )
                extra = (
                    f'\n[service.replication]\ncredentials_file = "{credentials}"\n\n'
                    f"[[service.replication.replicas]]\n{replica}\n"
                )
                results["replication on (s3)"] = run_stack(root / "on", args, extra, replicated=True)
        else:
            extra = f'\n[[service.replication.replicas]]\ntype = "file"\npath = "{root / "offsite"}"\n'
            extra = "\n[service.replication]\n" + extra
            results["replication on (file)"] = run_stack(root / "on", args, extra, replicated=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
