"""The rollbackd config text the tests give a daemon watching the example service: the [daemon] table, one
[[service]] with every probe on a short interval, its `command` control, the example's smoke steps and the
built-in rules at short durations. One place for them, so every harness runs the daemon the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tests.support.detached_service import DetachedService, ExampleInstance

# What `rollbackd verify` (and every recovery's verification) does against the example: a room created, joined,
# given an AI agent and taken down again; the cleanup steps remove what a step that failed half-way left behind,
# so a recovery leaves the tables as it found them.
SMOKE = """
[[service.verify.smoke]]
name = "create room"
method = "POST"
path = "/api/rooms"
json = { name = "rollbackd smoke", host_name = "rollbackd-smoke-host" }
expect_status = [201]
capture = { code = "code" }

[[service.verify.smoke]]
name = "join room"
method = "POST"
path = "/api/rooms/{code}/join"
json = { player_name = "rollbackd-smoke-player" }
expect_status = [200, 201]

[[service.verify.smoke]]
name = "add AI agent"
method = "POST"
path = "/api/rooms/{code}/agents"
expect_status = [200, 201]

[[service.verify.smoke]]
name = "remove AI agent"
method = "DELETE"
path = "/api/rooms/{code}/agents"

[[service.verify.smoke]]
name = "leave room"
method = "POST"
path = "/api/rooms/{code}/leave"
json = { player_name = "rollbackd-smoke-player" }

[[service.verify.smoke]]
name = "delete room"
method = "DELETE"
path = "/api/rooms/{code}"
expect_status = [200, 204]
cleanup = true

[[service.verify.smoke]]
name = "remove smoke player"
method = "DELETE"
path = "/api/players/rollbackd-smoke-player"
expect_status = [200, 404]
cleanup = true

[[service.verify.smoke]]
name = "remove smoke host"
method = "DELETE"
path = "/api/players/rollbackd-smoke-host"
expect_status = [200, 404]
cleanup = true
"""

# Shorter "for" durations than the defaults, so each scenario takes seconds; the logic is the built-in rules'.
FAST_RULES = """
[[service.rules]]
name = "health-failing"
for = "2s"

[[service.rules]]
name = "post-deploy-health"
for = "2s"

[[service.rules]]
name = "migration-failed"
for = "2s"

[[service.rules]]
name = "schema-ahead"
for = "1s"

[[service.rules]]
name = "process-down"
for = "1s"
"""


def daemon_toml(
    state_dir: Path,
    metrics_port: int | None,
    *,
    shutdown_timeout: str = "20s",
    dry_run: bool = False,
    log_level: str | None = "info",
) -> str:
    """The [daemon] table; ``metrics_port`` None: no /metrics listener. Keys left out take their defaults (no
    dry_run line unless it is on, so a test may still add one)."""
    listen = f"127.0.0.1:{metrics_port}" if metrics_port else ""
    level = f'log_level = "{log_level}"' if log_level else ""
    return f"""
[daemon]
state_dir = "{state_dir}"
metrics_listen = "{listen}"
{"dry_run = true" if dry_run else ""}
shutdown_timeout = "{shutdown_timeout}"
{level}
"""


def probes_toml(
    *,
    every: str | None = "200ms",
    process: str,
    health_every: str | None = None,
    health_timeout: str | None = "2s",
    integrity_every: str | None = None,
    full_every: str | None = "1h",
    latency_path: str | None = None,
    latency_window: str | None = None,
) -> str:
    """Every probe's table, each on ``every`` (None: the probe's default interval); ``process`` is the process
    probe's way to find the service (`pidfile = "..."` or `match = [...]`); no ``latency_path``: latency off."""

    def line(key: str, value: str | None) -> str:
        return f'{key} = "{value}"' if value else ""

    latency = f'paths = ["{latency_path}"]' if latency_path else "enabled = false"
    return f"""
[service.probes.health]
{line("every", health_every or every)}
{line("timeout", health_timeout)}

[service.probes.latency]
{latency}
{line("every", every)}
{line("window", latency_window)}

[service.probes.sqlite_lock]
{line("every", every)}

[service.probes.integrity]
{line("quick_every", integrity_every or every)}
{line("full_every", full_every)}

[service.probes.schema]
{line("every", every)}

[service.probes.rows]
{line("every", every)}

[service.probes.process]
{line("every", every)}
{process}
"""


def control_toml(start: Sequence[object], stop: Sequence[object], *, timeout: str | None = "60s") -> str:
    """[service.control] of the `command` kind: rollbackd starts and stops the service with these argvs."""
    return f"""
[service.control]
kind = "command"
start = {json.dumps([str(part) for part in start])}
stop = {json.dumps([str(part) for part in stop])}
{f'timeout = "{timeout}"' if timeout else ""}
"""


def service_toml(
    app: ExampleInstance,
    name: str,
    *,
    every: str | None = "200ms",
    health_every: str | None = None,
    health_timeout: str | None = "2s",
    integrity_every: str | None = None,
    full_every: str | None = "1h",
    latency_path: str | None = None,
    backups_dir: Path | None = None,
    control: bool = False,
    extra: str = "",
) -> str:
    """One ``[[service]]`` for ``app`` with every probe on ``every`` (None: the defaults); ``control``: rollbackd
    may start and stop the service (the `command` kind, as the e2e stack does: `serve --detach` / `stop
    --pidfile`)."""
    control_text = ""
    if control:
        service = DetachedService.for_app(app)
        control_text = control_toml(service.start_argv(), service.stop_argv())
    probes = probes_toml(
        every=every,
        process=f'pidfile = "{app.pidfile}"',
        health_every=health_every,
        health_timeout=health_timeout,
        integrity_every=integrity_every,
        full_every=full_every,
        latency_path=latency_path,
    )
    backups = f'dir = "{backups_dir}"' if backups_dir is not None else ""
    return f"""
[[service]]
name = "{name}"
workdir = "{app.root}"
database = "{app.database}"
base_url = "{app.base_url}"

[service.alembic]
ini = "{app.app_dir / "alembic.ini"}"
{control_text}
[service.backups]
{backups}
every = "1h"
drill_every = "0s"
{probes}
{extra}
"""


def write_daemon_config(path: Path, app: ExampleInstance, metrics_port: int, room_code: str) -> Path:
    """A daemon (state beside ``path``) watching ``app`` with every probe on 200 ms, latency on one room."""
    path.write_text(
        daemon_toml(path.parent / "state", metrics_port, shutdown_timeout="10s")
        + service_toml(
            app, "vbrpg", latency_path=f"/api/rooms/{room_code}", health_timeout="1s", integrity_every="500ms"
        )
    )
    return path
