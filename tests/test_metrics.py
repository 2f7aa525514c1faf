"""The metrics an SRE reads: counters at 0 before the first event, rollbackd's own process series beside the
watched service's, no ``_created`` series from the daemon's registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, enable_created_metrics, generate_latest

from rollbackd.metrics import BACKUP_FAILURE_REASONS, Metrics, daemon_metrics


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def test_a_healthy_service_has_every_failure_counter_at_zero(metrics: Metrics) -> None:
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_notifications_failed_total", {"service": "vbrpg"}) is None
    metrics.initialise_service("vbrpg", ["health", "integrity"], {"integrity_failed": ["stop", "restore", "hold"]})
    assert sample("rollbackd_notifications_failed_total", {"service": "vbrpg"}) == 0
    assert sample("rollbackd_backup_drill_failures_total", {"service": "vbrpg"}) == 0
    assert sample("rollbackd_backups_pruned_total", {"service": "vbrpg"}) == 0
    for reason in BACKUP_FAILURE_REASONS:
        assert sample("rollbackd_backup_failures_total", {"service": "vbrpg", "reason": reason}) == 0
    timeouts = {"service": "vbrpg", "probe": "integrity", "reason": "timeout"}
    assert sample("rollbackd_probe_failures_total", timeouts) == 0
    assert sample("rollbackd_incidents_total", {"service": "vbrpg", "rule": "integrity_failed"}) == 0
    for outcome in ("success", "failed", "dry_run"):
        labels = {"service": "vbrpg", "action": "restore", "outcome": outcome}
        assert sample("rollbackd_recovery_actions_total", labels) == 0
    # "hold" is not an action that runs: no series for it
    held = {"service": "vbrpg", "action": "hold", "outcome": "failed"}
    assert sample("rollbackd_recovery_actions_total", held) is None
    assert sample("rollbackd_config_reloads_total", {"outcome": "rejected"}) == 0
    metrics.forget_service("vbrpg")  # a service dropped on reload leaves no zero series behind
    assert sample("rollbackd_notifications_failed_total", {"service": "vbrpg"}) is None


def test_rollbackds_own_process_is_exported_apart_from_the_services(metrics: Metrics) -> None:
    metrics.service_process_up.labels(service="vbrpg").set(1)
    names = {family.name for family in metrics.registry.collect()}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= (
        names
    )
    assert "rollbackd_service_process_resident_memory_bytes" in names
    assert not any(name.startswith("rollbackd_process_") for name in names)
    assert (metrics.registry.get_sample_value("process_resident_memory_bytes") or 0) > 0


@pytest.fixture
def created_metrics_restored() -> Iterator[None]:
    yield
    enable_created_metrics()  # prometheus_client keeps the switch process-wide: give other tests theirs back


@pytest.mark.usefixtures("created_metrics_restored")
def test_the_daemons_registry_has_no_created_series() -> None:
    plain = Metrics(CollectorRegistry())
    plain.initialise_service("vbrpg", ["health"], {})
    assert b"_created" in generate_latest(plain.registry)
    daemon = daemon_metrics()
    daemon.initialise_service("vbrpg", ["health"], {})
    daemon.probe_duration_seconds.labels(service="vbrpg", probe="health").observe(0.01)
    assert b"_created" not in generate_latest(daemon.registry)
