"""What every subcommand shares: loading the config the user named, printing JSON, the handler type.

Light on purpose: every subcommand module imports this to build its parser, so it must not import pydantic (the
config models load when a handler asks for the config).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbackd.cli.times import with_iso_times
from rollbackd.config.config_path import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    missing_config_message,
    resolve_config_path,
)
from rollbackd.exit_codes import ExitCode
from rollbackd.state.ownership import refuse_root_in_foreign_state_dir
from rollbackd.units import parse_duration

if TYPE_CHECKING:
    from rollbackd.config.model import Config, ServiceConfig

Handler = Callable[[argparse.Namespace], ExitCode]
Subcommands = Any  # argparse's _SubParsersAction is private; this is what add_subparsers() returns


UTC_HELP = "print times in UTC (default: local time, with its zone named); JSON is always UTC"


def global_options() -> argparse.ArgumentParser:
    """The options every subcommand also accepts after its name (``rollbackd status --config X``).

    Their default is SUPPRESS so a subcommand that was not given one keeps the value given before its name.
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"config file (default: ${CONFIG_ENV_VAR}, then {DEFAULT_CONFIG_PATH}); also accepted before COMMAND",
    )
    options.add_argument(
        "--utc", action="store_true", default=argparse.SUPPRESS, help=UTC_HELP + "; also accepted before COMMAND"
    )
    return options


GLOBAL_OPTIONS = global_options()


def add_command(commands: Subcommands, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, parents=[GLOBAL_OPTIONS]
    )
    command.set_defaults(handler=handler)
    return command


def cli_config_path(args: argparse.Namespace) -> Path:
    """The config path --config / $ROLLBACKD_CONFIG / the default names. Raise ConfigError if no file is there."""
    path = resolve_config_path(args.config, os.environ)
    if not path.exists():
        from rollbackd.config.model import ConfigError, ConfigProblem

        raise ConfigError(path, [ConfigProblem("", missing_config_message(args.config, os.environ))])
    return path


def load_cli_config(args: argparse.Namespace) -> Config:
    """Load the config named by --config / $ROLLBACKD_CONFIG / the default path. Raise ConfigError, and
    StateDirOwnedByOther when root runs a command against another user's state dir (before anything is opened)."""
    from rollbackd.config.model import load_config

    config = load_config(cli_config_path(args))
    refuse_root_in_foreign_state_dir(config.daemon.state_dir)
    return config


def select_services(config: Config, name: str | None) -> list[ServiceConfig]:
    """Return the named service, or all when ``name`` is None. Raise KeyError naming the configured ones."""
    return [config.get_service(name)] if name else list(config.service)


def state_db_unreadable(command: str, path: Path, problem: str) -> ExitCode:
    """One line for a state DB that cannot be read (corrupt, truncated, another user's), and exit 4."""
    print(f"rollbackd {command}: cannot read the state DB {path}: {problem}", file=sys.stderr)
    return ExitCode.UNAVAILABLE


def seconds(text: str) -> float:
    """An argparse ``type=`` for a duration flag: "2m", "1h30m", "500ms" as the config writes them, or plain
    seconds ("120", "0.5"). Raise ArgumentTypeError naming the accepted forms."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{error}, or plain seconds") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration of 0 or more, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """As ``seconds``, for a duration that must be more than zero (a window, a wait that cannot be skipped)."""
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration of more than 0, got {text!r}")
    return value


def print_json(data: Any) -> None:
    """Print for scripts; every moment as ISO 8601 with its offset plus ``<key>_epoch`` (cli/times.py)."""
    print(json.dumps(with_iso_times(data), indent=2, sort_keys=False, default=str))
