"""Each probe's log keeps what its readers need: the policy's lookback at the probe's cadence, the latest run of
the replication probe (only `status` reads it); a probe without its own bounds keeps the log's (an hour)."""

from __future__ import annotations

from pathlib import Path

from rollbackd.config.model import parse_config
from rollbackd.observation import Observation, ObservationLog
from rollbackd.policy.rules import effective_rules
from rollbackd.probes import PROBE_NAMES
from rollbackd.runtime.retention import RETENTION_SLACK, probe_retention
from rollbackd.runtime.service_runtime import LOOKBACK_MARGIN

HOUR = 3600.0


def test_a_probe_keeps_what_the_policy_reads_and_a_probe_read_for_an_hour_keeps_an_hour(tmp_path: Path) -> None:
    probes = "".join(
        f'\n[service.probes.{probe}]\n{"quick_every" if probe == "integrity" else "every"} = "1s"\n'
        for probe in PROBE_NAMES
    )
    text = '[[service]]\nname = "vbrpg"\nworkdir = "."\ndatabase = "vbrpg.db"\nbase_url = "http://127.0.0.1:8000"\n'
    service = parse_config(text + probes, tmp_path / "rollbackd.toml").service[0]
    lookback = max(rule.for_ for rule in effective_rules(service)) + LOOKBACK_MARGIN
    bounded, unbounded = ObservationLog(max_per_probe=2000, max_age=HOUR), ObservationLog(10**6, 10 * HOUR)
    bounded.retain("vbrpg", probe_retention(service, lookback))
    start, end = 100_000.0, 100_000.0 + 2 * HOUR
    at = start
    while at < end:
        for probe in (*PROBE_NAMES, "replication"):
            run = Observation("vbrpg", probe, ok=True, started_at=at)
            bounded.append(run)
            unbounded.append(run)
        if at % 2 == 0:  # a probe the daemon sets no bounds for (a plug-in's), every 2 s
            bounded.append(Observation("vbrpg", "plugin", ok=True, started_at=at))
        at += 1.0
    now = at
    for probe in PROBE_NAMES:
        kept = bounded.recent("vbrpg", probe)
        assert len(kept) <= lookback + RETENTION_SLACK  # one run a second: no more than the lookback holds
        assert kept[0].started_at >= now - lookback - 1.0
        # ... and the policy's window is exactly what it would be with everything kept.
        window, everything = bounded.window("vbrpg", probe, now - lookback), unbounded.window("vbrpg", probe, 0.0)
        assert list(window.conclusive) == list(everything.since(now - lookback, now - lookback).conclusive)
    assert bounded.recent("vbrpg", "replication") == [Observation("vbrpg", "replication", ok=True, started_at=end - 1)]
    plugin = bounded.recent("vbrpg", "plugin")
    assert plugin[-1].started_at - plugin[0].started_at >= HOUR - 2.0  # the log's own bound: an hour
    bounded.forget("vbrpg")
    for step in range(3):  # its bounds go with it: a service of that name added later starts afresh
        bounded.append(Observation("vbrpg", "replication", ok=True, started_at=end + step))
    assert len(bounded.recent("vbrpg", "replication")) == 3
