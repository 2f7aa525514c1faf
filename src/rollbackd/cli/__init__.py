"""The `rollbackd` command line: one subcommand per thing the runbook asks a person to do.

Each subcommand lives in its own module with a ``register(commands)`` function. Library code raises typed
exceptions; only the CLI turns them into messages and exit codes.

Building the parser imports no daemon, no pydantic, SQLAlchemy, httpx or prometheus_client: each subcommand
module imports what its handler needs when the handler runs, so ``--help`` and a usage error answer at once
(tests/cli/test_import_budget.py keeps it so).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from rollbackd import __version__
from rollbackd.cli import (
    backup,
    check_config,
    history,
    migrate,
    rehearse,
    resume,
    rollback,
    run,
    status,
    unblock,
    verify,
)
from rollbackd.cli.common import UTC_HELP, Handler, Subcommands
from rollbackd.config.config_path import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH
from rollbackd.exit_codes import ExitCode
from rollbackd.state.ownership import StateDirOwnedByOther

DESCRIPTION = """\
rollbackd watches a SQLite + Alembic web service and runs its rollback runbook by itself:
it probes health, latency, locks, integrity, schema and rows; keeps verified backups; and when a
threshold is crossed it restarts, downgrades or restores, verifies, and records what it did."""

EPILOG = f"""\
The config file is --config (before or after COMMAND), else ${CONFIG_ENV_VAR}, else {DEFAULT_CONFIG_PATH}.
Exit codes: 0 ok, 1 failed, 2 bad config or usage (nothing touched), 4 unavailable (database, daemon, ...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollbackd", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rollbackd {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR}, then {DEFAULT_CONFIG_PATH})"
    )
    parser.add_argument("--utc", action="store_true", help=UTC_HELP)
    commands: Subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.register(commands)
    status.register(commands)
    check_config.register(commands)
    backup.register(commands)
    rollback.register(commands)
    history.register(commands)
    verify.register(commands)
    resume.register(commands)
    unblock.register(commands)
    rehearse.register(commands)
    migrate.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    from rollbackd.config.model import ConfigError, UnknownService  # loaded by every handler anyway

    try:
        return int(handler(args))
    except ConfigError as error:
        print(error.render(), file=sys.stderr)
        return ExitCode.CONFIG
    except UnknownService as error:
        print(f"rollbackd {args.command}: {error}", file=sys.stderr)
        return ExitCode.CONFIG
    except StateDirOwnedByOther as error:
        again = shlex.join(["sudo", "-u", error.owner, "rollbackd", *(sys.argv[1:] if argv is None else argv)])
        print(f"rollbackd {args.command}: {error}; run it as that user: {again}", file=sys.stderr)
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
