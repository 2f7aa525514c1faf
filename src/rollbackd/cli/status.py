"""`rollbackd status`: what the running daemon sees and does, per service; the state DB when it is not running."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, state_db_unreadable
from rollbackd.config.model import Config, ConfigError, resolve_config_path, status_socket_of
from rollbackd.config.secrets import redact_data, redact_text, secrets_in
from rollbackd.exit_codes import ExitCode
from rollbackd.runtime.status_socket import StatusSocketError, query_status
from rollbackd.state.history import STATE_DB_ERRORS, History, describe_state_db_error
from rollbackd.state.state_dir import StateDir
from rollbackd.units import format_size, humanize_age


def register(commands: Subcommands) -> None:
    command = add_command(commands, "status", "show each service's state, probes, backups and incidents", run)
    command.add_argument("service", nargs="?", help="only this service")
    command.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> ExitCode:
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
        except STATE_DB_ERRORS as db_error:
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
        print(redact_text(render(status, time.time()), secrets))


def recorded_status(config: Config) -> dict[str, Any]:
    """Without a daemon: the persisted policy state, deploy window and incidents of each service."""
    services: dict[str, Any] = {}
    path = StateDir(config.daemon.state_dir).history_db
    history = History(path) if path.exists() else None
    try:
        if history is not None:
            history.upgrade()
        for service in config.service:
            entry: dict[str, Any] = {"policy": {"state": "unknown", "reason": "the daemon is not running"}}
            if history is not None:
                state = history.load_state(service.name)
                if state is not None:
                    entry["policy"] = {"state": state.state, "reason": state.reason}
                entry["blocked_revisions"] = sorted(history.blocked_revisions(service.name))
                entry["incidents"] = [row.as_dict() for row in history.history_rows(service.name, limit=5)]
            services[service.name] = entry
    finally:
        if history is not None:
            history.close()
    return {"daemon": None, "services": services}


def wal_line(wal: dict[str, Any]) -> str:
    """'80MiB (5.0x the database); read transaction open in pid 1234 (python3)': the long reader by name."""
    size, database = float(wal.get("size_bytes") or 0), float(wal.get("database_bytes") or 0)
    line = format_size(int(size)) + (f" ({size / database:.1f}× the database)" if database else "")
    readers = [reader for reader in wal.get("readers") or () if isinstance(reader, dict)]
    if readers:
        named = ", ".join(f"pid {reader.get('pid')} ({reader.get('name')})" for reader in readers)
        line += f"; read transaction open in {named} (a long one keeps checkpoints from shrinking the WAL)"
    return line


def render(status: dict[str, Any], now: float) -> str:
    lines = []
    daemon = status.get("daemon")
    if daemon:
        up = humanize_age(now - float(daemon.get("started_at") or now))
        mode = ", DRY RUN" if daemon.get("dry_run") else ""
        lines.append(f"rollbackd {daemon.get('version')} (pid {daemon.get('pid')}, up {up}{mode})")
        if daemon.get("metrics"):
            lines.append(f"metrics: {daemon['metrics']}")
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
                for probe, result in probes.items()
            )
            lines.append(f"  probes: {shown}")
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
        window = entry.get("deploy_window")
        if window:
            closes = time.strftime("%H:%M:%S", time.gmtime(float(window["closes_at"])))
            lines.append(
                f"  deploy window: open until {closes} UTC ({window['trigger']}, from {window['from_revision']})"
            )
        wal = entry.get("wal")
        if wal:
            lines.append(f"  wal: {wal_line(wal)}")
        if entry.get("blocked_revisions"):
            lines.append(f"  blocked revisions: {', '.join(entry['blocked_revisions'])}")
        incidents = entry.get("incidents") or []
        if incidents:
            lines.append("  recent incidents:")
            for incident in incidents:
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(incident["date"])))
                recover = incident.get("time_to_recover")
                took = f", {recover:.1f} s" if isinstance(recover, int | float) else ""
                lines.append(f"    {when} {incident['outcome']}{took}: {incident['reason']}")
    return "\n".join(lines)
