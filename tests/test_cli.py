"""The rollbackd command as a user runs it: a real subprocess, real files, real exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["run", "status", "check-config", "backup", "backups", "restore", "rollback", "history", "verify"]


def rollbackd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_help_lists_every_subcommand() -> None:
    result = rollbackd("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"    {name}" in result.stdout, name


def test_version() -> None:
    from rollbackd import __version__

    result = rollbackd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rollbackd {__version__}"


def test_check_config_accepts_the_demo_config() -> None:
    result = rollbackd("check-config", str(REPO / "config/demo.toml"))
    assert result.returncode == 0, result.stderr
    assert 'name = "vbrpg"' in result.stdout
    assert "valid (1 service(s))" in result.stderr


def test_check_config_unknown_key_exits_2_and_names_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    text = (
        (REPO / "config/demo.toml")
        .read_text()
        .replace("[service.backups]\n", "[service.backups]\nkeep_forever = true\n")
    )
    config.write_text(text)
    result = rollbackd("check-config", str(config))
    assert result.returncode == 2
    assert "service[0].backups.keep_forever: unknown key" in result.stderr
    assert result.stdout == ""


def test_status_with_an_invalid_config_and_no_daemon_is_the_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n[[service]]\nname = "vbrpg"\nworkdir = "."\n'
        'database = "vbrpg.db"\nbase_url = "http://127.0.0.1:9"\nhealth_pth = "/health"\n'
    )
    result = rollbackd("--config", str(config), "status")
    assert result.returncode == 2
    assert "service[0].health_pth: unknown key" in result.stderr and result.stdout == ""


def test_rollback_code_without_restore_is_refused_before_anything_is_touched() -> None:
    result = rollbackd("--config", str(REPO / "config/demo.toml"), "rollback", "vbrpg", "--steps", "1", "--code")
    assert result.returncode == 2
    assert "--code needs --restore" in result.stderr and result.stdout == ""


def test_config_comes_from_environment_when_no_option(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "ROLLBACKD_CONFIG": str(tmp_path / "missing.toml")}
    result = rollbackd("check-config", env=env)
    assert result.returncode == 2
    assert str(tmp_path / "missing.toml") in result.stderr


def test_usage_error_exits_2() -> None:
    result = rollbackd("no-such-command")
    assert result.returncode == 2


def test_an_unknown_service_is_a_one_line_usage_error() -> None:
    for command in (
        ["status", "nosuch"],
        ["history", "nosuch"],
        ["rollback", "nosuch", "--dry-run"],
        ["resume", "nosuch"],
    ):
        result = rollbackd("--config", str(REPO / "config/demo.toml"), *command)
        assert result.returncode == 2, command
        assert result.stderr.strip() == (
            f"rollbackd {command[0]}: no service named 'nosuch' in the config (configured: vbrpg)"
        ), result.stderr
