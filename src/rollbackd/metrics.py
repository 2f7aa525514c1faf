"""Every Prometheus metric rollbackd exports, defined once and bound to an injected registry.

Naming follows Prometheus conventions: ``rollbackd_`` prefix, base units (seconds, bytes), ``_total`` counters.
Label values are bounded: service names, probe names, fixed reason/state/action vocabularies, table names and
HTTP paths from the config. Revisions, pids and file paths appear only in the ``_info`` metrics' labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, GCCollector, Info, PlatformCollector, ProcessCollector

from rollbackd import __version__
from rollbackd.metric_families import CounterFamily, Family, GaugeFamily, GaugeSeries, HistogramFamily, HistogramSeries

PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LONG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

POLICY_STATES = ("ok", "degraded", "recovering", "verifying", "hold")
SCHEMA_STATES = ("in_sync", "db_ahead", "db_behind", "unknown_revision", "unversioned", "unknown")
# The known values of counter labels, each series created at 0 (Metrics.initialise_service). Probe-specific
# reasons (http_5xx, corrupt, zombie, ...) appear with their first failure.
PROBE_FAILURE_REASONS = ("timeout", "probe_error")
BACKUP_FAILURE_REASONS = (
    "disk_full",
    "low_space",
    "source_unavailable",
    "source_busy",
    "source_corrupt",
    "dir_unwritable",
    "verify_failed",
    "timeout",
    "io_error",
)
ACTION_OUTCOMES = ("success", "failed", "dry_run")
RELOAD_OUTCOMES = ("success", "rejected")


# What the Litestream supervisor counts in rollbackd_replication_errors_total (replication/supervisor.py).
REPLICATION_ERROR_REASONS = (
    "credentials",
    "unreachable",
    "sync",
    "exited",
    "not_wal",
    "missing_binary",
    "credentials_file",
    "config",
)


@dataclass(frozen=True)
class ProbeSeries:
    """The series of one probe of one service that every observation sets, looked up once: ``labels()`` hashes
    and validates its arguments on each call, and the daemon records several observations a second per service."""

    success: GaugeSeries
    duration_seconds: HistogramSeries
    last_run_timestamp_seconds: GaugeSeries


class Metrics:
    """The metric objects, as attributes. Tests build one per test on a fresh ``CollectorRegistry``.

    The labelled ones are plain-data families (metric_families.py: a service's series cost 98 KiB as
    prometheus_client objects, 21 KiB as these); ``created`` says whether their counters and histograms export
    ``_created``."""

    def __init__(self, registry: CollectorRegistry | None = None, *, created: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        service = ["service"]

        self.build_info = Info("rollbackd_build", "rollbackd version.", registry=r)
        self.build_info.info({"version": __version__})

        # Probes (all of them)
        self.probe_success = GaugeFamily(
            "rollbackd_probe_success", "1 if the probe's last run was ok, else 0.", ["service", "probe"], registry=r
        )
        self.probe_duration_seconds = HistogramFamily(
            "rollbackd_probe_duration_seconds",
            "How long a probe run took.",
            ["service", "probe"],
            bounds=PROBE_BUCKETS,
            registry=r,
            created=created,
        )
        self.probe_failures = CounterFamily(
            "rollbackd_probe_failures",
            "Failed probe runs, by reason (timeout, connect_refused, http_5xx, corrupt, ...).",
            ["service", "probe", "reason"],
            registry=r,
            created=created,
        )
        self.probe_last_run_timestamp_seconds = GaugeFamily(
            "rollbackd_probe_last_run_timestamp_seconds",
            "When the probe last finished (Unix time).",
            ["service", "probe"],
            registry=r,
        )

        # HTTP health and latency (path labels come from the config, so they are bounded)
        self.http_request_duration_seconds = HistogramFamily(
            "rollbackd_http_request_duration_seconds",
            "Latency of probe requests to the service.",
            ["service", "path"],
            bounds=HTTP_BUCKETS,
            registry=r,
            created=created,
        )
        # The window's percentiles as gauges (no summary: its _count/_sum would cover only the window and reset);
        # rate() and histogram_quantile() belong on rollbackd_http_request_duration_seconds.
        self.http_latency_window_percentile_seconds = GaugeFamily(
            "rollbackd_http_latency_window_percentile_seconds",
            "Latency percentile (50, 95, 99) over the latency probe's rolling window: what the policy compares.",
            ["service", "path", "percentile"],
            registry=r,
        )
        self.http_latency_window_samples = GaugeFamily(
            "rollbackd_http_latency_window_samples",
            "Requests in the latency probe's rolling window.",
            ["service", "path"],
            registry=r,
        )
        self.http_error_ratio = GaugeFamily(
            "rollbackd_http_error_ratio",
            "Share of failed requests in the rolling window.",
            ["service", "path"],
            registry=r,
        )
        self.health_status_code = GaugeFamily(
            "rollbackd_health_status_code", "HTTP status of the last health check (0: no answer).", service, registry=r
        )

        # SQLite
        self.sqlite_write_lock_held = GaugeFamily(
            "rollbackd_sqlite_write_lock_held", "1 while a writer holds the database's write lock.", service, registry=r
        )
        self.sqlite_write_lock_held_seconds = GaugeFamily(
            "rollbackd_sqlite_write_lock_held_seconds",
            "How long the current holder has held the write lock (0 when free).",
            service,
            registry=r,
        )
        self.sqlite_wal_size_bytes = GaugeFamily(
            "rollbackd_sqlite_wal_size_bytes", "Size of the -wal file (0 when absent).", service, registry=r
        )
        self.sqlite_hot_journal = GaugeFamily(
            "rollbackd_sqlite_hot_journal",
            "1 when a rollback journal was left behind by a crashed writer.",
            service,
            registry=r,
        )
        self.sqlite_check_ok = GaugeFamily(
            "rollbackd_sqlite_check_ok",
            "1 if the last check passed (check: quick, full, foreign_keys, indexes).",
            ["service", "check"],
            registry=r,
        )
        self.sqlite_missing_indexes = GaugeFamily(
            "rollbackd_sqlite_missing_indexes", "Expected indexes that are missing.", service, registry=r
        )
        self.sqlite_database_size_bytes = GaugeFamily(
            "rollbackd_sqlite_database_size_bytes", "Size of the main database file.", service, registry=r
        )

        # Schema (Alembic)
        self.schema_in_sync = GaugeFamily(
            "rollbackd_schema_in_sync", "1 when the database revision equals the code's head.", service, registry=r
        )
        self.schema_state = GaugeFamily(
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
        self.vault_scripts = GaugeFamily(
            "rollbackd_vault_scripts", "Migration scripts kept in the script vault.", service, registry=r
        )

        # Rows
        self.table_rows = GaugeFamily(
            "rollbackd_table_rows", "Row count of a watched table.", ["service", "table"], registry=r
        )

        # The watched service's process (rollbackd's own is process_* and python_*, from the collectors below)
        self.service_process_up = GaugeFamily(
            "rollbackd_service_process_up", "1 if the service's main process is alive.", service, registry=r
        )
        self.service_process_cpu_ratio = GaugeFamily(
            "rollbackd_service_process_cpu_ratio",
            "CPU used by the service process, as a share of one core.",
            service,
            registry=r,
        )
        self.service_process_resident_memory_bytes = GaugeFamily(
            "rollbackd_service_process_resident_memory_bytes", "RSS of the service process.", service, registry=r
        )
        self.service_process_open_fds = GaugeFamily(
            "rollbackd_service_process_open_fds", "Open file descriptors of the service process.", service, registry=r
        )
        self.service_process_start_time_seconds = GaugeFamily(
            "rollbackd_service_process_start_time_seconds",
            "Start time of the service process (Unix time).",
            service,
            registry=r,
        )

        # Backups
        self.backup_last_success_timestamp_seconds = GaugeFamily(
            "rollbackd_backup_last_success_timestamp_seconds",
            "When the last verified backup finished.",
            service,
            registry=r,
        )
        self.backup_duration_seconds = HistogramFamily(
            "rollbackd_backup_duration_seconds",
            "How long a backup took, verification included.",
            service,
            bounds=LONG_BUCKETS,
            registry=r,
            created=created,
        )
        self.backups = GaugeFamily("rollbackd_backups", "Verified backups on disk.", service, registry=r)
        self.backup_size_bytes = GaugeFamily(
            "rollbackd_backup_size_bytes", "Size of the newest verified backup.", service, registry=r
        )
        self.backup_failures = CounterFamily(
            "rollbackd_backup_failures",
            "Backups that failed (reason: disk_full, source_unavailable, verify_failed, io_error, ...).",
            ["service", "reason"],
            registry=r,
            created=created,
        )
        self.backup_last_drill_success_timestamp_seconds = GaugeFamily(
            "rollbackd_backup_last_drill_success_timestamp_seconds",
            "When a restore drill last proved a backup restorable.",
            service,
            registry=r,
        )
        self.backup_drill_failures = CounterFamily(
            "rollbackd_backup_drill_failures", "Restore drills that failed.", service, registry=r, created=created
        )
        self.backups_pruned = CounterFamily(
            "rollbackd_backups_pruned", "Backups removed by rotation.", service, registry=r, created=created
        )

        # Policy and recovery
        self.policy_state = GaugeFamily(
            "rollbackd_policy_state", "1 for the service's current policy state.", ["service", "state"], registry=r
        )
        self.recovery_actions = CounterFamily(
            "rollbackd_recovery_actions",
            "Recovery actions taken (outcome: success, failed, dry_run, refused).",
            ["service", "action", "outcome"],
            registry=r,
            created=created,
        )
        self.recovery_duration_seconds = HistogramFamily(
            "rollbackd_recovery_duration_seconds",
            "Time from an incident's detection to its verified recovery.",
            service,
            bounds=LONG_BUCKETS,
            registry=r,
            created=created,
        )
        self.incidents = CounterFamily(
            "rollbackd_incidents", "Incidents opened, by rule.", ["service", "rule"], registry=r, created=created
        )
        self.deploy_window_open = GaugeFamily(
            "rollbackd_deploy_window_open", "1 while a deploy window is open.", service, registry=r
        )
        self.notifications_failed = CounterFamily(
            "rollbackd_notifications_failed",
            "Alerts (webhook or Alertmanager) not delivered after their retries.",
            service,
            registry=r,
            created=created,
        )

        # Replication (Litestream): set by the replication probe and the supervisor of the child
        self.replication_up = GaugeFamily(
            "rollbackd_replication_up",
            "1 when the replica answers and (managed) the Litestream child runs.",
            service,
            registry=r,
        )
        self.replication_lag_seconds = GaugeFamily(
            "rollbackd_replication_lag_seconds",
            "Seconds between the database's last commit and the newest transaction in the replica.",
            service,
            registry=r,
        )
        self.replication_max_lag_seconds = GaugeFamily(
            "rollbackd_replication_max_lag_seconds",
            "The configured replication.max_lag (the lag alert's threshold).",
            service,
            registry=r,
        )
        self.replication_last_replicated_timestamp_seconds = GaugeFamily(
            "rollbackd_replication_last_replicated_timestamp_seconds",
            "When the newest transaction in the replica was replicated (Unix time).",
            service,
            registry=r,
        )
        self.replication_last_snapshot_timestamp_seconds = GaugeFamily(
            "rollbackd_replication_last_snapshot_timestamp_seconds",
            "When the replica's newest full snapshot was taken (Unix time).",
            service,
            registry=r,
        )
        self.replication_errors = CounterFamily(
            "rollbackd_replication_errors",
            "Replication errors (reason: credentials, unreachable, sync, exited, not_wal, missing_binary, ...).",
            ["service", "reason"],
            registry=r,
            created=created,
        )

        # Replica drills (replication/drill.py): the replica restored into scratch and verified, on a schedule
        self.replication_last_drill_success_timestamp_seconds = GaugeFamily(
            "rollbackd_replication_last_drill_success_timestamp_seconds",
            "When a replica drill last proved the replica restorable (restored into scratch, fully checked).",
            service,
            registry=r,
        )
        self.replication_drill_failures = CounterFamily(
            "rollbackd_replication_drill_failures", "Replica drills that failed.", service, registry=r, created=created
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
        self.probe_staleness_seconds = GaugeFamily(
            "rollbackd_probe_staleness_seconds",
            "How far past its (stretched) interval the probe's last completed run is.",
            ["service", "probe"],
            registry=r,
        )
        self.probe_interval_seconds = GaugeFamily(
            "rollbackd_probe_interval_seconds",
            "The probe's interval now: the configured one, or stretched while the daemon is overloaded.",
            ["service", "probe"],
            registry=r,
        )
        self.probe_inconclusive = CounterFamily(
            "rollbackd_probe_inconclusive",
            "Failed probe runs taken while the daemon itself lagged: they prove nothing and no rule counts them.",
            ["service", "probe"],
            registry=r,
            created=created,
        )
        self.worker_queue_depth = Gauge(
            "rollbackd_worker_queue_depth", "Blocking jobs waiting for a worker thread.", registry=r
        )
        self.cpu_ratio = Gauge(
            "rollbackd_cpu_ratio", "CPU time the daemon used per second of wall time (1 = one core).", registry=r
        )
        self.config_reloads = CounterFamily(
            "rollbackd_config_reloads",
            "Config reloads (outcome: success, rejected).",
            ["outcome"],
            registry=r,
            created=created,
        )
        for outcome in RELOAD_OUTCOMES:
            self.config_reloads.labels(outcome=outcome)

        # rollbackd's own process (process_*), interpreter (python_info) and GC (python_gc_*), as every
        # Python exporter has them: a custom registry does not get them by default.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._probe_series: dict[tuple[str, str], ProbeSeries] = {}  # probe_series(): looked up once each

    def initialise_service(self, service: str, probes: Iterable[str], rules: Mapping[str, Iterable[str]]) -> None:
        """Create every labelled counter's series of ``service`` at 0, so increase() and the dashboard see a
        healthy install as 0, not as "no data", and the first failure is an increase from 0.

        ``rules`` maps each policy rule's name to the action kinds of its ladder.
        """
        self.notifications_failed.labels(service=service)
        self.backup_drill_failures.labels(service=service)
        self.backups_pruned.labels(service=service)
        for reason in BACKUP_FAILURE_REASONS:
            self.backup_failures.labels(service=service, reason=reason)
        for probe in probes:
            for reason in PROBE_FAILURE_REASONS:
                self.probe_failures.labels(service=service, probe=probe, reason=reason)
        for rule, actions in rules.items():
            self.incidents.labels(service=service, rule=rule)
            for action in actions:
                if action in ("alert", "hold"):
                    continue
                for outcome in ACTION_OUTCOMES:
                    self.recovery_actions.labels(service=service, action=action, outcome=outcome)

    def initialise_replication(self, service: str) -> None:
        """Create a replicated service's replication counters at 0 (as ``initialise_service`` does the others)."""
        self.replication_drill_failures.labels(service=service)
        for reason in REPLICATION_ERROR_REASONS:
            self.replication_errors.labels(service=service, reason=reason)

    def set_state(self, gauge: GaugeFamily, service: str, states: tuple[str, ...], current: str) -> None:
        """Set an enum-style gauge: 1 for ``current``, 0 for every other state, so each state is a series."""
        for state in states:
            gauge.labels(service=service, state=state).set(1 if state == current else 0)

    def probe_series(self, service: str, probe: str) -> ProbeSeries:
        """The labelled series of one probe of ``service`` that each observation sets (cached until
        ``forget_service``)."""
        series = self._probe_series.get((service, probe))
        if series is None:
            series = self._probe_series[(service, probe)] = ProbeSeries(
                self.probe_success.labels(service=service, probe=probe),
                self.probe_duration_seconds.labels(service=service, probe=probe),
                self.probe_last_run_timestamp_seconds.labels(service=service, probe=probe),
            )
        return series

    def forget_service(self, service: str) -> None:
        """Remove every series of a service that left the config (after a reload), so it stops being scraped."""
        for key in [key for key in self._probe_series if key[0] == service]:
            del self._probe_series[key]
        for metric in vars(self).values():
            if isinstance(metric, Family):
                if "service" in metric.labelnames:
                    metric.remove_where("service", service)
                continue
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


def daemon_metrics() -> Metrics:
    """The daemon's metrics, with the ``_created`` series off: they double the series count and no rule or
    panel reads them. (None of the prometheus_client metrics left here has a ``_created`` series.)"""
    return Metrics(created=False)
