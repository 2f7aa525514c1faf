"""`rollbackd rehearse`: upgrade, downgrade and upgrade again each pending migration on a copy of the live data.

The runbook's "test migrations locally" before a deploy, on the real data instead of a dev database. The live
database is only read (the online backup API); exit 0 when every revision is reversible and loses no data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:
    from rollbackd.config.model import Config, ServiceConfig


def register(commands: Subcommands) -> None:
    command = add_command(
        commands, "rehearse", "rehearse pending migrations (upgrade, downgrade, upgrade) on a copy of the data", run
    )
    command.add_argument("service", nargs="?", help="service name (optional when the config has one)")
    command.add_argument("--to", metavar="REV", help="rehearse up to this revision (default: the code's head)")
    command.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")


def run(args: argparse.Namespace) -> ExitCode:
    import asyncio

    from rollbackd.backup.snapshot import BackupError
    from rollbackd.deploy.plan import PlanError
    from rollbackd.deploy.rehearse import RehearsalRefused, rehearse
    from rollbackd.state.state_dir import StateDir
    from rollbackd.state.vault import Vault
    from rollbackd.target.database import DatabaseUnavailable

    config = load_cli_config(args)
    say = _printer(sys.stderr if args.json else sys.stdout)
    try:
        service = one_service(config, args.service)
        state = StateDir(config.daemon.state_dir)
        vault = Vault(state.vault(service.name))
        report = asyncio.run(rehearse(service, state_dir=state, vault=vault, to=args.to, say=say))
    except (KeyError, PlanError, RehearsalRefused) as error:
        return _fail(args, error, ExitCode.CONFIG)
    except (DatabaseUnavailable, BackupError) as error:
        return _fail(args, error, ExitCode.UNAVAILABLE)
    except OSError as error:
        return _fail(args, f"{error.filename or ''}: {error.strerror or error}", ExitCode.UNAVAILABLE)
    if args.json:
        print_json(report.to_json())
    else:
        print(report.summary())
    return ExitCode.OK if report.ok else ExitCode.FAILED


def one_service(config: Config, name: str | None) -> ServiceConfig:
    """The named service, or the only one. Raise KeyError naming the configured services."""
    if name:
        return config.get_service(name)
    if len(config.service) == 1:
        return config.service[0]
    raise KeyError(f"the config has several services; name one of: {', '.join(s.name for s in config.service)}")


def _fail(args: argparse.Namespace, error: object, code: ExitCode) -> ExitCode:
    message = error.args[0] if isinstance(error, KeyError) else str(error)
    if args.json:
        print_json({"ok": False, "error": message})
    print(f"rollbackd {args.command}: {message}", file=sys.stderr)
    return code


def _printer(stream: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    return say
