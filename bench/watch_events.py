"""What the deploy watch hears while nothing is deployed: events per second at every probe 1 s.

Sets up the footprint benches' stack (tests/support/stack.py: the example service seeded with 2,000 rooms / 4,000
players, its database, log and pidfile inside the workdir, as a hand-written config has them), runs every probe of
its config at 1 s in this process (as the daemon does), and counts what watchdog builds and dispatches for the
code dir with target/watch.py's event filter (the kernel-side mask), grouped by the file's role. Each of them
is an event read, parsed and dispatched on the observer's threads, then dropped by the watch's own path filter.

    .venv/bin/python bench/watch_events.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.stack import Stack  # noqa: E402
from watchdog.events import FileSystemEvent, FileSystemEventHandler  # noqa: E402

from rollbackd.config.model import load_config  # noqa: E402
from rollbackd.host.http_client import HttpClient  # noqa: E402
from rollbackd.probes import ProbeContext, build_probes, observe  # noqa: E402
from rollbackd.probes.base import Probe  # noqa: E402
from rollbackd.state.state_dir import StateDir  # noqa: E402
from rollbackd.target.watch import SharedObserver  # noqa: E402


def role(path: str) -> str:
    name = Path(path).name
    for suffix in ("-shm", "-wal", "-journal"):
        if name.endswith(suffix):
            return f"database {suffix}"
    if name.endswith(".db"):
        return "database"
    if name.endswith(".log"):
        return "log"
    return name


class Counting(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: Counter[tuple[str, str]] = Counter()

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
        self.events[(event.event_type, "directory" if event.is_directory else role(path))] += 1


async def every_second(probe: Probe, until: float) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        await observe(probe)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def run(stack: Stack, seconds: float) -> Counting:
    service = load_config(stack.config_path).service[0]
    state_dir = StateDir(stack.state_dir)
    state_dir.ensure()
    counting = Counting()
    shared = SharedObserver()
    shared.watch(counting, service.code_dir.resolve())
    try:
        async with HttpClient() as client:
            probes = build_probes(service, ProbeContext(http=client, state_dir=state_dir))
            for probe in probes:  # first runs: baselines, the vault, psutil
                await observe(probe)
            await asyncio.sleep(1.0)
            counting.events.clear()
            until = time.monotonic() + seconds
            await asyncio.gather(*(every_second(probe, until) for probe in probes))
    finally:
        shared.stop()
    return counting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-watch-") as root:
        stack = Stack(Path(root), rooms=2000, players=4000, probe_every="1s")
        try:
            stack.set_up()
            counting = asyncio.run(run(stack, args.seconds))
        finally:
            stack.tear_down()
    total = sum(counting.events.values())
    print(f"events dispatched for the code dir, every probe at 1 s, {args.seconds:.0f} s: {total / args.seconds:.1f}/s")
    for (kind, what), count in counting.events.most_common():
        print(f"  {kind:<10} {what:<22} {count / args.seconds:6.1f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
