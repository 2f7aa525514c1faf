"""Measure what the drop-index fault does to GET /api/rooms/{code}: the numbers in examples/vbrpg/README.md.

Seeds a fresh database (default: 200,000 rooms, 5 seats each = 1,000,000 participants), starts the service
detached on a free port, times room lookups with the index, after `fault drop-index`, and after
`migrate -1` puts the index back, then stops the service. Everything lives in a temporary directory.

    python examples/vbrpg/bench/measure_drop_index.py [--rooms 200000] [--requests 200]
"""

import argparse
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

VBRPG_EXAMPLE = (sys.executable, "-m", "vbrpg_example")
ROOM_LOOKUP_PLAN = "EXPLAIN QUERY PLAN SELECT * FROM game_room_participants WHERE room_id = 1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=200_000)
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--participants-per-room", type=int, default=4)
    parser.add_argument("--agents-per-room", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200, help="timed lookups per phase")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vbrpg-drop-index-") as directory:
        work = Path(directory)
        database, app_dir, pidfile = work / "vbrpg.db", work / "app", work / "service.pid"
        timed("init-app", "init-app", app_dir)
        timed("migrate (fresh database)", "migrate", "--db", database, "--app-dir", app_dir)
        timed(
            "seed",
            "seed",
            "--db",
            database,
            "--rooms",
            arguments.rooms,
            "--players",
            arguments.players,
            "--participants-per-room",
            arguments.participants_per_room,
            "--agents-per-room",
            arguments.agents_per_room,
        )
        print(f"database size: {database.stat().st_size / 2**20:.0f} MiB")
        codes = room_codes(database, arguments.requests)
        port = free_port()
        timed("serve --detach", "serve", "--detach", "--db", database, "--app-dir", app_dir,
              "--port", port, "--pidfile", pidfile)  # fmt: skip
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                results = [("with ix_game_room_participants_room_id", plan(database), lookups(client, codes))]
                timed("fault drop-index", "fault", "drop-index", "--db", database, "--app-dir", app_dir)
                results.append(("after fault drop-index", plan(database), lookups(client, codes)))
                timed("migrate -1 (recreate the index)", "migrate", "--db", database, "--app-dir", app_dir, "-1")
                results.append(("after migrate -1", plan(database), lookups(client, codes)))
        finally:
            timed("stop", "stop", "--pidfile", pidfile)

    print("\n| phase | query plan | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
    for phase, query_plan, latencies in results:
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        print(f"| {phase} | {query_plan} | {p50:.1f} | {p95:.1f} | {max(latencies):.1f} |")
    return 0


def timed(label: str, *arguments: object) -> None:
    started = time.monotonic()
    subprocess.run([*VBRPG_EXAMPLE, *map(str, arguments)], check=True, capture_output=True)  # noqa: S603
    print(f"{label}: {time.monotonic() - started:.2f} s")


def room_codes(database: Path, count: int) -> list[str]:
    """Return `count` room codes spread over the whole table."""
    connection = sqlite3.connect(database)
    try:
        total = connection.execute("SELECT max(id) FROM game_rooms").fetchone()[0]
        step = max(1, total // count)
        rows = connection.execute(
            "SELECT code FROM game_rooms WHERE id % ? = 0 ORDER BY id LIMIT ?", (step, count)
        ).fetchall()
    finally:
        connection.close()
    return [row[0] for row in rows]


def plan(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return "; ".join(row[-1] for row in connection.execute(ROOM_LOOKUP_PLAN))
    finally:
        connection.close()


def lookups(client: httpx.Client, codes: list[str]) -> list[float]:
    """Time GET /api/rooms/{code} once per code, after one warm-up request; milliseconds."""
    client.get(f"/api/rooms/{codes[0]}").raise_for_status()
    latencies = []
    for code in codes:
        started = time.perf_counter()
        client.get(f"/api/rooms/{code}").raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
