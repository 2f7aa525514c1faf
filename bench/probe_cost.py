"""What one run of each probe costs the daemon, on a ~100 MB VBRPG database served by the example service.

Sets up an app dir with ``vbrpg-example`` (init-app, migrate, seed to about ``--size-mb``), serves it on a free
port, and runs every probe ``--runs`` times in this process (as the daemon does: asyncio, blocking work in worker
threads). CPU time is this process's user+system time (all threads) per run; wall time per run beside it. The
service's own CPU for answering HTTP probes is not counted (it is the service's, not rollbackd's).

    .venv/bin/python bench/probe_cost.py [--size-mb 100] [--runs 20] [--keep DIR]
    .venv/bin/python bench/probe_cost.py --small [--runs 200]

``--small`` seeds the footprint benches' database instead (2,000 rooms / 4,000 players, a few MB): the one the
daemon-wide CPU goals are measured on, where a probe's fixed cost per run, not the scan, is what shows.
``--changed``: another process commits to the database before every run (a writer child told through a pipe,
so its work is not this process's CPU): the database probes then find nothing to reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rollbackd.config.model import parse_config
from rollbackd.host.http_client import HttpClient
from rollbackd.probes import ProbeContext, build_probes, observe
from rollbackd.probes.base import Probe
from rollbackd.probes.integrity import IntegrityProbe
from rollbackd.state.state_dir import StateDir

VBRPG = str(Path(sys.executable).parent / "vbrpg-example")


def vbrpg(*args: str) -> str:
    result = subprocess.run([VBRPG, *args], capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"vbrpg-example {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(root: Path, size_mb: int, *, small: bool = False) -> tuple[Path, Path]:
    app, database = root / "app", root / "vbrpg.db"
    if not database.exists():
        vbrpg("init-app", str(app), "--db", str(database))
        vbrpg("migrate", "--db", str(database), "--app-dir", str(app))
        if small:  # bench/footprint_stack.py's and footprint_services.py's Stack(rooms=2000, players=4000)
            vbrpg("seed", "--db", str(database), "--rooms", "2000", "--players", "4000")
            return app, database
        # About 1 KB per room with its seats and players; seed in batches until the file is big enough.
        batch = 0
        while database.stat().st_size < size_mb * 1024 * 1024:
            vbrpg(
                "seed", "--db", str(database), "--rooms", "20000", "--players", "40000",
                "--participants-per-room", "4", "--agents-per-room", "1",
            )  # fmt: skip
            batch += 1
            if batch > 200:
                break
    return app, database


WRITER = """\
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in sys.stdin:
    connection.execute("UPDATE players SET name = name WHERE id = (SELECT min(id) FROM players)")
    print("committed", flush=True)
"""


class Writer:
    """A child process that commits one update each time it is asked (``--changed``)."""

    def __init__(self, database: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-c", WRITER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def commit(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.stdout.readline()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


async def measure(probe: Probe, runs: int, writer: Writer | None = None) -> tuple[float, float, str]:
    await observe(probe)  # warm-up: first runs learn baselines, fill the vault, prime psutil
    cpu, wall = time.process_time(), time.perf_counter()  # process_time: every thread of this process
    last = None
    for _ in range(runs):
        if writer is not None:
            writer.commit()
        last = await observe(probe)
    assert last is not None
    verdict = ("ok" if last.ok else last.reason) + (", reused (detail.skipped)" if "skipped" in last.detail else "")
    return (time.process_time() - cpu) / runs, (time.perf_counter() - wall) / runs, verdict


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100, help="runs of each cheap probe")
    parser.add_argument("--check-runs", type=int, default=5, help="runs of each integrity check kind")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the database here instead of a temp dir")
    parser.add_argument("--small", action="store_true", help="the footprint benches' 2,000 rooms / 4,000 players")
    parser.add_argument("--changed", action="store_true", help="another process commits before every run")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="rollbackd-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    app, database = prepare(root, args.size_mb, small=args.small)
    port = free_port()
    pidfile = root / "vbrpg.pid"
    vbrpg(
        "serve", "--db", str(database), "--app-dir", str(app), "--port", str(port), "--pidfile", str(pidfile),
        "--detach",
    )  # fmt: skip
    try:
        room = httpx.post(
            f"http://127.0.0.1:{port}/api/rooms", json={"name": "bench", "host_name": "bench-host"}, trust_env=False
        ).json()["code"]
        text = f"""
[daemon]
state_dir = "{root / "state"}"
[[service]]
name = "vbrpg"
workdir = "{app}"
database = "{database}"
base_url = "http://127.0.0.1:{port}"
[service.probes.latency]
paths = ["/api/rooms/{room}"]
[service.probes.process]
pidfile = "{pidfile}"
"""
        service = parse_config(text, root / "bench.toml").service[0]
        state_dir = StateDir(root / "state")
        state_dir.ensure()
        size = database.stat().st_size
        print(
            f"database {size / 1024**2:.0f} MiB ({database}), {args.runs} runs per probe,"
            f" {args.check_runs} per integrity check kind"
        )
        print(f"{'probe':<18} {'CPU ms/run':>10} {'wall ms/run':>11}  last result")
        writer = Writer(database) if args.changed else None
        async with HttpClient() as client:
            context = ProbeContext(http=client, state_dir=state_dir)
            for probe in build_probes(service, context):
                if isinstance(probe, IntegrityProbe):
                    for name, full_every, foreign_keys in (
                        ("integrity full", 1e-9, True),  # every run an integrity_check
                        ("integrity quick", 1e12, True),  # every run a quick_check
                        ("quick, no FK", 1e12, False),  # quick_check alone: the difference is foreign_key_check
                    ):
                        probe.full_every, probe.check_foreign_keys = full_every, foreign_keys
                        cpu, wall, verdict = await measure(probe, args.check_runs, writer)
                        print(f"{name:<18} {cpu * 1000:>10.2f} {wall * 1000:>11.2f}  {verdict}")
                    continue
                cpu, wall, verdict = await measure(probe, args.runs, writer)
                print(f"{probe.name:<18} {cpu * 1000:>10.2f} {wall * 1000:>11.2f}  {verdict}")
        if writer is not None:
            writer.close()
    finally:
        vbrpg("stop", "--pidfile", str(pidfile))
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
