"""`rollbackd resume`: lift HOLD after a person has looked (the runbook's on-call engineer signing off)."""

from __future__ import annotations

import argparse
import sys

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, state_db_unreadable
from rollbackd.exit_codes import ExitCode


def register(commands: Subcommands) -> None:
    command = add_command(commands, "resume", "lift HOLD so the daemon may act on a service again", run)
    command.add_argument("service", help="the service in HOLD")


def run(args: argparse.Namespace) -> ExitCode:
    from rollbackd.state.history import STATE_DB_ERRORS, History, describe_state_db_error
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    config.get_service(args.service)
    path = StateDir(config.daemon.state_dir).history_db
    history = History(path)
    try:
        history.upgrade()
        state = history.load_state(args.service)
        if not history.request_resume(args.service):
            current = state.state if state else "ok"
            print(f"{args.service} is not in HOLD (state: {current}); nothing to resume", file=sys.stderr)
            return ExitCode.FAILED
    except STATE_DB_ERRORS as error:
        return state_db_unreadable("resume", path, describe_state_db_error(error))
    finally:
        history.close()
    reason = state.reason if state else ""
    print(f"{args.service}: resume requested; the daemon lifts HOLD at its next check (was: {reason})")
    return ExitCode.OK
