"""`rollbackd check-config`: validate a config and print it resolved, before a daemon ever loads it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rollbackd.cli.common import Subcommands, add_command, cli_config_path
from rollbackd.exit_codes import ExitCode


def register(commands: Subcommands) -> None:
    command = add_command(
        commands, "check-config", "validate a config file and print it resolved (exit 0 valid, 2 invalid)", run
    )
    command.add_argument("path", nargs="?", help="config file to check (default: the --config file)")
    command.add_argument("--json", action="store_true", help="print the resolved config as JSON instead of TOML")
    command.add_argument("--quiet", "-q", action="store_true", help="print nothing when the config is valid")


def run(args: argparse.Namespace) -> ExitCode:
    from rollbackd.config import toml_dump
    from rollbackd.config.model import ConfigError, ConfigProblem, config_warnings, dump_config, load_config
    from rollbackd.config.preflight import preflight_problems, preflight_warnings
    from rollbackd.config.secrets import exposed_secrets_warning, redact_data, redact_text, secrets_in
    from rollbackd.config.toml_locations import key_lines, line_in
    from rollbackd.replication.litestream import litestream_warnings

    path = Path(args.path) if args.path else cli_config_path(args)
    config = load_config(path)
    problems = preflight_problems(config)
    if problems:
        lines = key_lines(path.read_text(encoding="utf-8"))
        raise ConfigError(path, [ConfigProblem(p.key, p.message, line_in(lines, p.key)) for p in problems])
    secrets = secrets_in(config)
    if not args.quiet:
        data = redact_data(dump_config(config), secrets)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(toml_dump.dumps(data), end="")
    exposed = exposed_secrets_warning(path, config)
    for service in config.service:
        for warning in litestream_warnings(service):
            print(f"warning: {service.name}: {redact_text(warning, secrets)}", file=sys.stderr)
    for warning in [*config_warnings(config), *preflight_warnings(config), *([exposed] if exposed else [])]:
        print(f"warning: {redact_text(warning, secrets)}", file=sys.stderr)
    print(f"{path}: valid ({len(config.service)} service(s))", file=sys.stderr)
    return ExitCode.OK
