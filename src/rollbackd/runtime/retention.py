"""How much of each probe's history the daemon keeps for one service: what its readers need, and no more.

The readers (grep ``observations.`` in src): the policy reads every probe of PROBE_NAMES over its lookback (the
longest rule ``for`` plus a margin) after each observation, and through it the data-loss rule, the replica
restore's "newest passing check before the fault" (``before_fault``) and the database-gone evidence; ``status``
and the log lines on a change read the latest run of every probe; metrics are set from each run as it arrives
and read nothing back. So a policy probe keeps the lookback, counted at its own cadence (its runs never come
faster: a slow run delays the next one), and the replication probe, which no rule reads, its latest run.
"""

from __future__ import annotations

from rollbackd.config.model import ServiceConfig

RETENTION_SLACK = 10  # runs beyond lookback / interval: a run's start drifts by its duration and the loop's lag
LATEST_ONLY = (1, float("inf"))  # read by `status` alone


def probe_intervals(service: ServiceConfig) -> dict[str, float]:
    """Each policy probe's interval as configured (the integrity probe runs at its quick-check cadence)."""
    probes = service.probes
    return {
        "health": probes.health.every,
        "latency": probes.latency.every,
        "sqlite_lock": probes.sqlite_lock.every,
        "integrity": probes.integrity.quick_every,
        "schema": probes.schema_.every,
        "rows": probes.rows.every,
        "process": probes.process.every,
    }


def probe_retention(service: ServiceConfig, lookback: float) -> dict[str, tuple[int, float]]:
    """(runs, seconds) of each probe of ``service`` worth keeping, given the policy's ``lookback`` in seconds."""
    retention = {
        probe: (int(lookback / every) + RETENTION_SLACK, lookback) for probe, every in probe_intervals(service).items()
    }
    retention["replication"] = LATEST_ONLY
    return retention
