"""Does the lock probe at 100 Hz slow a concurrent SQLite writer? Write latency with and without it.

A writer process inserts one row per transaction (a few hundred bytes, the VBRPG app's typical write), paced every
``--pace`` seconds, and times each commit. Rounds alternate "no probe" and "probe at 100 Hz" (the probe runs in
this process, as in the daemon: /proc/locks read in a worker thread via asyncio) so drift in disk speed hits both
alike. Reported: p50, p99 and max commit latency per condition and journal mode, and SQLITE_BUSY errors (the writer
has busy_timeout = 0, so any lock the probe took would show up as an error, not as a wait).

    .venv/bin/python bench/lock_probe_writer_latency.py [--writes 3000] [--rounds 3] [--pace 0.005]
        [--synchronous full|normal|off]

With synchronous=full each commit waits for fsync, whose jitter dwarfs anything else; synchronous=off removes it,
so an effect of the probe of a few microseconds would show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rollbackd.config.model import parse_config
from rollbackd.host.http_client import HttpClient
from rollbackd.probes import ProbeContext, observe
from rollbackd.probes.sqlite_lock import SqliteLockProbe
from rollbackd.state.state_dir import StateDir

WRITER = """
import json, sqlite3, sys, time
path, mode, count, pace, synchronous, result = sys.argv[1:7]
count, pace = int(count), float(pace)
connection = sqlite3.connect(path, timeout=0, isolation_level=None)
connection.execute(f"PRAGMA journal_mode={mode}")
connection.execute(f"PRAGMA synchronous={synchronous}")
connection.execute("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY, v TEXT)")
print("ready", flush=True)
sys.stdin.readline()
latencies, busy = [], 0
next_at = time.perf_counter()
for i in range(count):
    started = time.perf_counter()
    try:
        connection.execute("INSERT INTO w (v) VALUES (?)", ("x" * 300,))
    except sqlite3.OperationalError:
        busy += 1
    latencies.append(time.perf_counter() - started)
    next_at += pace
    time.sleep(max(0.0, next_at - time.perf_counter()))
connection.close()
with open(result, "w") as handle:  # a file, not stdout: the result outgrows a pipe's buffer
    json.dump({"latencies": latencies, "busy": busy}, handle)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_round(
    database: Path, mode: str, writes: int, pace: float, synchronous: str, with_probe: bool
) -> dict[str, object]:
    result_path = database.with_suffix(".result.json")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(database), mode, str(writes), str(pace), synchronous, str(result_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    probe_runs = 0
    held_seen = 0
    async with HttpClient() as client:
        text = f'[[service]]\nname = "bench"\nworkdir = "{database.parent}"\ndatabase = "{database}"\n'
        text += 'base_url = "http://127.0.0.1:9"\n'
        service = parse_config(text, database.parent / "bench.toml").service[0]
        probe = SqliteLockProbe(service, ProbeContext(http=client, state_dir=StateDir(database.parent / "state")))
        writer.stdin.write("go\n")
        writer.stdin.flush()
        loop = asyncio.get_running_loop()
        while writer.poll() is None:
            if with_probe:
                tick = loop.time()
                observation = await observe(probe)
                probe_runs += 1
                held_seen += int(observation.values.get("held", 0))
                await asyncio.sleep(max(0.0, 0.01 - (loop.time() - tick)))
            else:
                await asyncio.sleep(0.05)
    writer.stdin.close()
    writer.stdout.close()
    assert writer.wait() == 0
    result = json.loads(result_path.read_text())
    return {**result, "probe_runs": probe_runs, "held_seen": held_seen}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.005, help="seconds between two writes")
    parser.add_argument(
        "--synchronous", default="full", choices=["full", "normal", "off"], help="the writer's PRAGMA synchronous"
    )
    args = parser.parse_args()
    print(
        f"{args.writes} writes per round, one every {args.pace * 1000:.1f} ms, synchronous={args.synchronous},"
        f" {args.rounds} rounds per condition"
    )
    print(f"{'mode':<8} {'probe':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'busy':>5} {'probe runs':>10}")
    with tempfile.TemporaryDirectory(prefix="rollbackd-bench-") as scratch:
        for mode in ("wal", "delete"):
            database = Path(scratch) / f"{mode}.db"
            collected: dict[bool, dict[str, list[float]]] = {
                False: {"latencies": [], "busy": [], "runs": []},
                True: {"latencies": [], "busy": [], "runs": []},
            }
            for _ in range(args.rounds):
                for with_probe in (False, True):
                    result = await one_round(database, mode, args.writes, args.pace, args.synchronous, with_probe)
                    collected[with_probe]["latencies"].extend(result["latencies"])  # type: ignore[arg-type]
                    collected[with_probe]["busy"].append(result["busy"])  # type: ignore[arg-type]
                    collected[with_probe]["runs"].append(result["probe_runs"])  # type: ignore[arg-type]
            for with_probe in (False, True):
                latencies = collected[with_probe]["latencies"]
                print(
                    f"{mode:<8} {'100 Hz' if with_probe else 'none':<10}"
                    f" {statistics.median(latencies) * 1000:>8.3f} {percentile(latencies, 0.99) * 1000:>8.3f}"
                    f" {max(latencies) * 1000:>8.3f} {int(sum(collected[with_probe]['busy'])):>5}"
                    f" {int(sum(collected[with_probe]['runs'])):>10}",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
