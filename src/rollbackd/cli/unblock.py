"""`rollbackd unblock`: allow a revision blocked after data loss to run again, once its bug is fixed."""

from __future__ import annotations

import argparse
import sys

from rollbackd.cli.common import Subcommands, add_command, load_cli_config
from rollbackd.exit_codes import ExitCode


def register(commands: Subcommands) -> None:
    command = add_command(
        commands, "unblock", "allow a revision that was blocked after data loss to be migrated again", run
    )
    command.add_argument("service", help="the service")
    command.add_argument("revision", help="the blocked revision id")


def run(args: argparse.Namespace) -> ExitCode:
    from rollbackd.state.history import History
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    config.get_service(args.service)
    state_dir = StateDir(config.daemon.state_dir)
    history = History(state_dir.history_db)
    try:
        history.upgrade()
        if not history.unblock_revision(args.service, args.revision):
            blocked = ", ".join(sorted(history.blocked_revisions(args.service))) or "none"
            print(f"{args.revision} is not blocked for {args.service} (blocked: {blocked})", file=sys.stderr)
            return ExitCode.FAILED
    finally:
        history.close()
    quarantine = state_dir.service_dir(args.service) / "quarantine"
    print(f"{args.service}: {args.revision} unblocked; a script moved aside earlier stays in {quarantine}")
    return ExitCode.OK
