"""What one service costs the running daemon in memory (issue 13): Python's allocations by where they were made,
SQLite's own heap, malloc's free space, and the series each service adds to /metrics.

Sets up the example service and N copies of its database as bench/daemon_memory.py does, then runs ``rollbackd
run`` under a small wrapper that starts tracemalloc (``--frames`` deep) and, on SIGUSR1, writes a snapshot plus
``sqlite3_memory_used()`` (SQLite's allocator: page caches, schemas, statements) and glibc's ``mallinfo2()``
(bytes in use vs free in the arenas: fragmentation). Run it at 1 and at 20 services and compare:

    .venv/bin/python bench/service_memory.py --services 1 --seconds 60 --save /tmp/one.snapshot
    .venv/bin/python bench/service_memory.py --services 20 --seconds 60 --compare /tmp/one.snapshot

``--compare`` prints the allocation sites that grew most against the other snapshot, divided by the extra
services: what one service costs, line by line. tracemalloc itself costs memory and CPU, so the VmRSS here is
not the daemon's; bench/daemon_memory.py measures that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.footprint_services import copy_database, many_services  # noqa: E402
from tests.support.rollbackd_daemon import wait_for  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

# Runs the daemon as `python -m rollbackd` would, with a SIGUSR1 handler that dumps what this bench reads.
WRAPPER = """
import ctypes, json, signal, sys, tracemalloc
tracemalloc.start(int(sys.argv[1]))
out = sys.argv[2]

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

def dump(*_):
    import _sqlite3
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.take_snapshot().dump(out + ".snapshot")
    facts = {"sqlite3_memory_used": sqlite.sqlite3_memory_used(), "traced": traced,
             "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
             **{name: getattr(info, name) for name, _ in Mallinfo2._fields_}}
    with open(out + ".json", "w") as handle:
        json.dump(facts, handle)

signal.signal(signal.SIGUSR1, dump)
sys.argv = ["rollbackd", *sys.argv[3:]]
from rollbackd.cli import main
sys.exit(main())
"""


def series_per_service(metrics: str, service: str) -> dict[str, int]:
    """The /metrics sample lines of ``service``, counted by metric family."""
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        if line.startswith("#") or f'service="{service}"' not in line:
            continue
        name = re.sub(r"(_bucket|_count|_sum)$", "", line.split("{", 1)[0])
        counts[name] = counts.get(name, 0) + 1
    return counts


def report(snapshot_path: Path, facts: dict[str, int], compare: Path | None, services: int, top: int) -> None:
    mib = 2**20
    print(f"traced by tracemalloc: {facts['traced'] / mib:.1f} MiB")
    print(f"sqlite3_memory_used(): {facts['sqlite3_memory_used'] / mib:.2f} MiB")
    print(
        f"malloc: main arena {facts['arena'] / mib:.1f} MiB (in use {facts['uordblks'] / mib:.1f}, free "
        f"{facts['fordblks'] / mib:.1f}, top pad {facts['keepcost'] / mib:.1f}), mmapped {facts['hblkhd'] / mib:.1f}"
    )
    snapshot = tracemalloc.Snapshot.load(str(snapshot_path)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*")]
    )
    if compare is None:
        print("\nlargest allocation sites (by file):")
        for stat in snapshot.statistics("filename")[:top]:
            print(f"  {stat.size / 1024:9.1f} KiB {stat.count:7d} blocks  {stat.traceback}")
        return
    other = tracemalloc.Snapshot.load(str(compare)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*")]
    )
    other_facts = json.loads(compare.with_suffix(".json").read_text())
    other_services = int(other_facts["services"])
    extra = services - other_services
    print(
        f"\nagainst {compare} ({other_services} service(s)): traced "
        f"{(facts['traced'] - other_facts['traced']) / mib / extra:.3f} MiB per extra service, sqlite "
        f"{(facts['sqlite3_memory_used'] - other_facts['sqlite3_memory_used']) / mib / extra:.3f}, malloc in use "
        f"{(facts['uordblks'] - other_facts['uordblks']) / mib / extra:.3f}, malloc free "
        f"{(facts['fordblks'] - other_facts['fordblks']) / mib / extra:.3f}"
    )
    for key in ("filename", "lineno"):
        print(f"\nlargest growth by {key}, KiB per extra service:")
        for stat in snapshot.compare_to(other, key)[:top]:
            print(f"  {stat.size_diff / 1024 / extra:8.1f} KiB {stat.count_diff / extra:8.1f} blocks  {stat.traceback}")
    print("\nlargest growth by traceback, KiB per extra service:")
    for stat in snapshot.compare_to(other, "traceback")[: top // 2]:
        print(f"  {stat.size_diff / 1024 / extra:8.1f} KiB {stat.count_diff / extra:8.1f} blocks")
        for line in stat.traceback.format()[-12:]:
            print(f"      {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--every", help="every probe at this interval (default: the probes' default intervals)")
    parser.add_argument("--seconds", type=float, default=60, help="running time after READY before the snapshot")
    parser.add_argument("--frames", type=int, default=12, help="traceback depth tracemalloc keeps")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", type=Path, help="keep the snapshot here (with a .json beside) to compare later")
    parser.add_argument("--compare", type=Path, help="a snapshot saved by --save at fewer services")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-service-memory-") as root:
        stack = Stack(Path(root), rooms=2000, players=4000, dry_run=True)
        daemon: subprocess.Popen[bytes] | None = None
        try:
            stack.set_up()
            stack.probe_every = args.every
            stack.write_config()
            config = stack.config_path
            service = "vbrpg"
            if args.services > 1:
                for index in range(args.services):
                    copy_database(stack.database, stack.database.with_name(f"vbrpg-{index}.db"))
                config = stack.root / "rollbackd-many.toml"
                config.write_text(many_services(stack.config_path.read_text(), args.services))
                service = "vbrpg-0"
            out = stack.root / "dump"
            log = stack.root / "daemon.log"
            with log.open("wb") as output:
                daemon = subprocess.Popen(  # noqa: S603 - fixed argv
                    [sys.executable, "-c", WRAPPER, str(args.frames), str(out), "--config", str(config), "run"],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            wait_for(lambda: b"ready: first probe round" in log.read_bytes(), "READY", timeout=300, step=0.5)
            time.sleep(args.seconds)
            url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own daemon
                metrics = response.read().decode()
            os.kill(daemon.pid, signal.SIGUSR1)
            wait_for(lambda: (out.with_suffix(".json")).exists(), "snapshot", timeout=300, step=0.5)
            facts = json.loads(out.with_suffix(".json").read_text())
            facts["services"] = args.services
            counts = series_per_service(metrics, service)
            print(f"\n### {args.services} service(s), {args.every or 'default intervals'}, after {args.seconds:.0f} s")
            print(f"/metrics: {len(metrics.splitlines())} lines; {sum(counts.values())} samples of service {service}:")
            print("  " + ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda i: -i[1])))
            report(out.with_suffix(".snapshot"), facts, args.compare, args.services, args.top)
            if args.save is not None:
                out.with_suffix(".snapshot").replace(args.save)
                args.save.with_suffix(".json").write_text(json.dumps(facts))
        finally:
            if daemon is not None and daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(timeout=60)
            stack.tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
