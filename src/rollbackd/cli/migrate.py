"""`rollbackd migrate`: what a deploy script runs instead of `alembic upgrade head`.

Pre-deploy backup, upgrade, restart, verification window, and the runbook's way back on any failure (downgrade,
else restore), each step printed as it happens. Exit 0 only when the service runs the new revision and verified.
Ctrl-C or SIGTERM once the deploy has begun rolls it back rather than leaving it half done.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, positive_seconds, print_json
from rollbackd.cli.rehearse import one_service
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:
    from rollbackd.config.model import ServiceConfig
    from rollbackd.deploy.migrate import MigrateOptions, MigrateReport, Say
    from rollbackd.replication.pause import ReplicationPause
    from rollbackd.state.history import History
    from rollbackd.state.state_dir import StateDir

# deploy.migrate.LOCK_WAIT, repeated so the parser needs no deploy code (tests/cli/test_import_budget.py checks it)
LOCK_WAIT = 120.0

ERROR_CODES = {"usage": ExitCode.CONFIG, "unavailable": ExitCode.UNAVAILABLE, "busy": ExitCode.UNAVAILABLE}


def register(commands: Subcommands) -> None:
    command = add_command(
        commands, "migrate", "deploy pending migrations: backup, upgrade, restart, verify, roll back on failure", run
    )
    command.add_argument("service", nargs="?", help="service name (optional when the config has one)")
    command.add_argument("--to", metavar="REV", help="upgrade to this revision (default: the code's head)")
    command.add_argument("--rehearse", action="store_true", help="rehearse on a copy first; abort if it fails")
    command.add_argument("--force", action="store_true", help="deploy even a revision blocked after data loss")
    command.add_argument("--no-restart", action="store_true", help="do not restart the service after the upgrade")
    command.add_argument(
        "--window",
        type=positive_seconds,
        metavar="DURATION",
        help="how long to watch the service after the upgrade, e.g. 2m or 120 (default: [service.policy] "
        "verify_timeout)",
    )
    command.add_argument(
        "--lock-wait",
        type=positive_seconds,
        default=LOCK_WAIT,
        metavar="DURATION",
        help=f"how long to wait while the daemon acts on the service, e.g. 30s (default {LOCK_WAIT:.0f}s)",
    )
    command.add_argument("--json", action="store_true", help="print the report as JSON (steps go to stderr)")


def run(args: argparse.Namespace) -> ExitCode:
    import asyncio

    from rollbackd.deploy.migrate import MigrateError, MigrateOptions
    from rollbackd.runtime.replication_hold import pause_for_swap
    from rollbackd.state.history import History
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    stream = sys.stderr if args.json else sys.stdout
    try:
        service = one_service(config, args.service)
    except KeyError as error:
        return _fail(args, str(error.args[0]), ExitCode.CONFIG)
    options = MigrateOptions(
        target=args.to,
        rehearse=args.rehearse,
        force=args.force,
        restart=False if args.no_restart else None,
        window=args.window,
        lock_wait=args.lock_wait,
    )
    state = StateDir(config.daemon.state_dir)
    try:
        state.ensure()
        history = History(state.history_db)
    except OSError as error:
        return _fail(args, f"cannot use the state dir {state.root}: {error.strerror or error}", ExitCode.UNAVAILABLE)
    try:
        history.upgrade()
        replication = pause_for_swap(config.daemon.socket_path, service)
        report = asyncio.run(
            _migrate(service, state, history, options, replication, lambda line: print(line, file=stream))
        )
    except MigrateError as error:
        return _fail(args, str(error), ERROR_CODES[error.kind])
    except asyncio.CancelledError:
        return _fail(args, "interrupted before the deploy began; nothing was touched", ExitCode.INTERRUPTED)
    finally:
        history.close()
    if args.json:
        print_json(report.to_json())
    else:
        print(f"{service.name}: {report.outcome.upper().replace('_', ' ')}: {report.message}")
    return ExitCode.OK if report.ok else ExitCode.FAILED


async def _migrate(
    service: ServiceConfig,
    state: StateDir,
    history: History,
    options: MigrateOptions,
    replication: ReplicationPause,
    say: Say,
) -> MigrateReport:
    import asyncio

    from rollbackd.deploy.migrate import Migration
    from rollbackd.host.http_client import HttpClient

    async with HttpClient() as http:
        migration = Migration(service, state_dir=state, history=history, http=http, replication=replication, say=say)
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, migration.interrupt, number.name)
        try:
            return await migration.run(options)
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)


def _fail(args: argparse.Namespace, message: str, code: ExitCode) -> ExitCode:
    if args.json:
        print_json({"ok": False, "error": message})
    print(f"rollbackd migrate: {message}", file=sys.stderr)
    return code
