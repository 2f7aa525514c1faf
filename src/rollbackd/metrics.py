"""Every Prometheus metric rollbackd exports, defined once and bound to an injected registry.

Naming follows Prometheus conventions: ``rollbackd_`` prefix, base units (seconds, bytes), ``_total`` counters.
Label values are bounded: service names, probe names, fixed reason/state/action vocabularies, table names and
HTTP paths from the config. Revisions, pids and file paths appear only in the ``_info`` metrics' labels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from rollbackd import __version__

PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LONG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

POLICY_STATES = ("ok", "degraded", "recovering", "verifying", "hold")
SCHEMA_STATES = ("in_sync", "db_ahead", "db_behind", "unknown_revision", "unversioned", "unknown")


class Metrics:
    """The metric objects, as attributes. Tests build one per test on a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        service = ["service"]

        self.build_info = Info("rollbackd_build", "rollbackd version.", registry=r)
        self.build_info.info({"version": __version__})

        # Probes (all of them)
        self.probe_success = Gauge(
            "rollbackd_probe_success", "1 if the probe's last run was ok, else 0.", ["service", "probe"], registry=r
        )
        self.probe_duration_seconds = Histogram(
            "rollbackd_probe_duration_seconds",
            "How long a probe run took.",
            ["service", "probe"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.probe_failures = Counter(
            "rollbackd_probe_failures",
            "Failed probe runs, by reason (timeout, connect_refused, http_5xx, corrupt, ...).",
            ["service", "probe", "reason"],
            registry=r,
        )
        self.probe_last_run_timestamp_seconds = Gauge(
            "rollbackd_probe_last_run_timestamp_seconds",
            "When the probe last finished (Unix time).",
            ["service", "probe"],
            registry=r,
        )

        # HTTP health and latency (path labels come from the config, so they are bounded)
        self.http_request_duration_seconds = Histogram(
            "rollbackd_http_request_duration_seconds",
            "Latency of probe requests to the service.",
            ["service", "path"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_latency_window_seconds = WindowSummary(
            "rollbackd_http_latency_window_seconds",
            "Latency quantiles over the latency probe's rolling window.",
            ["service", "path"],
            registry=r,
        )
        self.http_error_ratio = Gauge(
            "rollbackd_http_error_ratio",
            "Share of failed requests in the rolling window.",
            ["service", "path"],
            registry=r,
        )
        self.health_status_code = Gauge(
            "rollbackd_health_status_code", "HTTP status of the last health check (0: no answer).", service, registry=r
        )

        # SQLite
        self.sqlite_write_lock_held = Gauge(
            "rollbackd_sqlite_write_lock_held", "1 while a writer holds the database's write lock.", service, registry=r
        )
        self.sqlite_write_lock_held_seconds = Gauge(
            "rollbackd_sqlite_write_lock_held_seconds",
            "How long the current holder has held the write lock (0 when free).",
            service,
            registry=r,
        )
        self.sqlite_wal_size_bytes = Gauge(
            "rollbackd_sqlite_wal_size_bytes", "Size of the -wal file (0 when absent).", service, registry=r
        )
        self.sqlite_hot_journal = Gauge(
            "rollbackd_sqlite_hot_journal",
            "1 when a rollback journal was left behind by a crashed writer.",
            service,
            registry=r,
        )
        self.sqlite_check_ok = Gauge(
            "rollbackd_sqlite_check_ok",
            "1 if the last check passed (check: quick, full, foreign_keys, indexes).",
            ["service", "check"],
            registry=r,
        )
        self.sqlite_missing_indexes = Gauge(
            "rollbackd_sqlite_missing_indexes", "Expected indexes that are missing.", service, registry=r
        )
        self.sqlite_database_size_bytes = Gauge(
            "rollbackd_sqlite_database_size_bytes", "Size of the main database file.", service, registry=r
        )

        # Schema (Alembic)
        self.schema_in_sync = Gauge(
            "rollbackd_schema_in_sync", "1 when the database revision equals the code's head.", service, registry=r
        )
        self.schema_state = Gauge(
            "rollbackd_schema_state",
            "1 for the current schema state (in_sync, db_ahead, db_behind, unknown_revision, unversioned, unknown).",
            ["service", "state"],
            registry=r,
        )
        self.schema_revision = Info(
            "rollbackd_schema_revision",
            "Database revision and code head (the only revision labels).",
            service,
            registry=r,
        )
        self.vault_scripts = Gauge(
            "rollbackd_vault_scripts", "Migration scripts kept in the script vault.", service, registry=r
        )

        # Rows
        self.table_rows = Gauge(
            "rollbackd_table_rows", "Row count of a watched table.", ["service", "table"], registry=r
        )

        # Process
        self.process_up = Gauge(
            "rollbackd_process_up", "1 if the service's main process is alive.", service, registry=r
        )
        self.process_cpu_ratio = Gauge(
            "rollbackd_process_cpu_ratio",
            "CPU used by the service process, as a share of one core.",
            service,
            registry=r,
        )
        self.process_resident_memory_bytes = Gauge(
            "rollbackd_process_resident_memory_bytes", "RSS of the service process.", service, registry=r
        )
        self.process_open_fds = Gauge(
            "rollbackd_process_open_fds", "Open file descriptors of the service process.", service, registry=r
        )
        self.process_start_time_seconds = Gauge(
            "rollbackd_process_start_time_seconds",
            "Start time of the service process (Unix time).",
            service,
            registry=r,
        )

        # Backups
        self.backup_last_success_timestamp_seconds = Gauge(
            "rollbackd_backup_last_success_timestamp_seconds",
            "When the last verified backup finished.",
            service,
            registry=r,
        )
        self.backup_duration_seconds = Histogram(
            "rollbackd_backup_duration_seconds",
            "How long a backup took, verification included.",
            service,
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.backups = Gauge("rollbackd_backups", "Verified backups on disk.", service, registry=r)
        self.backup_size_bytes = Gauge(
            "rollbackd_backup_size_bytes", "Size of the newest verified backup.", service, registry=r
        )
        self.backup_failures = Counter(
            "rollbackd_backup_failures",
            "Backups that failed (reason: disk_full, source_unavailable, verify_failed, io_error, ...).",
            ["service", "reason"],
            registry=r,
        )
        self.backup_last_drill_success_timestamp_seconds = Gauge(
            "rollbackd_backup_last_drill_success_timestamp_seconds",
            "When a restore drill last proved a backup restorable.",
            service,
            registry=r,
        )
        self.backup_drill_failures = Counter(
            "rollbackd_backup_drill_failures", "Restore drills that failed.", service, registry=r
        )
        self.backups_pruned = Counter("rollbackd_backups_pruned", "Backups removed by rotation.", service, registry=r)

        # Policy and recovery
        self.policy_state = Gauge(
            "rollbackd_policy_state", "1 for the service's current policy state.", ["service", "state"], registry=r
        )
        self.recovery_actions = Counter(
            "rollbackd_recovery_actions",
            "Recovery actions taken (outcome: success, failed, dry_run, refused).",
            ["service", "action", "outcome"],
            registry=r,
        )
        self.recovery_duration_seconds = Histogram(
            "rollbackd_recovery_duration_seconds",
            "Time from an incident's detection to its verified recovery.",
            service,
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.incidents = Counter("rollbackd_incidents", "Incidents opened, by rule.", ["service", "rule"], registry=r)
        self.deploy_window_open = Gauge(
            "rollbackd_deploy_window_open", "1 while a deploy window is open.", service, registry=r
        )
        self.notifications_failed = Counter(
            "rollbackd_notifications_failed", "Webhook notifications that could not be delivered.", service, registry=r
        )

        # The daemon itself
        self.loop_lag_seconds = Gauge(
            "rollbackd_loop_lag_seconds",
            "How late the event loop's last tick ran (a blocked loop shows here).",
            registry=r,
        )
        # The daemon's own load (runtime/self_load.py): is the watchdog the sick one?
        self.overloaded = Gauge(
            "rollbackd_overloaded",
            "1 while the daemon's own delay (loop lag, worker wait) is past its bound: decisions on timing "
            "evidence are held.",
            registry=r,
        )
        self.probe_staleness_seconds = Gauge(
            "rollbackd_probe_staleness_seconds",
            "How far past its (stretched) interval the probe's last completed run is.",
            ["service", "probe"],
            registry=r,
        )
        self.probe_interval_seconds = Gauge(
            "rollbackd_probe_interval_seconds",
            "The probe's interval now: the configured one, or stretched while the daemon is overloaded.",
            ["service", "probe"],
            registry=r,
        )
        self.probe_inconclusive = Counter(
            "rollbackd_probe_inconclusive",
            "Failed probe runs taken while the daemon itself lagged: they prove nothing and no rule counts them.",
            ["service", "probe"],
            registry=r,
        )
        self.worker_queue_depth = Gauge(
            "rollbackd_worker_queue_depth", "Blocking jobs waiting for a worker thread.", registry=r
        )
        self.cpu_ratio = Gauge(
            "rollbackd_cpu_ratio", "CPU time the daemon used per second of wall time (1 = one core).", registry=r
        )
        self.config_reloads = Counter(
            "rollbackd_config_reloads", "Config reloads (outcome: success, rejected).", ["outcome"], registry=r
        )

    def set_state(self, gauge: Gauge, service: str, states: tuple[str, ...], current: str) -> None:
        """Set an enum-style gauge: 1 for ``current``, 0 for every other state, so each state is a series."""
        for state in states:
            gauge.labels(service=service, state=state).set(1 if state == current else 0)

    def forget_service(self, service: str) -> None:
        """Remove every series of a service that left the config (after a reload), so it stops being scraped."""
        for metric in vars(self).values():
            labelnames = getattr(metric, "_labelnames", ())
            if "service" not in labelnames:
                continue
            stale = set()
            for family in metric.collect():
                for sample in family.samples:
                    if sample.labels.get("service") == service:
                        stale.add(tuple(sample.labels[name] for name in labelnames))
            for labels in stale:
                metric.remove(*labels)


class WindowSummary(Collector):
    """A summary whose quantiles, count and sum are computed elsewhere over a rolling window (the latency probe's).

    Prometheus accepts a ``quantile`` label only on a summary (promtool rejects it on a gauge), and
    prometheus_client's own Summary cannot be given precomputed quantiles; so this collector exposes the latest
    window as ``name{quantile=...}``, ``name_count`` and ``name_sum``.
    """

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str], registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._windows: dict[tuple[str, ...], tuple[dict[float, float], float, float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, labels: Mapping[str, str], quantiles: Mapping[float, float], count: float, total: float) -> None:
        key = tuple(labels[name] for name in self._labelnames)
        with self._lock:
            self._windows[key] = (dict(quantiles), count, total)

    def remove(self, *labelvalues: str) -> None:
        with self._lock:
            self._windows.pop(tuple(labelvalues), None)

    def describe(self) -> list[Metric]:
        return [Metric(self._name, self._documentation, "summary")]

    def collect(self) -> list[Metric]:
        metric = Metric(self._name, self._documentation, "summary")
        with self._lock:
            windows = list(self._windows.items())
        for key, (quantiles, count, total) in windows:
            labels = dict(zip(self._labelnames, key, strict=True))
            for quantile, value in sorted(quantiles.items()):
                metric.add_sample(self._name, {**labels, "quantile": str(quantile)}, value)
            metric.add_sample(f"{self._name}_count", labels, count)
            metric.add_sample(f"{self._name}_sum", labels, total)
        return [metric]
