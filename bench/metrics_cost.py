"""What rollbackd's metrics cost per write, per scrape and per service (issue 13): the series of N services as the
daemon creates them (initialise_service, every probe's series, the enum gauges), then timed writes through
``labels()`` and a timed ``generate_latest`` of the whole registry, and the traced memory of one service's series.

    .venv/bin/python bench/metrics_cost.py --services 20
    PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/metrics_cost.py --services 20   # compare

Runs against whichever ``rollbackd`` is imported, so a checkout of another commit on PYTHONPATH measures that one.
"""

from __future__ import annotations

import argparse
import gc
import sys
import timeit
import tracemalloc

from prometheus_client import CollectorRegistry, generate_latest

import rollbackd.metrics
from rollbackd.metrics import POLICY_STATES, SCHEMA_STATES, Metrics
from rollbackd.probes import PROBE_NAMES

RULES = {"integrity-failed": ["stop", "restore", "hold"], "health-down": ["restart", "alert"]}


def populate(metrics: Metrics, service: str) -> None:
    """The series one service has once every probe ran (what /metrics shows for it)."""
    metrics.initialise_service(service, PROBE_NAMES, RULES)
    for probe in PROBE_NAMES:
        series = metrics.probe_series(service, probe)
        series.success.set(1)
        series.duration_seconds.observe(0.004)
        series.last_run_timestamp_seconds.set(1.7e9)
        metrics.probe_staleness_seconds.labels(service=service, probe=probe).set(0)
        metrics.probe_interval_seconds.labels(service=service, probe=probe).set(5)
        metrics.probe_inconclusive.labels(service=service, probe=probe).inc(0)
    for path in ("/health", "/api/rooms"):
        metrics.http_request_duration_seconds.labels(service=service, path=path).observe(0.01)
    metrics.set_state(metrics.policy_state, service, POLICY_STATES, "ok")
    metrics.set_state(metrics.schema_state, service, SCHEMA_STATES, "in_sync")
    for check in ("quick", "full", "foreign_keys", "indexes"):
        metrics.sqlite_check_ok.labels(service=service, check=check).set(1)
    for table in ("game_rooms", "players", "game_room_participants"):
        metrics.table_rows.labels(service=service, table=table).set(100)
    metrics.backup_duration_seconds.labels(service=service).observe(2)
    for gauge in (metrics.health_status_code, metrics.sqlite_wal_size_bytes, metrics.service_process_up):
        gauge.labels(service=service).set(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    print(f"rollbackd from {rollbackd.metrics.__file__}")
    tracemalloc.start()
    metrics = Metrics(CollectorRegistry())
    populate(metrics, "s0")
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(1, args.services):
        populate(metrics, f"s{index}")
    gc.collect()
    per_service = (tracemalloc.get_traced_memory()[0] - before) / max(1, args.services - 1)
    tracemalloc.stop()
    text = generate_latest(metrics.registry)
    lines = [line for line in text.decode().splitlines() if 'service="s0"' in line]
    print(f"{args.services} services: {len(text.splitlines())} lines on /metrics, {len(lines)} samples per service")
    print(f"traced memory per service's series: {per_service / 1024:.1f} KiB")
    gauge, histogram = metrics.sqlite_check_ok, metrics.probe_duration_seconds
    child = gauge.labels(service="s0", check="quick")
    n = args.writes
    timings = {
        "labels(service=, check=).set()": timeit.timeit(
            lambda: gauge.labels(service="s0", check="quick").set(1), number=n
        ),
        "labels(service=, probe=).observe()": timeit.timeit(
            lambda: histogram.labels(service="s0", probe="health").observe(0.004), number=n
        ),
        "looked-up series .set()": timeit.timeit(lambda: child.set(1), number=n),
    }
    for name, seconds in timings.items():
        print(f"  {name:<40} {seconds / n * 1e6:6.2f} us")
    scrape = timeit.timeit(lambda: generate_latest(metrics.registry), number=args.scrapes) / args.scrapes
    print(f"  generate_latest (one scrape)             {scrape * 1e3:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
