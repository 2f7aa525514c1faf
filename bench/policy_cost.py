"""What the policy's look at a service costs after each observation, and what the observation log holds.

In this process, with no service running: a real ``ServiceRuntime`` (its policy, state DB, metrics registry)
over an ``ObservationLog`` filled as the daemon fills it, every probe at ``--every`` seconds for an hour of wall
clock (so every window is as full as retention lets it be), all runs healthy. Then:

- CPU per evaluation: ``ServiceRuntime._evaluate_once`` (what ``on_observation`` runs after every observation)
  ``--evaluations`` times, ``time.process_time()`` per call;
- CPU per ``Daemon.record`` (log append + metrics + evaluation), the same way;
- the log's size: runs kept per probe, and the memory the log of ``--services`` services holds
  (``tracemalloc``: the bytes allocated while filling it, and still held; and, in a pass without tracemalloc,
  how much this process's RSS grew while it was built).

    .venv/bin/python bench/policy_cost.py [--every 1] [--services 20] [--evaluations 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from rollbackd.config.model import Config, parse_config
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation, ObservationLog
from rollbackd.probes import PROBE_NAMES, ProbeContext, build_probes
from rollbackd.runtime.alerts import WebhookAlerts
from rollbackd.runtime.daemon import Daemon, _ServiceSlot
from rollbackd.runtime.service_runtime import ServiceRuntime
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir

HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_text(root: Path, services: int, every: str) -> str:
    text = f'[daemon]\nstate_dir = "{root / "state"}"\nmetrics_listen = ""\n'
    for index in range(services):
        database = root / f"app{index}.db"
        sqlite3.connect(database).close()
        text += f"""
[[service]]
name = "app{index}"
workdir = "{root}"
database = "{database}"
base_url = "http://127.0.0.1:9"

[service.deploy]
watch = false

[service.probes.latency]
paths = ["/api/rooms/ABC123"]
{f'every = "{every}"' if every else ""}
"""
        for probe, key in (
            ("health", "every"),
            ("sqlite_lock", "every"),
            ("integrity", "quick_every"),
            ("schema", "every"),
            ("rows", "every"),
            ("process", "every"),
        ):
            text += f"\n[service.probes.{probe}]\n" + (f'{key} = "{every}"\n' if every else "")
            if probe == "process":
                text += f'pidfile = "{root / "app.pid"}"\n'
    return text


def observed(service: str, probe: str, at: float) -> Observation:
    """A healthy run shaped as the probe makes it: its own dicts, as each real run has, and what varies from run
    to run in a real one varying here (latencies, the process's CPU and memory)."""
    values: dict[str, float]
    detail: dict[str, Any]
    jitter = (at * 7919.0) % 1.0  # deterministic, different for every run
    if probe == "health":
        values = {"latency": 0.003 + jitter / 1000, "status_code": 200.0}
        detail = {"url": "http://127.0.0.1:8000/health", "status_code": 200, "body": '{"status":"ok"}'}
    elif probe == "latency":
        path = "/api/rooms/ABC123"
        latency = 0.004 + jitter / 1000
        summary = {"latency": latency, "p50": 0.004, "p95": 0.006, "p99": latency, "samples": 12.0, "error_ratio": 0.0}
        values = {f"{path}:{key}": value for key, value in summary.items()}
        values.update({key: value for key, value in summary.items() if key != "samples"})
        detail = {path: {"status_code": 200}}
    elif probe == "sqlite_lock":
        values = {
            "held": 0.0,
            "held_seconds": 0.0,
            "wal_size_bytes": 4_000_000.0,
            "hot_journal": 0.0,
            "database_size_bytes": 100_000_000.0,
        }
        detail = {"method": "proc_locks", "journal_mode": "wal", "holders": [], "wal_readers": []}
    elif probe == "integrity":
        values = {"full": 0.0, "database_size_bytes": 100_000_000.0}
        detail = {"check": "skipped", "skipped": "unchanged since the passing quick_check"}
    elif probe == "schema":
        values = {"vault_scripts": 6.0, "in_sync": 1.0, "revisions_between": 0.0}
        detail = {
            "versions_dir": "/opt/vbrpg/backend/alembic/versions",
            "vault_stored": 0,
            "code_heads": ["0006_agents"],
            "schema_fingerprint": "9f2c" * 16,
            "state": "in_sync",
            "db_revision": "0006_agents",
            "path": [],
        }
    elif probe == "rows":
        tables = ("game_rooms", "players", "game_room_participants")
        counts = {table: 20000 for table in tables}
        values = {f"{table}:rows": 20000.0 for table in tables}
        values.update({f"{table}:drop_ratio_since_previous": 0.0 for table in tables})
        values["drop_ratio_since_revision_change"] = 0.0
        detail = {
            "revision": "0006_agents",
            "counts": counts,
            "previous": dict(counts),
            "baseline_revision": "0006_agents",
            "baseline": dict(counts),
            "drop_ratio_since_revision_change": {table: 0.0 for table in tables},
            "absent": [],
            "vanished": [],
        }
    else:
        values = {"up": 1.0, "pid": 4242.0, "cpu_ratio": jitter / 100, "rss_bytes": 60e6 + 4096 * int(jitter * 8)}
        values.update({"start_time": 1e9, "open_fds": 12.0})
        detail = {"pid": 4242, "source": "pidfile", "status": "sleeping", "name": "uvicorn"}
    return Observation(service, probe, True, "", values, detail, started_at=at, duration=0.002)


def intervals(config: Config) -> dict[str, dict[str, float]]:
    return {
        service.name: {
            "health": service.probes.health.every,
            "latency": service.probes.latency.every,
            "sqlite_lock": service.probes.sqlite_lock.every,
            "integrity": service.probes.integrity.quick_every,
            "schema": service.probes.schema_.every,
            "rows": service.probes.rows.every,
            "process": service.probes.process.every,
        }
        for service in config.service
    }


def fill(log: ObservationLog, config: Config, start: float, end: float) -> None:
    """An hour of every probe of every service, in start order, as the daemon appends them."""
    schedule = [
        (service, probe, every) for service, probes in intervals(config).items() for probe, every in probes.items()
    ]
    for service, probe, every in schedule:
        at = start
        while at < end:
            log.append(observed(service, probe, at))
            at += every


async def evaluation_cost(
    daemon: Daemon, runtime: ServiceRuntime, clock: Clock, evaluations: int
) -> tuple[float, float]:
    """CPU seconds per ``_evaluate_once`` and per ``Daemon.record`` of a healthy run (the clock moves on)."""
    await runtime._evaluate_once()  # warm-up: reads the lock, the deploy window and the blocked revisions once
    started = time.process_time()
    for _ in range(evaluations):
        await runtime._evaluate_once()
    per_evaluation = (time.process_time() - started) / evaluations
    probes = {probe.name: probe for probe in daemon.services[runtime.name].probes}
    started = time.process_time()
    for index in range(evaluations):
        probe_name = PROBE_NAMES[index % len(PROBE_NAMES)]
        clock.now += 1.0 / len(PROBE_NAMES)
        await daemon.record(probes[probe_name], observed(runtime.name, probe_name, clock.now))
    per_record = (time.process_time() - started) / evaluations
    return per_evaluation, per_record


def log_memory(config: Config, start: float, end: float) -> tuple[int, dict[str, int]]:
    """Bytes the filled log of every service holds, and the runs it keeps per probe of the first service."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    log = Daemon(config, metrics=Metrics(CollectorRegistry()), with_runtimes=False).observations
    prepare_retention(log, config)
    fill(log, config, start, end)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    first = config.service[0].name
    return held, {probe: len(log.recent(first, probe)) for probe in PROBE_NAMES}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def log_rss(config: Config, start: float, end: float) -> int:
    """RSS this process grew by while the filled log of every service was built (no tracemalloc running)."""
    gc.collect()
    before = resident_bytes()
    log = Daemon(config, metrics=Metrics(CollectorRegistry()), with_runtimes=False).observations
    prepare_retention(log, config)
    fill(log, config, start, end)
    gc.collect()
    grown = resident_bytes() - before
    del log
    return grown


def prepare_retention(log: ObservationLog, config: Config) -> None:
    """What the daemon's ServiceRuntime sets up per service before its first observation: per-probe retention
    (absent before it existed; then every probe kept the log's own bounds)."""
    try:
        from rollbackd.policy.rules import effective_rules
        from rollbackd.runtime.retention import probe_retention
        from rollbackd.runtime.service_runtime import LOOKBACK_MARGIN
    except ImportError:
        return
    for service in config.service:
        lookback = max((rule.for_ for rule in effective_rules(service)), default=0.0) + LOOKBACK_MARGIN
        log.retain(service.name, probe_retention(service, lookback))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", default="1s", help='every probe\'s interval ("" for the defaults)')
    parser.add_argument("--services", type=int, default=20, help="services whose logs are measured for memory")
    parser.add_argument("--evaluations", type=int, default=5000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        one = parse_config(config_text(root, 1, arguments.every), root / "one.toml")
        many = parse_config(config_text(root, arguments.services, arguments.every), root / "many.toml")
        end = 2_000_000_000.0
        clock = Clock(end)
        metrics = Metrics(CollectorRegistry())
        daemon = Daemon(one, metrics=metrics, clock=clock, with_runtimes=False)
        service = one.service[0]
        state_dir = StateDir(one.daemon.state_dir)
        state_dir.root.mkdir(parents=True, exist_ok=True)
        history = History(root / "state" / "history.db", clock=clock)
        history.upgrade()
        async with HttpClient() as http:
            runtime = ServiceRuntime(
                service,
                state_dir=state_dir,
                history=history,
                metrics=metrics,
                observations=daemon.observations,
                http=http,
                alerts=WebhookAlerts([], http, metrics, clock),
                dry_run=False,
                clock=clock,
            )
            context = ProbeContext(http=http, state_dir=state_dir, clock=clock)
            daemon.services[service.name] = _ServiceSlot(service, runtime, build_probes(service, context))
            prepare_retention(daemon.observations, one)
            fill(daemon.observations, one, end - HOUR, end)
            per_evaluation, per_record = await evaluation_cost(daemon, runtime, clock, arguments.evaluations)
        history.close()
        grown = log_rss(many, end - HOUR, end)
        held, kept = log_memory(many, end - HOUR, end)
    every = arguments.every or "default intervals"
    print(f"every probe at {every}; runs kept per probe: {kept}")
    print(f"ServiceRuntime._evaluate_once: {per_evaluation * 1e6:.0f} µs CPU per call ({arguments.evaluations} calls)")
    print(f"Daemon.record (log, metrics, evaluation): {per_record * 1e6:.0f} µs CPU per observation")
    print(
        f"observation log of {arguments.services} services: {held / 2**20:.1f} MiB held (tracemalloc), "
        f"RSS +{grown / 2**20:.1f} MiB while it was built"
    )


if __name__ == "__main__":
    asyncio.run(main())
