"""What every subcommand shares: loading the config the user named, printing JSON, the handler type."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from rollbackd.config.model import Config, ServiceConfig, load_config, resolve_config_path
from rollbackd.exit_codes import ExitCode
from rollbackd.state.ownership import refuse_root_in_foreign_state_dir

Handler = Callable[[argparse.Namespace], ExitCode]
Subcommands = Any  # argparse's _SubParsersAction is private; this is what add_subparsers() returns


def add_command(commands: Subcommands, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(handler=handler)
    return command


def load_cli_config(args: argparse.Namespace) -> Config:
    """Load the config named by --config / $ROLLBACKD_CONFIG / the default path. Raise ConfigError, and
    StateDirOwnedByOther when root runs a command against another user's state dir (before anything is opened)."""
    config = load_config(resolve_config_path(args.config, os.environ))
    refuse_root_in_foreign_state_dir(config.daemon.state_dir)
    return config


def select_services(config: Config, name: str | None) -> list[ServiceConfig]:
    """Return the named service, or all when ``name`` is None. Raise KeyError naming the configured ones."""
    return [config.get_service(name)] if name else list(config.service)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))
