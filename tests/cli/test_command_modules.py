"""``main()`` builds the parser of the one command it is given (cli/__init__.py): the table that names each
command's module must match what the modules register, and the narrowed parser must read a command line exactly
as the full one does."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rollbackd.cli import COMMAND_MODULES, MODULES, build_parser, command_modules


def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_registered_by_the_module_the_table_names() -> None:
    assert set(commands_of(build_parser())) == set(COMMAND_MODULES)
    assert set(COMMAND_MODULES.values()) == set(MODULES)
    for module in MODULES:
        named = {command for command, owner in COMMAND_MODULES.items() if owner == module}
        assert set(commands_of(build_parser((module,)))) == named, module


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_a_commands_own_parser_prints_the_same_help_as_the_full_one(command: str) -> None:
    narrowed = build_parser(command_modules([command, "--help"]))
    assert len(commands_of(narrowed)) < len(COMMAND_MODULES)
    assert commands_of(narrowed)[command].format_help() == commands_of(build_parser())[command].format_help()


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["run"], "run"),
        (["--config", "x.toml", "probe", "vbrpg", "--json"], "run"),
        (["--conf", "status", "history"], "history"),  # --config (abbreviated) takes "status" as its value
        (["backups", "list", "--help"], "backup"),
        (["--utc", "status", "--config", "x.toml"], "status"),
    ],
)
def test_the_command_is_the_word_the_full_parser_reads_as_command(argv: list[str], module: str) -> None:
    assert command_modules(argv) == (module,)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["-h", "run"], ["--version", "status"], ["no-such-command"], ["--config"], ["--bogus=1"]],
)
def test_help_the_version_and_usage_errors_get_every_command(argv: list[str]) -> None:
    assert command_modules(argv) == MODULES


def test_help_given_before_a_command_still_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "--help", "run"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("positional arguments:")[1].split("options:")[0]
    assert {line.split()[0] for line in listed.splitlines() if line.startswith("    ") and line[4] != " "} == set(
        COMMAND_MODULES
    ), listed
