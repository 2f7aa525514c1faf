"""CPU a second of the daemon's reads of what other processes may change (service locks, deploy windows, blocked
revisions), for N services, in this process: each service's own hop as the runtimes read before (its lock
inspected, two state-DB queries, in a worker thread of its own) against runtime/external_reads.py (one hop for all
services; a query only when the state DB's change stamp moved, a lock read only when its stat changed).

Each round stands for one second of the daemon: every service asks once, as its first evaluation in that second
does, and every ``--schema-every`` rounds its schema probe's reading notes the code version (git's files; before:
a hop of its own). The refresh clock is stepped by a second a round, so nothing sleeps; CPU is this process's
(all threads).

    .venv/bin/python bench/external_reads_cost.py --services 50 --rounds 400 --schema-every 10
    .venv/bin/python bench/external_reads_cost.py --services 1 --rounds 2000 --schema-every 1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rollbackd.config.model import ServiceConfig, parse_config  # noqa: E402
from rollbackd.policy.deploys import DeployTracker  # noqa: E402
from rollbackd.runtime.external_reads import ExternalReads  # noqa: E402
from rollbackd.state.history import History  # noqa: E402
from rollbackd.state.service_lock import ServiceLock  # noqa: E402


def services(root: Path, count: int) -> list[ServiceConfig]:
    blocks = "".join(
        f'[[service]]\nname = "svc-{index}"\nworkdir = "{root}"\ndatabase = "svc-{index}.db"\n'
        f'base_url = "http://127.0.0.1:9"\n\n'
        for index in range(count)
    )
    return parse_config(f'[daemon]\nstate_dir = "{root / "state"}"\n\n{blocks}', root / "bench.toml").service


def per_service_read(lock: ServiceLock, deploys: DeployTracker, history: History, name: str) -> object:
    """What each ServiceRuntime read in its own hop before (main at 3fb303b: ``_read_external``)."""
    return lock.inspect(), deploys.window(), frozenset(history.blocked_revisions(name))


async def before(history: History, state: Path, trackers: list[DeployTracker], rounds: int, schema: int) -> float:
    locks = [ServiceLock(state, tracker.service.name, "") for tracker in trackers]
    started = time.process_time()
    for round_ in range(rounds):
        for lock, tracker in zip(locks, trackers, strict=True):
            _holder, window, _blocked = await asyncio.to_thread(
                per_service_read, lock, tracker, history, tracker.service.name
            )
            if round_ % schema == 0:
                await asyncio.to_thread(tracker.note_code_version, window is not None)
    return (time.process_time() - started) / rounds


async def after(
    history: History, state: Path, trackers: list[DeployTracker], rounds: int, schema: int
) -> tuple[float, int]:
    now = [0.0]
    reads = ExternalReads(history, state, monotonic=lambda: now[0])
    watches = [reads.watch(tracker.service.name, tracker) for tracker in trackers]
    for watch in watches:
        await watch.get()  # the first read of each (not a steady second)
    hops = reads.hops
    started = time.process_time()
    for round_ in range(rounds):
        now[0] += 1.0
        for watch in watches:
            if round_ % schema == 0:
                await watch.note_code_version()
            await watch.get()
    return (time.process_time() - started) / rounds, reads.hops - hops


async def measure(count: int, rounds: int, schema: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rollbackd-external-") as directory:
        root = Path(directory)
        (root / ".git" / "refs" / "heads").mkdir(parents=True)  # the code dir is a checkout: git_head reads it
        (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (root / ".git" / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
        configs = services(root, count)
        state = root / "state"
        history = History(state / "rollbackd.db")
        history.upgrade()
        trackers = [DeployTracker(service, history, time.time) for service in configs]
        for service in configs:  # every lock file exists and names a past holder, as after a backup
            with ServiceLock(state, service.name, "backup (scheduled)"):
                pass
        history.block_revision(configs[0].name, "bad1", "data loss", None)
        old = await before(history, state, trackers, rounds, schema)
        new, hops = await after(history, state, trackers, rounds, schema)
        print(f"{count} services, {rounds} rounds (one round = one second of the daemon), schema every {schema} s")
        old_hops = count * (1 + 1 / schema)
        print(f"  per-service hops (before): {old * 1000:.2f} ms CPU a second, {old_hops:.1f} hops a second")
        print(f"  shared reader (after):     {new * 1000:.2f} ms CPU a second, {hops / rounds:.1f} hop(s) a second")
        history.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--schema-every", type=int, default=10, help="rounds between schema readings (default 10)")
    args = parser.parse_args()
    asyncio.run(measure(args.services, args.rounds, args.schema_every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
