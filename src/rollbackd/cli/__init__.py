"""The `rollbackd` command line: one subcommand per thing the runbook asks a person to do.

Each subcommand lives in its own module with a ``register(commands)`` function. Library code raises typed
exceptions; only the CLI turns them into messages and exit codes.

Building the parser imports no daemon, no pydantic, SQLAlchemy, httpx or prometheus_client: each subcommand
module imports what its handler needs when the handler runs, so ``--help`` and a usage error answer at once
(tests/cli/test_import_budget.py keeps it so). ``main()`` imports only the module of the command it is given:
``rollbackd run`` is the daemon, and the other ten modules would stay in its memory for its whole life (0.4 MiB).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from rollbackd import __version__
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


# The subcommand modules of rollbackd.cli in --help's order, and the module that registers each command
# (tests/cli/test_command_modules.py checks the table against the modules' register()).
MODULES = (
    "run",
    "status",
    "check_config",
    "backup",
    "rollback",
    "history",
    "verify",
    "resume",
    "unblock",
    "rehearse",
    "migrate",
)
COMMAND_MODULES = {
    "run": "run",
    "probe": "run",
    "status": "status",
    "check-config": "check_config",
    "backup": "backup",
    "backups": "backup",
    "restore": "backup",
    "rollback": "rollback",
    "history": "history",
    "verify": "verify",
    "resume": "resume",
    "unblock": "unblock",
    "rehearse": "rehearse",
    "migrate": "migrate",
}


def build_parser(modules: Sequence[str] = MODULES) -> argparse.ArgumentParser:
    """The parser with the commands of ``modules`` (default: every command, as --help lists them)."""
    parser = argparse.ArgumentParser(
        prog="rollbackd", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rollbackd {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help=f"config file (default: ${CONFIG_ENV_VAR}, then {DEFAULT_CONFIG_PATH})"
    )
    parser.add_argument("--utc", action="store_true", help=UTC_HELP)
    commands: Subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in modules:
        # __import__, not importlib.import_module: the latter's imports are missing from `python -X importtime`.
        __import__(f"rollbackd.cli.{module}", fromlist=["register"]).register(commands)
    return parser


class _NotOneCommand(Exception):
    """The command line is help, the version, or a usage error: the full parser answers it."""


class _CommandFinder(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotOneCommand(message)


def command_modules(argv: Sequence[str] | None) -> Sequence[str]:
    """The subcommand modules the parser needs for ``argv``: the one module of the command it names, or all of
    them for top-level help, --version and anything the full parser must reject. The finder has the top level's
    options, so it reads the same word as COMMAND as the full parser does."""
    finder = _CommandFinder(prog="rollbackd", add_help=False)
    finder.add_argument("-h", "--help", action="store_true")
    finder.add_argument("--version", action="store_true")
    finder.add_argument("--config")
    finder.add_argument("--utc", action="store_true")
    commands = finder.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        commands.add_parser(name, add_help=False)
    try:
        found, _ = finder.parse_known_args(argv)
    except _NotOneCommand:
        return MODULES
    if found.help or found.version:
        return MODULES
    return (COMMAND_MODULES[found.command],)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(command_modules(argv)).parse_args(argv)
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
