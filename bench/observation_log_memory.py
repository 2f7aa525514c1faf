"""What the observation log holds per service once it is full (issue 13): the bench runs of 60 s see a tenth of it.

The daemon keeps every probe's runs over the policy's lookback, the longest rule's ``for`` plus a margin: 720 s
with the default rules (wal-growing's 600 s + 120 s). This appends that long a stretch of runs per service, at
the default intervals, shaped as the probes make them (a lock probe's values repeat, a latency run's 19 values
and a health run's latency do not), into a real ObservationLog with the daemon's retention, and reports the
traced memory per service, in all and per probe.

    .venv/bin/python bench/observation_log_memory.py
    .venv/bin/python bench/observation_log_memory.py --lookback 180 --services 10
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tracemalloc

from rollbackd.observation import Observation, ObservationLog

EVERY = {"health": 5, "latency": 5, "sqlite_lock": 1, "integrity": 60, "schema": 10, "rows": 30, "process": 5}
RETENTION_SLACK = 10  # runtime/retention.py's


def values(probe: str) -> dict[str, float]:
    """A run's values as the probe makes them (which ones repeat from run to run, which do not)."""
    if probe == "health":
        return {"status_code": 200.0, "latency": random.random() / 100}  # noqa: S311 - not crypto
    if probe == "latency":
        made = {}
        for path in ("/api/rooms", "/health"):
            for key in ("latency", "p50", "p95", "p99", "error_ratio", "samples", "sum"):
                made[f"{path}:{key}"] = random.random()  # noqa: S311
        made.update({key: random.random() for key in ("p50", "p95", "p99", "error_ratio", "latency")})  # noqa: S311
        return made
    if probe == "process":
        return {"up": 1.0, "cpu_ratio": random.random(), "rss_bytes": 8e7, "open_fds": 12.0, "start_time": 1.7e9}  # noqa: S311
    if probe == "sqlite_lock":
        return {"held": 0.0, "held_seconds": 0.0, "wal_size_bytes": 4e6, "hot_journal": 0.0}
    return {"errors": 0.0}


def held(probes: dict[str, int], services: int, lookback: float) -> float:
    """Bytes per service the log holds after ``lookback`` + 60 s of runs of ``probes``."""
    log = ObservationLog()
    for index in range(services):
        log.retain(f"s{index}", {p: (int(lookback / every) + RETENTION_SLACK, lookback) for p, every in probes.items()})
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for second in range(int(lookback) + 60):
        for index in range(services):
            for probe, every in probes.items():
                if second % every == 0:
                    run = Observation(
                        f"s{index}",
                        probe,
                        ok=True,
                        values=values(probe),
                        started_at=1.7e9 + second,
                        duration=random.random() / 100,  # noqa: S311
                    )
                    log.append(run)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return total / services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--lookback", type=float, default=720.0, help="seconds the log keeps (rules' for + margin)")
    args = parser.parse_args()
    print(f"lookback {args.lookback:.0f} s, {args.services} services, default intervals")
    print(f"  all probes: {held(EVERY, args.services, args.lookback) / 1024:6.0f} KiB per service")
    for probe, every in EVERY.items():
        print(f"  {probe:<12} {held({probe: every}, args.services, args.lookback) / 1024:6.0f} KiB per service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
