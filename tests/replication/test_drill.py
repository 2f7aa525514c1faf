"""Replica drills: the real replica restored into scratch and checked, the result kept and exported; a replica
whose files are damaged fails its drill, counted for RollbackdReplicaDrillFailed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from rollbackd.metrics import Metrics
from rollbackd.replication.drill import ReplicaDrills, last_replica_drill, run_replica_drill

from .test_restore import add_players, replicated  # noqa: F401 - the fixture


def test_a_drill_proves_the_replica_and_a_damaged_replica_fails_it(tmp_path: Path, replicated: tuple) -> None:  # type: ignore[type-arg]  # noqa: F811
    service, state_dir, child = replicated
    metrics = Metrics(CollectorRegistry())
    add_players(service.database, "drilled")
    child.wait_replicated(tmp_path, "drilled")
    labels = {"service": "vbrpg"}

    passed = run_replica_drill(service, state_dir=state_dir, metrics=metrics, clock=lambda: 1_800_000_000.0)

    assert passed.ok, passed.detail
    assert "integrity ok, foreign keys ok" in passed.detail and "9 rows" in passed.detail  # 4 players, 2 rooms, 3 seats
    success = "rollbackd_replication_last_drill_success_timestamp_seconds"
    assert metrics.registry.get_sample_value(success, labels) == 1_800_000_000.0
    assert last_replica_drill(service, state_dir) == passed
    assert not list(state_dir.scratch.glob("replica-drill-*"))  # nothing kept
    assert list(service.backups.dir.glob("*.db")) == []  # a drill makes no backup
    drills = ReplicaDrills(service, state_dir=state_dir, metrics=metrics, clock=lambda: 1_800_000_000.0)
    drills.last = passed
    assert drills.next_due(1_800_000_000.0) == 1_800_000_000.0 + 86400  # drill_every's default, 1d

    child.stop()
    for ltx in (tmp_path / "offsite").rglob("*.ltx"):
        ltx.write_bytes(b"\0" * ltx.stat().st_size)  # the offsite copy rotted

    failed = run_replica_drill(service, state_dir=state_dir, metrics=metrics)

    assert not failed.ok
    assert metrics.registry.get_sample_value("rollbackd_replication_drill_failures_total", labels) == 1.0
    assert metrics.registry.get_sample_value(success, labels) == 1_800_000_000.0  # the last success stays
    assert last_replica_drill(service, state_dir) == failed
