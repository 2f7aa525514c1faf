"""`rollbackd status`: what the running daemon sees and does, per service; the state DB when it is not running."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, state_db_unreadable
from rollbackd.cli.times import clock_time, table_time
from rollbackd.config.config_path import resolve_config_path
from rollbackd.config.secrets import redact_data, redact_text, secrets_in
from rollbackd.exit_codes import ExitCode
from rollbackd.units import human_size, humanize_age

if TYPE_CHECKING:
    from rollbackd.config.model import Config, ConfigError


def register(commands: Subcommands) -> None:
    command = add_command(commands, "status", "show each service's state, probes, backups and incidents", run)
    command.add_argument("service", nargs="?", help="only this service")
    command.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> ExitCode:
    from rollbackd.config.model import ConfigError
    from rollbackd.runtime.status_client import StatusSocketError, query_status

    try:
        config = load_cli_config(args)
    except ConfigError as error:
        return _despite_the_config(args, error)
    if args.service:
        config.get_service(args.service)
    try:
        status = query_status(config.daemon.socket_path)
        running = True
    except StatusSocketError as error:
        print(f"rollbackd status: {error}; showing what the state DB recorded", file=sys.stderr)
        try:
            status = recorded_status(config)
        except Exception as db_error:
            # Imported here: the state DB's error types are SQLAlchemy's, which loads only for a state DB.
            from rollbackd.state.history import STATE_DB_ERRORS, describe_state_db_error
            from rollbackd.state.state_dir import StateDir

            if not isinstance(db_error, STATE_DB_ERRORS):
                raise
            path = StateDir(config.daemon.state_dir).history_db
            return state_db_unreadable("status", path, describe_state_db_error(db_error))
        running = False
    _show(args, status, secrets_in(config))
    if not running:
        return ExitCode.UNAVAILABLE
    states = [entry.get("policy", {}).get("state") for entry in status.get("services", {}).values()]
    return ExitCode.OK if "hold" not in states else ExitCode.FAILED


def _despite_the_config(args: argparse.Namespace, error: ConfigError) -> ExitCode:
    """The config file is invalid now, but a daemon that loaded an earlier, valid one may be running: show its
    status and say that the file would be refused (by a reload, and at the next start). Exit 2 all the same."""
    from rollbackd.config.model import status_socket_of
    from rollbackd.runtime.status_client import StatusSocketError, query_status

    socket = status_socket_of(resolve_config_path(args.config, os.environ))
    if socket is None:
        raise error
    try:
        status = query_status(socket)
    except StatusSocketError:
        raise error from None
    _show(args, status)
    print(
        f"rollbackd status: the running daemon uses the config it loaded earlier; the file now would be refused "
        f"by a reload and at the next start:\n{error.render()}",
        file=sys.stderr,
    )
    return ExitCode.CONFIG


def _show(args: argparse.Namespace, status: dict[str, Any], secrets: Sequence[str] = ()) -> None:
    """Print the status, with URL credentials and the config's secrets redacted (config/secrets.py)."""
    if args.service:
        status["services"] = {args.service: status.get("services", {}).get(args.service, {})}
    if args.json:
        print_json(redact_data(status, secrets))
    else:
        print(redact_text(render(status, time.time(), utc=getattr(args, "utc", False)), secrets))


def recorded_status(config: Config) -> dict[str, Any]:
    """Without a daemon: the persisted policy state, deploy window and incidents of each service."""
    from rollbackd.backup.restore_journal import pending_summary
    from rollbackd.state.state_dir import StateDir

    services: dict[str, Any] = {}
    path = StateDir(config.daemon.state_dir).history_db
    history = None
    if path.exists():  # SQLAlchemy loads only when there is a state DB to read
        from rollbackd.state.history import History

        history = History(path)
    try:
        if history is not None:
            history.upgrade()
        for service in config.service:
            entry: dict[str, Any] = {"policy": {"state": "unknown", "reason": "the daemon is not running"}}
            if history is not None:
                state = history.load_state(service.name)
                if state is not None:
                    entry["policy"] = _recorded_policy(state.state, state.reason)
                entry["blocked_revisions"] = sorted(history.blocked_revisions(service.name))
                entry["incidents"] = [row.as_dict() for row in history.history_rows(service.name, limit=5)]
            entry["pending_restore"] = pending_summary(config.daemon.state_dir, service.name)
            services[service.name] = entry
    finally:
        if history is not None:
            history.close()
    return {"daemon": None, "services": services}


def _pending_line(pending: dict[str, Any]) -> str:
    if pending.get("state") == "unreadable":
        return f"pending restore: the journal cannot be read: {pending.get('detail')}"
    what = f"restore of {pending.get('backup')} ({pending.get('state')})"
    if pending.get("in_progress"):
        return f"{what}: in progress, {pending.get('held_by')}"
    return (
        f"pending restore: {what}, left unfinished by a process that died; the service may be stopped: "
        "`rollbackd restore --resume` (or the daemon) finishes or undoes it"
    )


def _recorded_policy(state: str, reason: str) -> dict[str, str]:
    """The saved policy state as it stands with no daemon: a recovery it was in when it stopped is not going on."""
    if state in ("recovering", "verifying"):
        return {
            "state": "interrupted",
            "reason": f"rollbackd stopped while {state} ({reason}); its next start closes the incident",
        }
    return {"state": state, "reason": reason}


def wal_line(wal: dict[str, Any]) -> str:
    """'80.0 MiB (5.0× the database); read transaction open in pid 1234 (python3)': the long reader by name."""
    size, database = float(wal.get("size_bytes") or 0), float(wal.get("database_bytes") or 0)
    line = human_size(size) + (f" ({size / database:.1f}× the database)" if database else "")
    readers = [reader for reader in wal.get("readers") or () if isinstance(reader, dict)]
    if readers:
        named = ", ".join(f"pid {reader.get('pid')} ({reader.get('name')})" for reader in readers)
        line += f"; read transaction open in {named} (a long one keeps checkpoints from shrinking the WAL)"
    return line


def render(status: dict[str, Any], now: float, *, utc: bool = False) -> str:
    """The status for a person; moments in local time with the zone named (``utc``: in UTC)."""
    lines = []
    daemon = status.get("daemon")
    if daemon:
        up = humanize_age(now - float(daemon.get("started_at") or now))
        mode = ", DRY RUN" if daemon.get("dry_run") else ""
        lines.append(f"rollbackd {daemon.get('version')} (pid {daemon.get('pid')}, up {up}{mode})")
        if daemon.get("metrics"):
            lines.append(f"metrics: {daemon['metrics']}")
        lines.extend(_self_load_lines(daemon.get("self_load")))
    else:
        lines.append("rollbackd: not running")
    for name, entry in status.get("services", {}).items():
        policy = entry.get("policy") or {}
        state = str(policy.get("state", "unknown")).upper()
        reason = f" ({policy['reason']})" if policy.get("reason") else ""
        lines.append("")
        lines.append(f"{name}: {state}{reason}")
        if entry.get("revision"):
            lines.append(f"  revision: {entry['revision']}")
        probes = entry.get("probes") or {}
        if probes:
            shown = ", ".join(
                f"{probe} {'ok' if result.get('ok') else 'FAIL ' + str(result.get('reason'))}"
                + (" (inconclusive)" if result.get("inconclusive") else "")
                for probe, result in probes.items()
            )
            lines.append(f"  probes: {shown}")
        for rule, plan in (policy.get("held_while_overloaded") or {}).items():
            lines.append(f"  overloaded: holding decisions: rule {rule} would {plan}")
        backup = entry.get("last_backup")
        if backup:
            lines.append(
                f"  last backup: {backup['name']} ({backup['reason']}, {humanize_age(now - float(backup['at']))} ago)"
            )
        if entry.get("last_backup_error"):
            lines.append(f"  last backup error: {entry['last_backup_error']}")
        drill = entry.get("last_drill")
        if drill:
            lines.append(f"  last drill: {drill['backup']}: {'ok' if drill['ok'] else 'FAILED'}")
        if entry.get("replication"):
            lines.append(f"  replication: {replication_line(entry['replication'], now)}")
        window = entry.get("deploy_window")
        if window:
            closes = clock_time(float(window["closes_at"]), utc=utc)
            lines.append(f"  deploy window: open until {closes} ({window['trigger']}, from {window['from_revision']})")
        pending = entry.get("pending_restore")
        if pending:
            lines.append(f"  {_pending_line(pending)}")
        wal = entry.get("wal")
        if wal:
            lines.append(f"  wal: {wal_line(wal)}")
        if entry.get("blocked_revisions"):
            lines.append(f"  blocked revisions: {', '.join(entry['blocked_revisions'])}")
        incidents = entry.get("incidents") or []
        if incidents:
            lines.append("  recent incidents:")
            for incident in incidents:
                when = table_time(float(incident["date"]), utc=utc)
                recover = incident.get("time_to_recover")
                took = f", {recover:.1f} s" if isinstance(recover, int | float) else ""
                lines.append(f"    {when} {incident['outcome']}{took}: {incident['reason']}")
    return "\n".join(lines)


def replication_line(replication: dict[str, Any], now: float) -> str:
    """ "running, replicated 2s ago (lag 0s), snapshot 40m ago" or "DOWN: unreachable (...)" for the status."""
    who = f"unit {replication['unit']}" if replication.get("unit") else str(replication.get("state", "unknown"))
    if replication.get("waiting_for"):
        who += f" while {replication['waiting_for']} changes the database"
    parts = [who]
    if replication.get("replicated_at"):
        parts.append(f"replicated {humanize_age(now - float(replication['replicated_at']))} ago")
    if "lag_seconds" in replication:
        parts.append(f"lag {float(replication['lag_seconds']):.0f}s")
    if replication.get("snapshot_at"):
        parts.append(f"snapshot {humanize_age(now - float(replication['snapshot_at']))} ago")
    line = ", ".join(parts)
    if replication.get("ok") is False:
        why = replication.get("probe_error") or replication.get("last_error")
        line = f"DOWN: {replication.get('reason')}{f' ({why})' if why else ''}; {line}"
    elif replication.get("last_error") and replication.get("state") != "running":
        line += f"; last error: {replication['last_error']}"
    return line


def _self_load_lines(self_load: dict[str, Any] | None) -> list[str]:
    """The daemon's own load: one line, and a second one saying so while it holds decisions."""
    if not self_load:
        return []
    stretched = self_load.get("stretched") or []
    lines = [
        f"self: loop lag {float(self_load.get('loop_lag_seconds') or 0):.3f}s, "
        f"cpu {float(self_load.get('cpu_ratio') or 0) * 100:.1f}% of a core, "
        f"worker queue {self_load.get('worker_queue_depth', 0)}"
        + (f", stretched: {', '.join(stretched)}" if stretched else "")
    ]
    if self_load.get("overloaded"):
        lines.append(str(self_load.get("holding") or "overloaded: holding decisions"))
    return lines
