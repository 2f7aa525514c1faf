"""``main()`` builds the parser of the one command it is given (cli/__init__.py): the table that names each
command's module must match what the modules register, and the narrowed parser must read a command line exactly
as the full one does. And what a command imports when it runs, pinned where it was cut (issue 13)."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from rollbackd.cli import COMMAND_MODULES, MODULES, build_parser, command_modules
from rollbackd.runtime.status_socket import StatusServer
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir

# `status` and `check-config` talk to the daemon, and run Litestream's checks, with blocking calls: asyncio (and
# ssl, which it loads) was ~50 ms of each command's 0.4 s, and the status socket's server side is the daemon's.
NOT_LOADED_BY_STATUS_OR_CHECK_CONFIG = ("asyncio", "ssl", "rollbackd.runtime.status_socket", "rollbackd.runtime.daemon")


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


def modules_loaded(argv: list[str], exit_code: int) -> tuple[set[str], str]:
    """The modules a real ``python -m rollbackd ARGV`` imports (its ``-X importtime`` lines), and its stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rollbackd", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exit_code, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines}, result.stdout


def not_allowed(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if any(name == pinned or name.startswith(pinned + ".") for pinned in NOT_LOADED_BY_STATUS_OR_CHECK_CONFIG)
    )


@pytest.fixture
def replicated_config(tmp_path: Path) -> Path:
    """A config of one service on a real WAL database, replicated to a file replica (check-config then runs its
    Litestream checks), with its state dir in ``tmp_path``."""
    database = tmp_path / "vbrpg.db"
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    config = tmp_path / "rollbackd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nmetrics_listen = ""\n\n'
        f'[[service]]\nname = "vbrpg"\nworkdir = "{tmp_path}"\ndatabase = "{database}"\n'
        'base_url = "http://127.0.0.1:9"\n\n[service.replication]\n\n'
        f'[[service.replication.replicas]]\ntype = "file"\npath = "{tmp_path / "replica"}"\n'
    )
    return config


@contextmanager
def daemon_status_socket(socket_path: Path) -> Iterator[None]:
    """The daemon's own StatusServer on ``socket_path``, on an event loop in a thread, answering one OK service."""
    status = {
        "daemon": {"version": "test", "pid": 1, "started_at": 0},
        "services": {"vbrpg": {"policy": {"state": "ok"}}},
    }
    loop = asyncio.new_event_loop()
    server = StatusServer(socket_path, lambda: asyncio.sleep(0, status))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_status_with_no_daemon_reads_the_state_db_without_asyncio(replicated_config: Path) -> None:
    history = History(StateDir(replicated_config.parent / "state").history_db)
    history.upgrade()
    history.close()
    modules, shown = modules_loaded(["--config", str(replicated_config), "status"], 4)
    assert "rollbackd.state.history" in modules and "vbrpg: UNKNOWN" in shown  # the probe sees the no-daemon path
    assert not not_allowed(modules), not_allowed(modules)


def test_status_from_a_running_daemon_loads_no_asyncio(replicated_config: Path) -> None:
    with daemon_status_socket(replicated_config.parent / "state" / "rollbackd.sock"):
        modules, shown = modules_loaded(["--config", str(replicated_config), "status"], 0)
    assert "rollbackd test (pid 1" in shown and "vbrpg: OK" in shown
    assert not not_allowed(modules), not_allowed(modules)


def test_check_config_runs_the_litestream_checks_without_asyncio(replicated_config: Path) -> None:
    modules, _ = modules_loaded(["check-config", str(replicated_config)], 0)
    assert "rollbackd.replication.litestream" in modules and "rollbackd.host.commands" in modules
    assert not not_allowed(modules), not_allowed(modules)
